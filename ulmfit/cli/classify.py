"""`ulmfit classify`: Train a text classifier on a fine-tuned LM encoder with gradual unfreezing."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed


def register(app: typer.Typer) -> None:
    @app.command("classify", help="Train a text classifier on a fine-tuned LM encoder with gradual unfreezing.")
    def _cmd() -> None:
        not_landed("classify", 5)
