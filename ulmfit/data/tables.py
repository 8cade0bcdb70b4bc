"""Table files (CSV, TSV, JSON lines, parquet) to rows: the text and label columns, the split column.

A CSV/TSV whose first row is data, not names (GoEmotions' TSVs: text, label ids, comment id), is read without a
header: its first row holds a number in a column that holds numbers below it too, which column names do not.
Its columns are named 1, 2, ... (what --text-col/--label-col then take); the text is the column with the longest
cells and the label the next one whose values repeat (an id column's do not; in a file too short to show repeats, the first holding numbers), and
a note says so.

Several label columns (`--label-col joy,anger,fear`) holding 0/1 (or true/false, yes/no) make one label cell per
row: the names of the columns that are on, joined by commas, as a multi-label corpus writes them ("joy,fear";
no column on: an empty label set).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator

from ulmfit.data.rows import FORMATS, SPLIT_ALIASES, Rows, count_replaced, decode_bytes
from ulmfit.errors import UlmfitError

TEXT_COLS = ("text", "review", "sentence")
LABEL_COLS = ("label", "sentiment", "target", "class", "labels", "value", "values", "score", "rating")
_NUMERIC = re.compile(r"^\s*-?\d+(\.\d+)?([,;]\s*-?\d+(\.\d+)?)*\s*$")  # 3, 0.25, or ids like 2,14
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _table_columns(data: bytes, fmt: str, name: str) -> tuple[list[str], Callable[[str], list], bool]:
    """(column names, column getter, had undecodable bytes) for one table file."""
    if fmt in ("csv", "tsv"):
        _require_text(data, fmt, name)
        text, bad = decode_bytes(data)
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # reviews can be longer than csv's 128 KiB default
        try:
            reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t")
            header = next(reader, None)
            body = list(reader)
        except csv.Error as e:
            raise UlmfitError(f"cannot parse {name} as {fmt.upper()}: {e}",
                              hint="check quoting, or pass --fmt") from None
        if not header:
            raise UlmfitError(f"{name} is empty", hint="a header row naming the columns is expected")
        if _is_data_row(header, body):
            body = [header] + body
            header = [str(i + 1) for i in range(max(len(r) for r in body))]
        header = [h.strip() for h in header]
        index = {h: i for i, h in enumerate(header)}
        return header, lambda c: [r[index[c]] if index[c] < len(r) else None for r in body], bad
    if fmt == "jsonl":
        text, bad = decode_bytes(data)
        records = [rec for _, rec in iter_jsonl(text.splitlines(), name)]
        header = list(dict.fromkeys(k for rec in records for k in rec))
        return header, lambda c: [rec.get(c) for rec in records], bad
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as e:
            raise UlmfitError(f"cannot read {name} as parquet: {e}",
                              hint="the file is damaged or not parquet") from None
        return list(table.column_names), lambda c: table.column(c).to_pylist(), False
    raise UlmfitError(f"unknown table format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")


_SNIFF = 1 << 16  # how much of a table file is checked for NUL bytes: a binary file shows them at once


def _is_data_row(first: list[str], body: list[list[str]]) -> bool:
    """Whether a CSV/TSV's first row is data: it holds a number (or a list of ids) in a column whose next rows
    hold numbers too. Column names are not numbers, so a table with a header never matches."""
    sample = body[:50]
    for j, cell in enumerate(first):
        if _NUMERIC.match(cell or ""):
            below = [r[j] for r in sample if j < len(r) and r[j].strip()]
            if below and all(_NUMERIC.match(v) for v in below):
                return True
    return False


def _require_text(data: bytes, fmt: str, name: str) -> None:
    """Refuse a binary file (a zip, an image, UTF-16) posing as CSV/TSV, before its bytes become "column names".

    A header of Latin-1 with a few accents is still text (decoded with U+FFFD and warned about later); a header
    that is mostly undecodable or control characters is not.
    """
    head = data[:_SNIFF]
    why = None
    if b"\x00" in head:
        why = "it holds NUL bytes"
    else:
        first = head.split(b"\n", 1)[0][:1000].decode("utf-8-sig", errors="replace")
        unreadable = sum(c == "\ufffd" or (not c.isprintable() and c not in "\t\r") for c in first)
        if unreadable > max(2, len(first) // 4):
            why = "its first line is not readable text"
    if why:
        raise UlmfitError(f"{name} does not look like a {fmt.upper()} text file: {why} (starts with {data[:16]!r})",
                          hint=f"pass a UTF-8 {fmt.upper()} file with a header row, or the right --fmt")


def column_preview(header: list[str], max_names: int = 10, max_chars: int = 40) -> str:
    """Column names for an error message: at most `max_names`, each cut to `max_chars`, unprintable characters
    escaped, so a strange file cannot flood the terminal."""
    if not header:
        return "none"

    def show(name: str) -> str:
        name = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)
        return name if len(name) <= max_chars else name[: max_chars - 3] + "..."

    names = [show(h) for h in header[:max_names]]
    more = len(header) - max_names
    return ", ".join(names) + (f" and {more:,} more" if more > 0 else "")


def iter_jsonl(lines: Iterable[str], name: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines text; one clear error for a bad line.
    Lazy, so `ulmfit predict` can stream a file of any size through it."""
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UlmfitError(f"{name} line {i} is not valid JSON: {e.msg}",
                              hint="JSONL needs one JSON object per line") from None
        if not isinstance(rec, dict):
            raise UlmfitError(f"{name} line {i} is not a JSON object", hint="JSONL needs one object per line")
        yield i, rec


