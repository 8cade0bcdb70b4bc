"""`ulmfit predict`: Predict labels and probabilities for new texts."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed


def register(app: typer.Typer) -> None:
    @app.command("predict", help="Predict labels and probabilities for new texts.")
    def _cmd() -> None:
        not_landed("predict", 5)
