"""`ulmfit evaluate`: Evaluate one or more classifiers (and their ensemble) on a labeled split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit.classify.predict import MAX_CHARS
from ulmfit.cli._common import Device, ExpectTask, InferBs, LabelCol, MaxChars, NgramWeight, TextCol

Split = Annotated[str, typer.Option("--split", help="Which split of SRC to evaluate on: test or valid.")]
ReportOut = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="Write the report as JSON here and a PNG next to it (<name>.confusion.png; <name>.per-label.png "
    "for multi-label models, <name>.scatter.png for regression). Checked before the "
    "models are loaded; existing files are replaced only if they are an earlier report and its plot, unless "
    "--overwrite.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace --out (and its PNG) even when "
                                         "they are files evaluate did not write (they are lost).")]


def register(app: typer.Typer) -> None:
    @app.command("evaluate", help=(
        "Evaluate one or more classifiers (and their ensemble) on a labeled split.\n\n"
        "Reports, by the models' task shape: accuracy, error rate, macro-F1, per-class precision/recall and the "
        "confusion matrix (single-label); micro/macro-F1, per-label precision/recall/F1 with each label's tuned "
        "threshold, subset accuracy, Hamming loss and mean average precision (multi-label); Pearson, Spearman, "
        "MAE, RMSE, R\u00b2 and, with bins, the binned accuracy (regression). Given a "
        "forward and a backward model, each is reported and so is their ensemble (the mean of their "
        "probabilities or values). Labels in the data that the models never saw are an error.\n\n"
        f"A document longer than --max-chars ({MAX_CHARS:,} by default) is scored on its first --max-chars "
        "characters, with a warning."))
    def evaluate_cmd(
        args: list[str] = typer.Argument(..., metavar="MODEL [MODEL ...] SRC",
                                         help="One or more classifier directories, then the labelled corpus."),
        split: Split = "test",
        out: ReportOut = None,
        text_col: TextCol = None,
        label_col: LabelCol = None,
        max_chars: MaxChars = MAX_CHARS,
        overwrite: Overwrite = False,
        ngram_weight: NgramWeight = None,
        task: ExpectTask = None,
        bs: InferBs = None,
        device: Device = None,
    ) -> None:
        from ulmfit.classify.evaluation import evaluate, format_report
        from ulmfit.errors import UlmfitError

        if len(args) < 2:
            raise UlmfitError("evaluate needs at least one MODEL and a SRC",
                              hint="e.g. ulmfit evaluate models/clas imdb --split test")
        report = evaluate(args[:-1], args[-1], split=split, text_col=text_col, label_col=label_col, out=out,
                          bs=bs, device=device, max_chars=max_chars, overwrite=overwrite,
                          ngram_weight=ngram_weight, task=task)
        typer.echo(format_report(report))
        for f in report.files:
            typer.echo(f"wrote {f}")
