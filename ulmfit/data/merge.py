"""`merge_labels`: labelled tables joined into one that `ulmfit classify` reads, the end of a labelling round.

    ulmfit suggest models/clas pool.csv --exclude labels.csv --out to_label.csv   # ulmfit.suggest
    # fill in to_label.csv's label column
    ulmfit data merge labels.csv to_label.csv --out labels-2.csv
    ulmfit classify labels-2.csv --lm models/lm --out models/clas-2

The output is one CSV: text, label, split. Its rows are the inputs' rows in order, with these rules:

- A file `ulmfit suggest` wrote (its header is SUGGESTION_COLUMNS) gives only the rows whose label was filled
  in: an empty cell is a text not labelled yet. A cell holding just "-" is a text labelled with no label (for a
  multi-label task, none of the labels apply; a single-label classifier skips it) and becomes an empty cell.
- Any other source (a table, a folder, a registered dataset, as `classify` reads them) gives every row, as it
  is: an empty label there is whatever it meant in that source (an unlabeled text, an empty label set).
- A text that an earlier input already holds (compared with its whitespace normalised, `text_key`) keeps the
  earlier row; the later one is skipped and counted. Duplicates within one input are kept, as that input has them.
- Rows keep their source's split; rows of a source without a split column are "train", so new labels train and
  an earlier validation split stays what it was (classify carves 10% of train when no input has one).

The file is written atomically; an existing --out is replaced only with `overwrite`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ulmfit._io import atomic_write_text
from ulmfit._outputs import check_output_file
from ulmfit.data.load import load_corpus
from ulmfit.errors import UlmfitError

SUGGESTION_COLUMNS = ("text", "label", "rank", "score", "predicted")  # the header `ulmfit suggest` writes
NO_LABEL = "-"  # in a suggestion file: labelled, with no label (an empty label set)
MERGED_COLUMNS = ("text", "label", "split")


@dataclass
class MergeResult:
    out: Path
    rows: int  # rows written
    per_input: dict[str, int] = field(default_factory=dict)  # rows taken from each input
    unfilled: int = 0  # rows of suggestion files whose label was left empty
    duplicates: int = 0  # rows skipped: their text was already in an earlier input


def text_key(text: str) -> str:
    """A text as compared across files: whitespace runs as one space, none at the ends (a CSV round trip or an
    editor may change line ends and trailing spaces)."""
    return " ".join(text.split())


def is_suggestion_file(path: str | Path) -> bool:
    """Whether `path` is a CSV whose header is `ulmfit suggest`'s."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader([f.readline()]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return tuple(h.strip() for h in header) == SUGGESTION_COLUMNS


def merge_labels(inputs: list[str | Path], out: str | Path, *, text_col: str | None = None,
                 label_col: str | None = None, overwrite: bool = False) -> MergeResult:
    """Join `inputs` into one text,label,split CSV at `out` (see the module docstring for the rules).
    `text_col` and `label_col` name the columns of inputs that are not suggestion files."""
    if len(inputs) < 1:
        raise UlmfitError("nothing to merge", hint="name the labelled files, e.g. labels.csv to_label.csv")
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise UlmfitError(f"--out {out} is not a .csv file", hint="name the merged table, e.g. --out labels-2.csv")
    check_output_file(out, option="--out", ours=lambda p: False, overwrite=overwrite)
    result = MergeResult(out=out, rows=0)
    seen: set[str] = set()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MERGED_COLUMNS)
    for src in inputs:
        suggested = is_suggestion_file(src)
        cols = {"text_col": "text", "label_col": "label"} if suggested else {"text_col": text_col,
                                                                            "label_col": label_col}
        corpus = load_corpus(src, valid_pct=0, **cols)
        taken, keys = 0, set()
        for text, label, split in zip(corpus.texts, corpus.labels, corpus.splits):
            if suggested and label is None:
                result.unfilled += 1
                continue
            key = text_key(text)
            if key in seen:
                result.duplicates += 1
                continue
            keys.add(key)
            w.writerow([text, "" if label is None or (suggested and label == NO_LABEL) else label, split])
            taken += 1
        seen |= keys
        result.per_input[str(src)] = taken
        result.rows += taken
    if not result.rows:
        raise UlmfitError("the inputs hold no labelled rows to merge",
                          hint="fill in the label column of the file `ulmfit suggest` wrote")
    atomic_write_text(out, buf.getvalue())
    return result