def find_column(header: list[str], wanted: str) -> str | None:
    """`wanted` as spelled in `header`: an exact match, else the one that differs only in case."""
    if wanted in header:
        return wanted
    lower = {h.lower(): h for h in header}
    return lower.get(wanted.lower())


def text_columns(header: list[str], text_col: str | list[str] | None, name: str) -> list[str]:
    """The text column(s) as spelled in `header`: those asked for (a list, or names joined by commas), else the
    first of TEXT_COLS present; one clear error naming the available columns otherwise."""
    available = column_preview(header)
    if text_col:
        asked = [c.strip() for c in text_col.split(",")] if isinstance(text_col, str) else list(text_col)
        text_cols = []
        for c in asked:
            found = find_column(header, c)
            if found is None:
                raise UlmfitError(f"unknown text column {c!r} in {name} (available: {available})",
                                  hint="pass --text-col with one of the available columns")
            text_cols.append(found)
        return text_cols
    found = next((f for f in (find_column(header, c) for c in TEXT_COLS) if f), None)
    if found is None:
        raise UlmfitError(f"no text column in {name}: none of {', '.join(TEXT_COLS)} (available: {available})",
                          hint="pass --text-col NAME (several joined by commas)")
    return [found]


def _resolve_columns(header: list[str], text_col, label_col, name: str,
                     column: Callable[[str], list] | None = None) -> tuple[list[str], list[str], str | None]:
    """(text columns, label columns (none, one, or several 0/1 columns), split column) as spelled in `header`.
    A header of column numbers (a table without one) picks text and label by content (`_by_content`)."""
    available = column_preview(header)
    if column is not None and header == [str(i + 1) for i in range(len(header))] and not (text_col and label_col):
        text_cols, labels = _by_content(header, column, text_col, label_col, name)
        return text_cols, labels, None
    text_cols = text_columns(header, text_col, name)
    if label_col:
        labels = []
        for c in [c.strip() for c in label_col.split(",")]:
            found = find_column(header, c)
            if found is None:
                raise UlmfitError(f"unknown label column {c!r} in {name} (available: {available})",
                                  hint="pass --label-col with one of the available columns")
            labels.append(found)
    else:
        found = next((f for f in (find_column(header, c) for c in LABEL_COLS) if f and f not in text_cols), None)
        labels = [found] if found else []
    split = find_column(header, "split") or find_column(header, "is_valid")
    if split in text_cols or split in labels:
        split = None
    return text_cols, labels, split


