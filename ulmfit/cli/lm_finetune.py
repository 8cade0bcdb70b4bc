"""`ulmfit lm-finetune`: Fine-tune a pretrained language model on a domain corpus."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed


def register(app: typer.Typer) -> None:
    @app.command("lm-finetune", help="Fine-tune a pretrained language model on a domain corpus.")
    def _cmd() -> None:
        not_landed("lm-finetune", 4)
