"""`ulmfit evaluate`: Evaluate one or more classifiers (and their ensemble) on a labeled split."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed


def register(app: typer.Typer) -> None:
    @app.command("evaluate", help="Evaluate one or more classifiers (and their ensemble) on a labeled split.")
    def _cmd() -> None:
        not_landed("evaluate", 5)
