"""`load_corpus`: any supported source -> a cleaned `Corpus` with train/valid/test/unsup splits."""

from __future__ import annotations

import sys
from pathlib import Path

from ulmfit.data.corpus import Corpus
from ulmfit.data.readers import read_source
from ulmfit.data.rows import warn_not_utf8
from ulmfit.data.registry import DATASETS, get_dataset
from ulmfit.data.splits import carve_splits
from ulmfit.errors import UlmfitError


def resolve_source(src: str | Path) -> tuple[Path, str]:
    """(local path, short name) of a source. A registered name always means the dataset (write ./imdb for a
    local folder called imdb); anything else is a path."""
    if isinstance(src, str) and src in DATASETS:
        return get_dataset(src), src
    path = Path(src)
    if not path.exists():
        looks_like_name = isinstance(src, str) and "/" not in src and "\\" not in src and not path.suffix
        if looks_like_name:
            raise UlmfitError(f"unknown dataset {src!r} and no such file or folder "
                              f"(registered datasets: {', '.join(sorted(DATASETS))})",
                              hint="use a registered name, or a path to a file, folder or .tar.gz")
        raise UlmfitError(f"no such file or folder: {src}", hint="check the path")
    return path, path.resolve().name


def load_corpus(src: str | Path, *, text_col: str | list[str] | None = None, label_col: str | None = None,
                fmt: str | None = None, valid_pct: float = 0.1, seed: int = 42, doc_sep: str = "auto") -> Corpus:
    """Read a registered dataset or a path into a Corpus.

    The source's own splits are kept. Without a "valid" split, `valid_pct` of "train" becomes "valid"
    (seeded, stratified by label, shuffled); `valid_pct=0` keeps the splits exactly as the source has them.
    Documents that are empty or only whitespace are dropped with a warning count on stderr; documents
    with bytes that are not UTF-8 are kept with U+FFFD in their place, also with a warning count.
    See `ulmfit.data.readers` for formats, column defaults and layouts.
    """
    if not 0 <= valid_pct < 1:
        raise UlmfitError(f"valid_pct must be in [0, 1), got {valid_pct}", hint="e.g. 0.1 for 10%")
    path, name = resolve_source(src)
    rows = read_source(path, fmt=fmt, text_col=text_col, label_col=label_col, doc_sep=doc_sep)
    warn_not_utf8(name, rows.n_replaced)
    keep = [i for i, t in enumerate(rows.texts) if t.strip()]
    if not keep:
        what = f"all {len(rows.texts):,} documents are" if rows.texts else "no documents were found, or all are"
        raise UlmfitError(f"{name}: {what} empty", hint="check --text-col, or the file's contents")
    if len(keep) < len(rows.texts):
        print(f"warning: {name}: dropped {len(rows.texts) - len(keep):,} empty document(s)", file=sys.stderr)
        rows.texts = [rows.texts[i] for i in keep]
        rows.labels = [rows.labels[i] for i in keep]
        rows.splits = [rows.splits[i] for i in keep]
    return Corpus(rows.texts, rows.labels, carve_splits(rows.labels, rows.splits, valid_pct, seed), name)
