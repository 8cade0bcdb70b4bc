"""`predict_file`: label a file of texts with one or more classifiers, streaming, rows in input order.

Input (format from the extension, or `in_fmt`): CSV / TSV (header row), JSONL (one object per line) or plain
text (one document per line); "-" reads stdin (plain lines unless `in_fmt` says otherwise). Tables need
`text_col`, or a column named text / review / sentence.

Output (format from the extension, or `out_fmt`), by the models' task shape: CSV with `label` and one
`prob_<label>` column per class (single-label), `labels` (the predicted set, joined by the label delimiter) and
one `prob_<label>` column per label (multi-label), or `value` (regression); or JSONL with what
`Classifier.predict` returns: {"label", "probs"}, {"labels", "probs"} or {"value"} (and "bin" when the model
has bins; `bin` in CSV). "-" writes JSONL to stdout.

The input is read in chunks (`chunk_size` rows); each chunk is tokenized, sorted by length and batched inside
the model call, and its results written back in the chunk's original order, so a file of any size streams
through in bounded memory. A file output appears only when complete (temporary file + rename).

Limits and safety: a document longer than `max_chars` characters (default `MAX_CHARS`; 0: no limit) is classified
from its first `max_chars` characters, and a warning says how many were cut; time per document is linear in its
length, so the limit bounds the time one document can take. Bytes that are not UTF-8 become U+FFFD with a
warning, as `ulmfit.data` reads them. The output path is checked before a model is loaded (`check_output_file`):
an existing file that is not an earlier prediction file is replaced only with `overwrite`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ulmfit._io import progress, staging_prefix, umask
from ulmfit._outputs import check_output_file
from ulmfit.data.rows import count_replaced, decode_bytes, warn_not_utf8
from ulmfit.data.tables import iter_jsonl, text_columns
from ulmfit.errors import UlmfitError

if TYPE_CHECKING:  # numpy is not imported at module level: the CLI reads MAX_CHARS from here for its --help
    import numpy as np

IN_FORMATS = ("csv", "tsv", "jsonl", "lines")
OUT_FORMATS = ("csv", "jsonl")
_IN_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".txt": "lines", ".text": "lines"}
_OUT_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
# Characters of a document that are classified (some 20,000 words, far more than any review). Time per document
# is linear in its length, so this bounds what one pasted book or runaway line can cost; 0 lifts the limit.
MAX_CHARS = 100_000
# Input is decoded with errors="surrogateescape": each byte that is not UTF-8 arrives as one of these code points.
_ESCAPED = re.compile("[\udc80-\udcff]")


@dataclass
class PredictResult:
    rows: int
    output: str  # the output path, or "-"
    seconds: float
    labels: list[str]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def check_max_chars(max_chars: int) -> None:
    if max_chars < 0:
        raise UlmfitError(f"--max-chars must be 0 (no limit) or more, not {max_chars}",
                          hint=f"e.g. --max-chars {MAX_CHARS}")


def clip_texts(texts: list[str], max_chars: int) -> tuple[list[str], int]:
    """Each text cut to its first `max_chars` characters (0: no limit), and how many texts were cut. Whatever is
    not a string is passed on untouched, for the caller's own check."""
    long = [isinstance(t, str) and len(t) > max_chars for t in texts] if max_chars > 0 else []
    if not any(long):
        return texts, 0
    return [t[:max_chars] if cut else t for t, cut in zip(texts, long)], sum(long)


def clipped_message(n: int, max_chars: int, how: str = "--max-chars 0") -> str:
    """The warning for `n` documents cut by `clip_texts`; `how` says how to lift the limit."""
    return (f"{n:,} document(s) longer than {max_chars:,} characters were classified from their first "
            f"{max_chars:,} characters ({how} reads them whole)")


def is_prediction_file(path: Path) -> bool:
    """Whether `path` holds what `predict` writes: a CSV whose header starts with label,prob_ / labels,prob_ or is
    value, or JSON lines whose first line is an object with "label"/"labels" and "probs", or "value"."""
    try:
        with open(path, "rb") as f:
            head = f.readline(1 << 20)
    except OSError:
        return False
    if head.startswith((b"label,prob_", b"labels,prob_")) or head.rstrip(b"\r\n") in (b"value", b"value,bin"):
        return True
    try:
        rec = json.loads(head)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep: not ours
        return False
    if not isinstance(rec, dict):
        return False
    return ("label" in rec or "labels" in rec) and "probs" in rec or set(rec) in ({"value"}, {"value", "bin"})


