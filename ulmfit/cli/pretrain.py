"""`ulmfit pretrain`: Pretrain an AWD-LSTM language model from scratch on a corpus."""

from __future__ import annotations

import typer

from ulmfit.cli._common import not_landed


def register(app: typer.Typer) -> None:
    @app.command("pretrain", help="Pretrain an AWD-LSTM language model from scratch on a corpus.")
    def _cmd() -> None:
        not_landed("pretrain", 4)
