"""`ulmfit suggest`: which unlabeled texts to label next (active learning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit.classify.predict import MAX_CHARS
from ulmfit.cli._common import Device, InferBs, MaxChars, TextCol

N = Annotated[int, typer.Option("--n", "-n", help="How many texts to suggest.")]
Candidates = Annotated[Optional[int], typer.Option(
    "--candidates", metavar="M", help="The picks are spread over the M highest-scoring texts (by --spread, on the "
    "encoder's pooled vectors), so that they are not near-duplicates of one another. Default: 5 x --n; "
    "--candidates equal to --n picks by score alone.")]
Spread = Annotated[Optional[str], typer.Option(
    "--spread", help="How the picks are spread over the --candidates: kcenter (greedy k-center: always the text "
    "farthest from the picks so far; reaches the edges, outliers included) or kmeans (k-means into --n groups, "
    "the text nearest each group's centre: typical texts of every kind). Default: kcenter.")]
Exclude = Annotated[Optional[list[str]], typer.Option(
    "--exclude", metavar="SRC", help="Texts already labelled: a table, folder or dataset as `classify` reads it "
    "(its text, review or sentence column; every split). Its texts are never suggested. Repeatable.")]
InFmt = Annotated[Optional[str], typer.Option("--input-format", help="Format of UNLABELED: csv, tsv, jsonl or lines "
                                              "(default: from the file extension).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="The CSV to fill in (written when complete). An existing "
                                   "file is replaced only when suggest wrote it, or with --overwrite.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace --out even when suggest did not write it.")]

HELP = (
    "Rank unlabeled texts by what labelling them would teach the classifier, and write the top --n to a CSV to "
    "fill in.\n\n"
    "The score: with one single-label model, 1 - the margin between its two most probable labels; with one "
    "multi-label model, how close its closest label is to that label's threshold; with several models (an "
    "ensemble), their disagreement (mean KL divergence from their mean; for regression models the std of their "
    "values). One regression model is refused. The picks are spread over the --candidates highest scores, and "
    "written highest score first: text, an empty label column, rank, score, predicted. Fill in the label column "
    "(an empty cell skips a text; - means none of the labels), then `ulmfit data merge LABELLED.csv TO_LABEL.csv "
    "--out ALL.csv` gives the table for `ulmfit classify`.\n\n"
    f"A text longer than --max-chars ({MAX_CHARS:,} by default) is scored on its first --max-chars characters."
)


def register(app: typer.Typer) -> None:
    @app.command("suggest", help=HELP)
    def suggest_cmd(
        args: list[str] = typer.Argument(..., metavar="MODEL [MODEL ...] UNLABELED",
                                         help="One or more classifier bundles (several: an ensemble), then the "
                                         "unlabeled texts: CSV/TSV/JSONL (its text column) or plain text, a "
                                         "document per line."),
        n: N = 100,
        out: Out = Path("to_label.csv"),
        exclude: Exclude = None,
        candidates: Candidates = None,
        spread: Spread = None,
        text_col: TextCol = None,
        input_format: InFmt = None,
        max_chars: MaxChars = MAX_CHARS,
        overwrite: Overwrite = False,
        bs: InferBs = None,
        device: Device = None,
    ) -> None:
        from ulmfit.errors import UlmfitError
        from ulmfit.suggest import suggest

        if len(args) < 2:
            raise UlmfitError("suggest needs at least one MODEL and the UNLABELED texts",
                              hint="e.g. ulmfit suggest models/clas pool.csv --n 100 --out to_label.csv")
        suggest(args[:-1], args[-1], out, n=n, candidates=candidates, spread=spread, exclude=exclude or [], text_col=text_col,
                in_fmt=input_format, bs=bs, device=device, max_chars=max_chars, overwrite=overwrite,
                log=typer.echo)