def _by_content(header: list[str], column: Callable[[str], list], text_col, label_col,
                name: str) -> tuple[list[str], list[str]]:
    """A table without a header: the text is the column with the longest cells, the label the first other column
    whose values repeat (an id column's are all different), else the first holding numbers only (label ids).
    Printed, since it is a guess."""
    def mean_len(c: str) -> float:
        cells = column(c)
        return sum(len(v or "") for v in cells) / max(len(cells), 1)

    text_cols = text_columns(header, text_col, name) if text_col else [max(header, key=mean_len)]
    if label_col:
        labels = [c for c in header if c == label_col.strip()]
        if not labels:
            raise UlmfitError(f"unknown label column {label_col!r} in {name}, a table without a header (columns "
                              f"1 to {len(header)})", hint="pass --label-col with a column number")
    else:
        def repeats(c: str) -> bool:
            values = [v for v in column(c) if v]
            return bool(values) and len(set(values)) < len(values)

        def ids(c: str) -> bool:  # a short file's label column may not repeat yet: label ids still show it
            values = [v for v in column(c) if v]
            return bool(values) and all(_NUMERIC.match(v) for v in values)
        rest = [c for c in header if c not in text_cols]
        found = next((c for c in rest if repeats(c)), None) or next((c for c in rest if ids(c)), None)
        labels = [found] if found else []
    print(f"note: {name} has no header row: text from column {', '.join(text_cols)}"
          + (f", labels from column {labels[0]}" if labels else ", no label column")
          + " (--text-col and --label-col take column numbers)", file=sys.stderr)
    return text_cols, labels


def _flag(v, col: str, name: str, row: int) -> bool:
    s = (_cell(v) or "0").strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise UlmfitError(f"{name} row {row}: label column {col!r} holds {s!r}, not 0/1",
                      hint="several label columns must each hold 0/1 (or true/false): one per label")


def _cell(v) -> str | None:
    """A table cell as text; None for missing values (None, NaN, empty)."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # a label column of ints with gaps is stored as floats: 1.0 means "1"
    s = v if isinstance(v, str) else str(v)
    return s if s.strip() else None


def _split_value(v, col: str, name: str, row: int) -> str:
    s = (_cell(v) or "").strip().lower()
    if col.lower() == "is_valid":
        if s in _TRUE:
            return "valid"
        if s in _FALSE:
            return "train"
        raise UlmfitError(f"{name} row {row}: is_valid value {s!r} is not a boolean", hint="use True/False")
    split = SPLIT_ALIASES.get(s)
    if split is None:
        raise UlmfitError(f"{name} row {row}: split value {s!r} is not one of train, valid, test, unsup",
                          hint="fix the split column, or rename it so it is not used")
    return split


def parse_table(data: bytes, fmt: str, name: str, text_col, label_col, *, default_split: str) -> Rows:
    if not data.strip():
        raise UlmfitError(f"{name} is empty", hint="point at a file with documents in it")
    header, column, bad = _table_columns(data, fmt, name)
    text_cols, label_cols, split = _resolve_columns(header, text_col, label_col, name, column)
    cols = [column(c) for c in text_cols]
    labels = column(label_cols[0]) if len(label_cols) == 1 else None
    flags = [column(c) for c in label_cols] if len(label_cols) > 1 else None
    splits = column(split) if split else None
    rows = Rows()
    for i in range(len(cols[0])):
        parts = [p for p in (_cell(c[i]) for c in cols) if p is not None]
        text = "\n\n".join(p.strip() for p in parts) if len(cols) > 1 else (parts[0] if parts else "")
        y = _cell(labels[i]) if labels is not None else None
        if flags is not None:  # several 0/1 columns: the names of those that are on, as one multi-label cell
            y = ",".join(c for c, f in zip(label_cols, flags) if _flag(f[i], c, name, i + 1)) or None
        s = _split_value(splits[i], split, name, i + 1) if splits is not None else default_split
        rows.add(text, y.strip() if y else None, s)
    rows.n_replaced = count_replaced(bad, rows.texts)
    return rows
