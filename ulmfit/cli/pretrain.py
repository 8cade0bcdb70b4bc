"""`ulmfit pretrain`: Pretrain an AWD-LSTM language model from scratch on a corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit.cli._common import Bs, Config, Device, Epochs, LabelCol, Out, Overwrite, Preset, Seed, Set, TextCol

Src = Annotated[str, typer.Argument(help="Corpus: a registered dataset name or a path (folder, .tar.gz, .csv, "
                                    ".tsv, .jsonl, .parquet). Labels are ignored; the test split is never read.")]
Backwards = Annotated[bool, typer.Option(
    "--backwards", help="Train on the reversed token stream (a backward LM, for a backward classifier).")]
MaxDocs = Annotated[Optional[int], typer.Option(
    "--max-docs", help="Use at most N documents of each split (train, unsup, valid): quick runs.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run from OUT/checkpoint (same data and options).")]


def lm_options(preset: str, config: Path | None, set_: list[str] | None, epochs: int | None, bs: int | None):
    """(config, explicitly set keys) from the shared options; validated before any data is read."""
    from ulmfit.lm.config import explicit_keys, resolve_config

    overrides = {"epochs": epochs, "bs": bs}
    cfg = resolve_config(preset, config_file=config, sets=set_, overrides=overrides)
    return cfg, explicit_keys(config, set_, overrides)


def echo_result(result) -> None:
    """The last line of `pretrain` and `lm-finetune` on stdout: the best bundle and its validation metrics."""
    best = result.metrics[result.best_epoch - 1] if result.best_epoch else {}
    typer.echo(f"{result.best}\tvalid_loss {best.get('valid_loss', float('nan')):.4f}\t"
               f"accuracy {best.get('accuracy') or 0:.4f}\tperplexity {best.get('perplexity') or 0:.2f}")


HELP = (
    "Pretrain an AWD-LSTM language model from scratch on a corpus.\n\n"
    "Trains the tokenizer and vocabulary on the non-test splits, then the LM on train+unsup with valid for "
    "validation (one-cycle, AR/TAR, gradient clipping); the splits used, the resolved config and the schedule "
    "are printed first. Writes OUT/model-best and OUT/model-last (bundles) and a checkpoint every epoch for "
    "--resume."
)


def register(app: typer.Typer) -> None:
    @app.command("pretrain", help=HELP)
    def pretrain(
        src: Src,
        out: Out,
        preset: Preset = "small",
        config: Config = None,
        set_: Set = None,
        epochs: Epochs = None,
        bs: Bs = None,
        seed: Seed = 42,
        backwards: Backwards = False,
        text_col: TextCol = None,
        label_col: LabelCol = None,
        max_docs: MaxDocs = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
        device: Device = None,
    ) -> None:
        from ulmfit.lm.train import pretrain as run

        cfg, _ = lm_options(preset, config, set_, epochs, bs)
        result = run(src, out, cfg, preset=preset, seed=seed, backwards=backwards, device=device,
                     text_col=text_col, label_col=label_col, max_docs=max_docs, resume=resume,
                     overwrite=overwrite)
        echo_result(result)
