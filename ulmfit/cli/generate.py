"""`ulmfit generate`: Generate text from a prompt with a language model."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed


def register(app: typer.Typer) -> None:
    @app.command("generate", help="Generate text from a prompt with a language model.")
    def _cmd() -> None:
        not_landed("generate", 4)
