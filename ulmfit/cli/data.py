"""`ulmfit data get NAME` and `ulmfit data info SRC`."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed

app = typer.Typer(help="Download registered datasets and inspect corpora.", no_args_is_help=True)


@app.command("get")
def get(name: str = typer.Argument(..., help="Registered dataset name (imdb, imdb-sample).")) -> None:
    """Download a registered dataset into the data cache (ULMFIT_DATA, default ./data)."""
    not_landed("data get", 2)


@app.command("info")
def info(src: str = typer.Argument(..., help="A dataset name or a path.")) -> None:
    """Print documents, labels, splits and length statistics of a corpus."""
    not_landed("data info", 2)