def _resolve_format(path: str, fmt: str | None, what: str, formats: tuple[str, ...], suffixes: dict[str, str],
                    stdio: str, bare: str | None) -> str:
    """An explicit --input-format/--output-format, else the file's extension; `stdio` for "-", `bare` for a name
    without an extension (None: an error)."""
    if fmt is not None:
        if fmt not in formats:
            raise UlmfitError(f"unknown {what} format {fmt!r}", hint=f"use one of: {', '.join(formats)}")
        return fmt
    if path == "-":
        return stdio
    suffix = Path(path).suffix.lower()
    if suffix in suffixes:
        return suffixes[suffix]
    if not suffix and bare is not None:
        return bare
    first = {}  # each format's first extension: its usual name
    for ext, f in suffixes.items():
        first.setdefault(f, ext)
    names = "/".join(first.values())
    raise UlmfitError(f"cannot tell the {what} format of {Path(path).name} from its extension",
                      hint=f"name it {names} or pass --{what}-format ({', '.join(formats)})")


def input_format(path: str, fmt: str | None) -> str:
    """The input format: `fmt` if given, else from the extension; stdin and extension-less files are lines."""
    return _resolve_format(path, fmt, "input", IN_FORMATS, _IN_SUFFIX, stdio="lines", bare="lines")


def output_format(path: str, fmt: str | None) -> str:
    """The output format: `fmt` if given, else from the extension; stdout is JSON lines."""
    return _resolve_format(path, fmt, "output", OUT_FORMATS, _OUT_SUFFIX, stdio="jsonl", bare=None)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return v if isinstance(v, str) else str(v)


def iter_texts(f: Iterable[str], fmt: str, *, text_col: str | None, name: str) -> Iterator[str]:
    """The texts of an open text stream, one per input row, in order (nothing read ahead beyond a line)."""
    if fmt == "lines":
        for line in f:
            yield line.rstrip("\r\n")
        return
    if fmt in ("csv", "tsv"):
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        reader = csv.reader(f, delimiter="," if fmt == "csv" else "\t")
        try:
            header = next(reader, None)
            if not header:
                return
            header = [h.strip().lstrip("\ufeff") for h in header]
            idx = [header.index(c) for c in text_columns(header, text_col, name)]
            for row in reader:
                if not row:
                    continue
                yield "\n\n".join(row[i] if i < len(row) else "" for i in idx)
        except csv.Error as e:
            raise UlmfitError(f"cannot parse {name} as {fmt.upper()}: {e}", hint="check the quoting") from None
        return
    if fmt == "jsonl":
        cols: list[str] | None = None
        for n, rec in iter_jsonl(f, name):
            if cols is None:
                cols = text_columns(list(rec), text_col, name)
            missing = [c for c in cols if c not in rec]
            if missing:
                raise UlmfitError(f"{name} line {n} has no {missing[0]!r} field", hint="every line needs the text")
            yield "\n\n".join(_cell(rec[c]) for c in cols)
        return
    raise UlmfitError(f"unknown input format {fmt!r}", hint=f"use one of: {', '.join(IN_FORMATS)}")


def chunks(it: Iterator[str], size: int) -> Iterator[list[str]]:
    buf: list[str] = []
    for t in it:
        buf.append(t)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


class _Writer:
    """Formats prediction rows as CSV or JSONL, by the models' task shape."""

    def __init__(self, f: IO[str], fmt: str, models: list) -> None:
        self.f, self.fmt, self.models = f, fmt, models
        self.labels, self.task = models[0].labels, models[0].task
        if fmt == "csv":
            self.csv = csv.writer(f, lineterminator="\n")
            head = {"single-label": ["label"], "multi-label": ["labels"],
                    "regression": ["value", "bin"] if self.task.bins else ["value"]}[self.task.kind]
            probs = [] if self.task.kind == "regression" else [f"prob_{lab}" for lab in self.labels]
            self.csv.writerow(head + probs)

    def write(self, outputs: np.ndarray) -> None:  # (rows, n_labels), or (rows, 1) values
        from ulmfit.classify.classifier import ensemble_records

        records = ensemble_records(self.models, outputs)
        if self.fmt == "csv":
            if self.task.kind == "regression":
                self.csv.writerows([f"{r['value']:.6g}", *([r["bin"]] if "bin" in r else [])] for r in records)
                return
            first = (lambda r: r["label"]) if self.task.kind == "single-label" else \
                (lambda r: self.task.delimiter.join(r["labels"]))
            self.csv.writerows([first(r), *(f"{p:.6g}" for p in row)] for r, row in zip(records, outputs))
            return
        buf = io.StringIO()
        for r in records:
            if "probs" in r:
                r["probs"] = {lab: round(p, 6) for lab, p in r["probs"].items()}
            buf.write(json.dumps(r, ensure_ascii=False) + "\n")
        self.f.write(buf.getvalue())


