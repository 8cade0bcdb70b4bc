"""Command-line interface: one module per command, each a thin parser around a library function."""
