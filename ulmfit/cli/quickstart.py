"""`ulmfit quickstart`: The whole pipeline on the embedded default corpus (imdb-sample)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit.cli._common import Device, Preset, Seed

Pretrained = Annotated[Optional[str], typer.Option(
    "--pretrained", help="Fine-tune this LM instead of pretraining one: an LM bundle, a folder with fastai's "
    "WikiText-103 files, or wt103.")]
Fast = Annotated[bool, typer.Option("--fast", help="Smoke test: the tiny preset and short schedules (seconds; "
                                    "the numbers mean nothing).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder: quickstart writes lm/, classifier/ and "
                                   "report.json there, replacing those of an earlier quickstart; other files in it "
                                   "are left alone.")]
Src = Annotated[Optional[str], typer.Option("--src", hidden=True, help="Use this labelled source instead of "
                                            "imdb-sample (tests).")]


def register(app: typer.Typer) -> None:
    @app.command("quickstart", help=(
        "The whole pipeline on the embedded default corpus (imdb-sample).\n\n"
        "Pretrains (or, with --pretrained, fine-tunes) a language model on 1,000 IMDb reviews, trains a classifier "
        "on its encoder, evaluates it, generates two continuations of \"I liked this movie because\" and "
        "prints a summary. About 4 minutes on a 2-core CPU with native bf16 (longer in fp32) with the default small preset."))
    def quickstart_cmd(
        out: Out = Path("models/quickstart"),
        seed: Seed = 42,
        preset: Preset = "small",
        pretrained: Pretrained = None,
        fast: Fast = False,
        device: Device = None,
        src: Src = None,
    ) -> None:
        from ulmfit.quickstart import quickstart

        res = quickstart(out, seed=seed, preset=preset, pretrained=pretrained, fast=fast, src=src, device=device)
        typer.echo("\n" + res.table())