@contextlib.contextmanager
def _open_output(path: str) -> Iterator[IO[str]]:
    """stdout for "-"; else a temporary file next to `path`, renamed onto it only when everything is written."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=staging_prefix(target.name), dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; an output is as readable as the user's others
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _Decoded:
    """The lines of a text stream opened with errors="surrogateescape", bytes that are not UTF-8 replaced by U+FFFD
    (ulmfit.data.readers' decoding policy); `bad` tells whether any were."""

    def __init__(self, f: IO[str]) -> None:
        self.f, self.bad = f, False

    def __iter__(self) -> Iterator[str]:
        for line in self.f:
            if not line.isascii() and _ESCAPED.search(line):
                line, _ = decode_bytes(line.encode("utf-8", "surrogateescape"))
                self.bad = True
            yield line


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[IO[str]]:
    if path == "-":
        raw = getattr(sys.stdin, "buffer", None)
        if raw is None:  # already text (an in-memory stream)
            yield sys.stdin
            return
        f = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        try:
            yield f
        finally:
            f.detach()  # leave sys.stdin open
        return
    p = Path(path)
    if not p.is_file():
        raise UlmfitError(f"no such input file: {path}", hint="check the path, or pass --input - for stdin")
    with open(p, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        yield f


def predict_file(models: list[str | Path], input: str | Path, output: str | Path, *, text_col: str | None = None,
                 in_fmt: str | None = None, out_fmt: str | None = None, chunk_size: int = 10_000,
                 bs: int | None = None, device: str | None = None, quantize: bool = False,
                 max_chars: int = MAX_CHARS, overwrite: bool = False,
                 ngram_weight: float | None = None, task: str | None = None) -> PredictResult:
    """Predict a label and per-class probabilities (a label set, or a value, by the models' task shape) for every
    row of `input`, written to `output` in input order. Several models are ensembled (mean of probabilities or
    values); they must share their task shape and label set; `task`, when given, must be theirs.

    Documents longer than `max_chars` characters (0: no limit) are classified from their first `max_chars`, with
    a warning. An existing `output` that is not an earlier prediction file is refused unless `overwrite`; all of
    this is checked before a model is loaded."""
    from ulmfit.classify.classifier import ensemble_proba, load_models

    input, output = str(input), str(output)
    fin, fout = input_format(input, in_fmt), output_format(output, out_fmt)
    if chunk_size < 1:
        raise UlmfitError(f"chunk size must be at least 1, not {chunk_size}")
    check_max_chars(max_chars)
    if output != "-":
        check_output_file(Path(output), option="--output", ours=is_prediction_file, overwrite=overwrite)
    name = "stdin" if input == "-" else Path(input).name
    if input != "-" and not Path(input).is_file():
        raise UlmfitError(f"no such input file: {input}", hint="check the path, or pass --input - for stdin")
    clfs = load_models(list(models), device=device, quantize=quantize, ngram_weight=ngram_weight, task=task)
    labels = clfs[0].labels
    t0 = time.time()
    rows = cut = replaced = 0
    with _open_input(input) as f:
        lines = _Decoded(f)
        texts = chunks(iter_texts(lines, fin, text_col=text_col, name=name), chunk_size)
        first = next(texts, None)
        if first is None:
            raise UlmfitError(f"{name} has no texts to classify", hint="check the file, or --input-format")
        with _open_output(output) as out:
            writer = _Writer(out, fout, clfs)
            bar = progress(_chain(first, texts), desc=f"predict ({chunk_size:,} rows a chunk)", unit="chunk")
            for chunk in bar:
                replaced += count_replaced(lines.bad, chunk)
                chunk, n_cut = clip_texts(chunk, max_chars)
                cut += n_cut
                probs, _ = ensemble_proba(clfs, chunk, bs=bs, max_chars=0)
                writer.write(probs)
                rows += len(chunk)
    warn_not_utf8(name, replaced)
    if cut:
        print(f"warning: {name}: {clipped_message(cut, max_chars)}", file=sys.stderr)
    return PredictResult(rows=rows, output=output, seconds=time.time() - t0, labels=labels)


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest
