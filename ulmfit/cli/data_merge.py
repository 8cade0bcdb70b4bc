"""`ulmfit data merge`: labelled tables (and the file `ulmfit suggest` wrote, filled in) joined for `classify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ulmfit.cli._common import LabelCol, TextCol

Out = Annotated[Path, typer.Option("--out", "-o", help="The merged table: a CSV of text, label, split, written "
                                   "when complete. An existing file is replaced only with --overwrite.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists (it may be one of the "
                                         "inputs: they are read first).")]

HELP = (
    "Join labelled tables into one text,label,split CSV for `ulmfit classify`: e.g. the labels you had and the "
    "file `ulmfit suggest` wrote, filled in.\n\n"
    "From a suggest file only the rows whose label was filled in are taken (an empty cell: not labelled yet; "
    "-: labelled with no label, an empty cell in the output). Other sources (tables, folders, datasets, as "
    "classify reads them) give every row as it is. A text an earlier input already holds keeps the earlier row. "
    "Rows keep their source's split; a source without a split column gives train rows."
)


def register(data_app: typer.Typer) -> None:
    @data_app.command("merge", help=HELP)
    def merge_cmd(
        inputs: Annotated[list[str], typer.Argument(metavar="SRC [SRC ...]", help="Labelled sources, earliest first.")],
        out: Out,
        overwrite: Overwrite = False,
        text_col: TextCol = None,
        label_col: LabelCol = None,
    ) -> None:
        from ulmfit.data.merge import merge_labels

        res = merge_labels(inputs, out, text_col=text_col, label_col=label_col, overwrite=overwrite)
        taken = ", ".join(f"{Path(src).name} {n:,}" for src, n in res.per_input.items())
        skipped = [f"{res.unfilled:,} not labelled yet" if res.unfilled else "",
                   f"{res.duplicates:,} already in an earlier input" if res.duplicates else ""]
        typer.echo(f"{res.rows:,} rows ({taken})" + (f"; skipped {', '.join(s for s in skipped if s)}"
                                                     if any(skipped) else "") + f" -> {res.out}")
