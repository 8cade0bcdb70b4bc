"""`ulmfit quickstart`: The whole pipeline on the embedded default corpus (imdb-sample)."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed


def register(app: typer.Typer) -> None:
    @app.command("quickstart", help="The whole pipeline on the embedded default corpus (imdb-sample).")
    def _cmd() -> None:
        not_landed("quickstart", 5)
