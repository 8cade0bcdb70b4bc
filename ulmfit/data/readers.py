"""Readers: turn the file layouts people have into rows of (text, label, split).

Formats (`fmt`, detected from the path when not given):

- ``folder``: a directory (or a ``.tar.gz``/``.tgz``/``.tar`` of one, read sequentially without extracting).
  Its layout is recognised from the file paths below it (a single top folder such as ``aclImdb/`` is skipped):

  * ``<split>/<label>/*.txt`` -- one document per file (the aclImdb layout: ``train/{pos,neg,unsup}``,
    ``test/{pos,neg}``). A ``unsup`` label folder means split "unsup", unlabeled.
  * ``<label>/*.txt`` -- one document per file, all in split "train".
  * ``<split>/<label>.txt`` or ``<label>.txt`` -- *line files*: one document per line, the label is the file
    name without ``.txt`` (e.g. a folder holding ``pos.txt`` and ``neg.txt``).
  * one table file (``texts.csv``), or table files named after splits (``train.csv``, ``test.csv``). Beside
    split-named tables, one ``.txt`` file is a list of label names, one per line (GoEmotions' ``emotions.txt``):
    integer label ids in the tables (``27``, or ``2,14`` for several) are read as those names, id = line number
    from 0.

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

Decoding (`ulmfit.data.rows`): UTF-8, bytes that are not become U+FFFD and the caller warns. Tables are read by
`ulmfit.data.tables`; a table file that is not text at all (NUL bytes, a header of unreadable bytes) is refused.
Archives are read within the member and byte limits of `ulmfit.data.limits.ArchiveLimits` (a "gzip bomb" is
refused as it streams).
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ulmfit.data.limits import ArchiveBudget, ArchiveLimits
from ulmfit.data.rows import FORMATS, SPLIT_ALIASES, Rows, count_replaced, decode_bytes
from ulmfit.data.tables import parse_table
from ulmfit.errors import UlmfitError

DOC_SEPS = ("auto", "line", "paragraph")
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                  ".parquet": "parquet", ".pq": "parquet"}
TEXT_SUFFIXES = (".txt", ".text", ".tokens", ".raw")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
# Accepted spellings of split names, in folder names, file names and split columns.
_SPLIT_ORDER = {"train": 0, "valid": 1, "test": 2, "unsup": 3}  # rows come in this order, like SPLITS
_READ_CHUNK = 1 << 20  # archive members are read in 1 MiB blocks so the byte limit holds before memory is used




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
    return parse_table(data, fmt, path.name, text_col, label_col, default_split="train")


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
    tables = [p for p in files if len(p) == 1 and PurePosixPath(p[0].lower()).suffix in TABLE_SUFFIXES]
    split_tables = bool(tables) and all(_split_of(PurePosixPath(p[0]).stem) for p in tables)
    if split_tables and len(docs1) == 1:  # train/dev/test tables + a label names file
        rows = _split_tables(tree, files, tables, text_col, label_col)
        return _named_labels(rows, tree.read(files[docs1[0]]), docs1[0][0])
    if docs1:  # <label>.txt line files
        _no_columns(text_col, label_col, name, "a folder of <label>.txt line files")
        rows = Rows()
        for p in sorted(docs1, key=lambda p: _natural_key(p[0])):
            rows.extend(_parse_lines(tree.read(files[p]), _stem(p[0]), "train"))
        return rows

    if len(tables) == 1:
        p = tables[0]
        return parse_table(tree.read(files[p]), TABLE_SUFFIXES[PurePosixPath(p[0].lower()).suffix], p[0],
                            text_col, label_col, default_split="train")
    if split_tables:
        return _split_tables(tree, files, tables, text_col, label_col)
    if tables:
        raise UlmfitError(f"{name} holds several table files ({', '.join(p[0] for p in sorted(tables)[:5])}) "
                          "and their names are not split names", hint="point at one of the files")
    if not tree.files:
        raise UlmfitError(f"{name} is empty", hint="point at a folder or archive with documents in it")
    raise UlmfitError(f"unrecognised layout in {name}: expected <split>/<label>/*.txt, <label>/*.txt, "
                      "<label>.txt line files or a table file", hint="see `ulmfit data info --help` for layouts")


def _split_tables(tree: _Tree, files: dict, tables: list, text_col, label_col) -> Rows:
    rows = Rows()
    for p in sorted(tables, key=lambda p: _natural_key(p[0])):
        fmt = TABLE_SUFFIXES[PurePosixPath(p[0].lower()).suffix]
        rows.extend(parse_table(tree.read(files[p]), fmt, p[0], text_col, label_col,
                                default_split=_split_of(PurePosixPath(p[0]).stem)))
    return rows


def _named_labels(rows: Rows, data: bytes, name: str) -> Rows:
    """Integer label ids ("27", "2,14") replaced by the names listed in `name`, one per line (id = line number
    from 0). Labels that are not ids, or ids past the list, are an error naming the row."""
    text, _ = decode_bytes(data)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    for i, cell in enumerate(rows.labels):
        if cell is None:
            continue
        ids = [c.strip() for c in cell.split(",")]
        if not all(c.isdigit() and int(c) < len(names) for c in ids):
            raise UlmfitError(f"row {i + 1}: label {cell!r} is not an id of the {len(names)} label names in {name}",
                              hint=f"labels beside a names file are ids from 0 to {len(names) - 1}")
        rows.labels[i] = ",".join(names[int(c)] for c in ids)
    return rows


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
