"""Readers: turn the file layouts people have into rows of (text, label, split).

Formats (`fmt`, detected from the path when not given):

- ``folder``: a directory (or a ``.tar.gz``/``.tgz``/``.tar`` of one, read sequentially without extracting).
  Its layout is recognised from the file paths below it (a single top folder such as ``aclImdb/`` is skipped):

  * ``<split>/<label>/*.txt`` -- one document per file (the aclImdb layout: ``train/{pos,neg,unsup}``,
    ``test/{pos,neg}``). A ``unsup`` label folder means split "unsup", unlabeled.
  * ``<label>/*.txt`` -- one document per file, all in split "train".
  * ``<split>/<label>.txt`` or ``<label>.txt`` -- *line files*: one document per line, the label is the file
    name without ``.txt`` (e.g. a folder holding ``pos.txt`` and ``neg.txt``).
  * one table file (``texts.csv``), or table files named after splits (``train.csv``, ``test.csv``).

  Split folder/file names: train, valid (also validation/val/dev), test, unsup. Files are read in natural
  name order (``2_7.txt`` before ``10_1.txt``), so a folder and its tarball give the same corpus.
- ``csv`` / ``tsv`` (header row), ``jsonl`` (one JSON object per line), ``parquet``: the text column(s) and an
  optional label column. Several text columns are joined with a blank line (``"\\n\\n"``; fastai puts its
  ``xxfld`` marker there instead). A ``split`` column (train/valid/test/unsup) or fastai's boolean ``is_valid``
  column assigns splits; otherwise every row is "train". Defaults: the first of text/review/sentence and of
  label/sentiment/target/class (case-insensitive). Empty label cells mean unlabeled.
- ``text``: plain text for language-model-only corpora, unlabeled, split "train". ``doc_sep="line"``: a document
  per line; ``"paragraph"``: a document per blank-line-separated paragraph; ``"auto"``: paragraph when the file
  has blank lines, else line.

Decoding policy: bytes are read as UTF-8 (a BOM is dropped). Bytes that are not valid UTF-8 are replaced by
U+FFFD rather than failing, and the caller warns with the number of affected documents (`Rows.n_replaced`).
A table file that is not text at all (NUL bytes, or a header line of mostly unreadable bytes) is refused.

Archive limits (`ArchiveLimits`): a tarball is read into memory (and a registered dataset is extracted to disk),
so a small archive that unpacks to a huge one (a "gzip bomb") is refused once it passes either limit: at most
``ULMFIT_MAX_ARCHIVE_MEMBERS`` members (default 1,000,000) and ``ULMFIT_MAX_ARCHIVE_BYTES`` uncompressed bytes
(default 4G; suffixes K, M, G, T are powers of 1024). aclImdb_v1.tar.gz, the largest dataset we know of, has
about 100k members and 500 MB. Both are counted while the archive streams, before anything is held.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ulmfit.errors import UlmfitError

FORMATS = ("folder", "csv", "tsv", "jsonl", "parquet", "text")
DOC_SEPS = ("auto", "line", "paragraph")
TEXT_COLS = ("text", "review", "sentence")
LABEL_COLS = ("label", "sentiment", "target", "class")
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                  ".parquet": "parquet", ".pq": "parquet"}
TEXT_SUFFIXES = (".txt", ".text", ".tokens", ".raw")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
# Accepted spellings of split names, in folder names, file names and split columns.
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
                 "dev": "valid", "test": "test", "unsup": "unsup", "unlabeled": "unsup", "unlabelled": "unsup"}
_SPLIT_ORDER = {"train": 0, "valid": 1, "test": 2, "unsup": 3}  # rows come in this order, like SPLITS
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_READ_CHUNK = 1 << 20  # archive members are read in 1 MiB blocks so the byte limit holds before memory is used
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: str, name: str) -> int:
    """A positive byte count from an environment variable: "4294967296", "4G", "512M" (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", value, re.IGNORECASE)
    if not m or int(m.group(1)) <= 0:
        raise UlmfitError(f"{name} must be a positive number of bytes such as 4G or 500M, got {value!r}",
                          hint=f"fix or unset {name}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def size_spelling(n: int) -> str:
    """Bytes as parse_size reads them back: the shortest exact K/M/G/T form ("4G"), else the plain number."""
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def format_size(n: int) -> str:
    """Bytes for a message: "4 GiB", "512 MiB", "1,000 bytes"."""
    spelled = size_spelling(n)
    return f"{spelled[:-1]} {spelled[-1]}iB" if spelled[-1] in _UNITS else f"{n:,} bytes"


def _env_count(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    if not value.strip().isdigit() or int(value) <= 0:
        raise UlmfitError(f"{name} must be a positive whole number, got {value!r}", hint=f"fix or unset {name}")
    return int(value)


MEMBERS_ENV = "ULMFIT_MAX_ARCHIVE_MEMBERS"
BYTES_ENV = "ULMFIT_MAX_ARCHIVE_BYTES"


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may unpack to; `from_env()` applies the overrides (see the module docstring)."""

    max_members: int = 1_000_000
    max_bytes: int = 4 << 30

    @classmethod
    def from_env(cls) -> ArchiveLimits:
        raw = os.environ.get(BYTES_ENV)
        return cls(max_members=_env_count(MEMBERS_ENV, cls.max_members),
                   max_bytes=parse_size(raw, BYTES_ENV) if raw else cls.max_bytes)


class ArchiveBudget:
    """Counts the members and uncompressed bytes of one archive as it streams; one clear error past a limit."""

    def __init__(self, name: str, limits: ArchiveLimits | None = None) -> None:
        self.name = name
        self.limits = limits or ArchiveLimits.from_env()
        self.members = 0
        self.bytes = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UlmfitError(f"refusing {self.name}: it has more than {self.limits.max_members:,} members",
                              hint=f"if you trust the archive, raise the limit, e.g. "
                                   f"{MEMBERS_ENV}={self.limits.max_members * 10}")

    def take(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise UlmfitError(f"refusing {self.name}: it unpacks to more than {format_size(self.limits.max_bytes)}",
                              hint=f"if you trust the archive, raise the limit, e.g. "
                                   f"{BYTES_ENV}={size_spelling(self.limits.max_bytes * 4)}")

@dataclass
class Rows:
    texts: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    n_replaced: int = 0  # documents that had bytes which are not UTF-8 (replaced by U+FFFD)

    def add(self, text: str, label: str | None, split: str) -> None:
        self.texts.append(text)
        self.labels.append(None if split == "unsup" else label)
        self.splits.append(split)

    def extend(self, other: Rows) -> None:
        self.texts += other.texts
        self.labels += other.labels
        self.splits += other.splits
        self.n_replaced += other.n_replaced


def detect_format(path: Path) -> str:
    """The `fmt` a path is read with when none is given."""
    name = path.name.lower()
    if path.is_dir() or name.endswith(ARCHIVE_SUFFIXES):
        return "folder"
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return TABLE_SUFFIXES[suffix]
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise UlmfitError(f"unknown format of {path.name}: expected a folder, .tar.gz, .csv, .tsv, .jsonl, "
                      f".parquet or .txt", hint=f"pass --fmt with one of: {', '.join(FORMATS)}")


def read_source(path: Path, *, fmt: str | None = None, text_col: str | list[str] | None = None,
                label_col: str | None = None, doc_sep: str = "auto", limits: ArchiveLimits | None = None) -> Rows:
    """Read a file, folder or tarball into rows (empty texts not yet dropped). `limits` bound a tarball
    (default: `ArchiveLimits.from_env()`)."""
    path = Path(path)
    if not path.exists():
        raise UlmfitError(f"no such file or folder: {path}", hint="check the path, or name a registered dataset")
    if doc_sep not in DOC_SEPS:
        raise UlmfitError(f"unknown --doc-sep {doc_sep!r}", hint=f"use one of: {', '.join(DOC_SEPS)}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise UlmfitError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    if doc_sep != "auto" and fmt != "text":
        raise UlmfitError(f"--doc-sep applies to plain text files, not to {path.name} ({fmt})",
                          hint="drop --doc-sep, or pass --fmt text")
    if fmt == "folder":
        if path.is_dir():
            tree = _dir_tree(path)
        elif path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
            tree = _tar_tree(path, limits)
        else:
            raise UlmfitError(f"{path.name} is not a folder or a .tar.gz archive", hint="pass the right --fmt")
        return _read_tree(tree, path.name, text_col=text_col, label_col=label_col)
    if path.is_dir():
        raise UlmfitError(f"{path.name} is a folder, not a {fmt} file", hint="pass --fmt folder, or a file")
    data = path.read_bytes()
    if not data.strip():
        raise UlmfitError(f"{path.name} is empty", hint="point at a file with documents in it")
    if fmt == "text":
        _no_columns(text_col, label_col, path.name, "a plain text file (a document per line or paragraph)")
        return _parse_text(data, doc_sep)
    return _parse_table(data, fmt, path.name, text_col, label_col, default_split="train")


# ---------------------------------------------------------------------------------------------- decoding

def decode_bytes(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="replace"), True


def warn_not_utf8(name: str, n_documents: int) -> None:
    """The one warning every command prints when input bytes were not UTF-8."""
    if n_documents:
        print(f"warning: {name}: {n_documents:,} document(s) had bytes that are not UTF-8; "
              "they were replaced by U+FFFD", file=sys.stderr)


def count_replaced(bad: bool, texts: Iterable[str]) -> int:
    # A file of many documents is decoded once; the affected documents are those holding U+FFFD.
    return sum("\ufffd" in t for t in texts) if bad else 0


# ---------------------------------------------------------------------------------------------- folders

def _natural_key(name: str) -> list:
    # "2_7.txt" < "10_1.txt": compare digit runs as numbers, the rest as text.
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


@dataclass
class _Tree:
    """Files below a root, as relative POSIX path tuples, with a way to read each one."""

    files: list[tuple[str, ...]]
    read: Callable[[tuple[str, ...]], bytes]


def _dir_tree(root: Path) -> _Tree:
    files: list[tuple[str, ...]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root).parts
        files += [(*rel, f) for f in filenames if not f.startswith(".")]

    def read(p: tuple[str, ...]) -> bytes:
        with open(root.joinpath(*p), "rb") as f:
            return f.read()

    return _Tree(files, read)


def _wanted(parts: tuple[str, ...]) -> bool:
    name = parts[-1].lower()
    return name.endswith(".txt") or os.path.splitext(name)[1] in TABLE_SUFFIXES


def _tar_tree(path: Path, limits: ArchiveLimits | None = None) -> _Tree:
    # Stream the archive once, front to back: random access into a .tar.gz means re-decompressing from the start.
    budget = ArchiveBudget(path.name, limits)
    blobs: dict[tuple[str, ...], bytes] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                budget.member()
                if not m.isfile():
                    continue
                parts = tuple(p for p in m.name.split("/") if p not in ("", "."))  # pathlib is slow at 100k
                if not parts or any(p.startswith(".") for p in parts) or not _wanted(parts):
                    budget.take(m.size)  # skipping still decompresses it: a huge skipped member costs time
                    continue
                f = tar.extractfile(m)
                if f is not None:
                    blobs[parts] = _read_member(f, budget)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UlmfitError(f"cannot read archive {path.name}: {e}", hint="the file is damaged or not a tar archive; "
                          "download it again") from None
    return _Tree(list(blobs), blobs.__getitem__)


def _read_member(f: io.BufferedIOBase, budget: ArchiveBudget) -> bytes:
    # In blocks, counting what is actually read: the limit holds before a huge member is in memory, whatever its
    # header claims.
    blocks = []
    while block := f.read(_READ_CHUNK):
        budget.take(len(block))
        blocks.append(block)
    return b"".join(blocks)


def _strip_top(files: list[tuple[str, ...]]) -> int:
    """How many leading folders all files share (aclImdb/..., imdb_sample/...), not counting split folders."""
    depth = 0
    while files and all(len(p) > depth + 1 for p in files):
        first = {p[depth] for p in files}
        if len(first) != 1 or next(iter(first)).lower() in SPLIT_ALIASES:
            break
        depth += 1
    return depth


def _split_of(name: str) -> str | None:
    return SPLIT_ALIASES.get(name.lower())


def _stem(name: str) -> str:
    return name[:-4] if name.lower().endswith(".txt") else name


def _no_columns(text_col, label_col, name: str, what: str) -> None:
    # Column options on a source without columns would be silently ignored: say so instead.
    if text_col or label_col:
        raise UlmfitError(f"--text-col/--label-col apply to table files, but {name} is {what}",
                          hint="drop --text-col/--label-col for this source")


def _read_tree(tree: _Tree, name: str, *, text_col, label_col) -> Rows:
    depth = _strip_top(tree.files)
    files = {p[depth:]: p for p in tree.files}
    is_txt = {p: p[-1].lower().endswith(".txt") for p in files}

    docs3 = [p for p in files if len(p) == 3 and is_txt[p] and _split_of(p[0])]
    if docs3:  # <split>/<label>/<doc>.txt
        _no_columns(text_col, label_col, name, "a folder of <split>/<label>/*.txt documents")
        keyed = []
        for p in docs3:
            split = _split_of(p[0])
            label: str | None = p[1]
            if _split_of(p[1]) == "unsup":
                split, label = "unsup", None
            keyed.append(((split, label or "", _natural_key(p[2])), p, label, split))
        return _one_doc_per_file(tree, files, keyed)

    docs2 = [p for p in files if len(p) == 2 and is_txt[p]]
    if docs2 and all(_split_of(p[0]) for p in docs2):  # <split>/<label>.txt line files
        _no_columns(text_col, label_col, name, "a folder of <split>/<label>.txt line files")
        rows = Rows()
        for p in sorted(docs2, key=lambda p: (_SPLIT_ORDER[_split_of(p[0])], _natural_key(p[1]))):
            rows.extend(_parse_lines(tree.read(files[p]), _stem(p[1]), _split_of(p[0])))
        return rows
    if docs2:  # <label>/<doc>.txt
        _no_columns(text_col, label_col, name, "a folder of <label>/*.txt documents")
        keyed = []
        for p in docs2:
            split, label = ("unsup", None) if _split_of(p[0]) == "unsup" else ("train", p[0])
            keyed.append(((split, label or "", _natural_key(p[1])), p, label, split))
        return _one_doc_per_file(tree, files, keyed)

    docs1 = [p for p in files if len(p) == 1 and is_txt[p]]
    if docs1:  # <label>.txt line files
        _no_columns(text_col, label_col, name, "a folder of <label>.txt line files")
        rows = Rows()
        for p in sorted(docs1, key=lambda p: _natural_key(p[0])):
            rows.extend(_parse_lines(tree.read(files[p]), _stem(p[0]), "train"))
        return rows

    tables = [p for p in files if len(p) == 1 and PurePosixPath(p[0].lower()).suffix in TABLE_SUFFIXES]
    if len(tables) == 1:
        p = tables[0]
        return _parse_table(tree.read(files[p]), TABLE_SUFFIXES[PurePosixPath(p[0].lower()).suffix], p[0],
                            text_col, label_col, default_split="train")
    if tables and all(_split_of(PurePosixPath(p[0]).stem) for p in tables):
        rows = Rows()
        for p in sorted(tables, key=lambda p: _natural_key(p[0])):
            fmt = TABLE_SUFFIXES[PurePosixPath(p[0].lower()).suffix]
            rows.extend(_parse_table(tree.read(files[p]), fmt, p[0], text_col, label_col,
                                     default_split=_split_of(PurePosixPath(p[0]).stem)))
        return rows
    if tables:
        raise UlmfitError(f"{name} holds several table files ({', '.join(p[0] for p in sorted(tables)[:5])}) "
                          "and their names are not split names", hint="point at one of the files")
    if not tree.files:
        raise UlmfitError(f"{name} is empty", hint="point at a folder or archive with documents in it")
    raise UlmfitError(f"unrecognised layout in {name}: expected <split>/<label>/*.txt, <label>/*.txt, "
                      "<label>.txt line files or a table file", hint="see `ulmfit data info --help` for layouts")


def _one_doc_per_file(tree: _Tree, files: dict, keyed: list) -> Rows:
    rows = Rows()
    keyed.sort(key=lambda k: (_SPLIT_ORDER[k[0][0]], k[0][1], k[0][2]))
    for _, p, label, split in keyed:
        text, bad = decode_bytes(tree.read(files[p]))
        rows.n_replaced += bad
        rows.add(text, label, split)
    return rows


def _parse_lines(data: bytes, label: str | None, split: str) -> Rows:
    text, bad = decode_bytes(data)
    rows = Rows()
    for line in text.splitlines():
        rows.add(line, label, split)
    rows.n_replaced = count_replaced(bad, rows.texts)
    return rows


def _parse_text(data: bytes, doc_sep: str) -> Rows:
    text, bad = decode_bytes(data)
    blank = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")
    if doc_sep == "auto":
        doc_sep = "paragraph" if blank.search(text.replace("\r\n", "\n")) else "line"
    if doc_sep == "paragraph":
        docs = [d for d in blank.split(text.replace("\r\n", "\n")) if d.strip()]
    else:
        docs = text.splitlines()
    rows = Rows()
    for d in docs:
        rows.add(d.strip("\n"), None, "train")
    rows.n_replaced = count_replaced(bad, rows.texts)
    return rows


# ---------------------------------------------------------------------------------------------- tables

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


def _resolve_columns(header: list[str], text_col, label_col, name: str) -> tuple[list[str], str | None, str | None]:
    available = column_preview(header)
    text_cols = text_columns(header, text_col, name)
    if label_col:
        label = find_column(header, label_col)
        if label is None:
            raise UlmfitError(f"unknown label column {label_col!r} in {name} (available: {available})",
                              hint="pass --label-col with one of the available columns")
    else:
        label = next((f for f in (find_column(header, c) for c in LABEL_COLS) if f and f not in text_cols), None)
    split = find_column(header, "split") or find_column(header, "is_valid")
    if split in text_cols or split == label:
        split = None
    return text_cols, label, split


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


def _parse_table(data: bytes, fmt: str, name: str, text_col, label_col, *, default_split: str) -> Rows:
    if not data.strip():
        raise UlmfitError(f"{name} is empty", hint="point at a file with documents in it")
    header, column, bad = _table_columns(data, fmt, name)
    text_cols, label, split = _resolve_columns(header, text_col, label_col, name)
    cols = [column(c) for c in text_cols]
    labels = column(label) if label else None
    splits = column(split) if split else None
    rows = Rows()
    for i in range(len(cols[0])):
        parts = [p for p in (_cell(c[i]) for c in cols) if p is not None]
        text = "\n\n".join(p.strip() for p in parts) if len(cols) > 1 else (parts[0] if parts else "")
        y = _cell(labels[i]) if labels is not None else None
        s = _split_value(splits[i], split, name, i + 1) if splits is not None else default_split
        rows.add(text, y.strip() if y else None, s)
    rows.n_replaced = count_replaced(bad, rows.texts)
    return rows
