"""`export_classifier`: a classifier bundle as a folder that ONNX Runtime runs without torch or fastai.

    export_classifier("models/imdb-clas", "models/imdb-onnx")    # then: OnnxClassifier.load("models/imdb-onnx")

The folder (`ulmfit predict` / `evaluate` take it wherever they take a bundle)::

    export.json          format, labels, task, direction, the classifier config (seq_len, max_len, bs), the
                         encoder's state inputs, calibration temperature, n-gram weight, multi-label thresholds,
                         the parity check's result, versions
    encoder.onnx         one seq_len-token chunk step of the encoder, recurrent state in and out
    head.onnx            pooled features -> class probabilities (a regression's value)
    vocab.json, tokenizer/               as in the bundle
    ngram.json, ngram.safetensors        the n-gram model, when the bundle has one

Two graphs and a loop in numpy, not one graph: fastai's SentenceEncoder lets the batch grow from chunk to chunk
(a document joins when its first real token comes up, from a zero state) and keeps only the last max_len tokens'
outputs. That is a few lines of numpy in `ulmfit.onnx_runtime`, and in ONNX it would be a Loop over a state whose
shape changes. How the graphs are written: `ulmfit.onnx_graphs`.

Nothing is trusted untested: the folder is written into a staging folder, loaded back with `OnnxClassifier`, and
its tokens and probabilities are compared with the torch classifier's (`Classifier.predict_proba`) on the texts of
`texts_file` or on `PARITY_TEXTS` (varied lengths, one longer than max_len). Only when the tokens are equal and the
probabilities agree within `TOLERANCE` does the staging folder replace `out`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulmfit._io import atomic_dir, versions, write_json
from ulmfit.classify.ngram import ARRAYS_FILE as NGRAM_ARRAYS
from ulmfit.classify.ngram import JSON_FILE as NGRAM_FILE
from ulmfit.errors import UlmfitError
from ulmfit.onnx_runtime import FORMAT, FORMAT_VERSION, MANIFEST, OnnxClassifier, is_export

FORMATS = ("onnx",)
TOLERANCE = 1e-4  # largest difference allowed between an export's probabilities and torch's (float32 on both)

# Parity texts when no --texts file is given: lengths from one word to many chunks, capitals, repeats, HTML,
# markup and accents, so the tokenizer rules and every branch of the chunk loop run.
PARITY_TEXTS = [
    "Great!",
    "",
    "It was fine.",
    "I did NOT like this movie at all... the plot was dull and the acting WORSE.",
    "Sooooo good, good good good good!!! 10/10 #recommended",
    "The film&#39;s score &amp; its cinematography<br /><br />are wonderful; the café scenes in Zürich too.",
    ("A slow start, but the second half pays off: the characters grow, the story tightens, and by the end I cared "
     "about every one of them. Not perfect (the dialogue is stiff in places) but well worth two hours."),
]
_LONG = ("The first act sets up the town and its people with patience. Then the story turns, and what seemed a quiet "
         "drama becomes something darker and stranger. Some scenes are brilliant, others drag; the music helps. ")


@dataclass
class ExportResult:
    out: Path
    arch: str            # "awd_lstm" or "qrnn"
    texts: int           # parity texts compared
    max_diff: float      # largest |onnx - torch| difference of their outputs
    seconds: float


def parity_texts(seq_len: int, max_len: int) -> list[str]:
    """PARITY_TEXTS and one text of more words than max_len + 2 chunks: it spans many chunks, and some of its
    chunks fall outside the last max_len tokens (whose outputs are not pooled)."""
    words = len(_LONG.split())
    return PARITY_TEXTS + [_LONG * (-(-(max_len + 2 * seq_len) // words) + 1)]


def export_classifier(bundle: str | Path, out: str | Path, *, fmt: str = "onnx", texts_file: str | Path | None = None,
                      overwrite: bool = False, log: Callable[[str], None] = print) -> ExportResult:
    """Write the classifier bundle (or run dir) `bundle` as an ONNX export folder `out`, checked against torch.

    `out` may be missing, empty or an earlier export; any other folder is refused unless `overwrite` (then it is
    replaced, with everything in it). Nothing is written when the check fails."""
    t0 = time.time()
    if fmt not in FORMATS:
        raise UlmfitError(f"unknown export format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    from ulmfit.bundle import resolve_bundle

    src = resolve_bundle(bundle)
    out = Path(out)
    _check_out(out, src, overwrite)
    texts = _read_texts(Path(texts_file)) if texts_file is not None else None
    _check_runtime()

    from ulmfit.classify.classifier import Classifier  # torch and fastai: after the arguments are known good
    from ulmfit.lm.model import arch_name

    clf = Classifier.load(src, device="cpu")
    arch = arch_name(clf.arch)
    if texts is None:
        texts = parity_texts(clf.config.seq_len, clf.config.max_len)
    log(f"exporting {src} ({arch}, {clf.direction}, {len(clf.labels)} labels) to {out}")
    with atomic_dir(out) as stage:
        manifest = _write(clf, src, stage)
        diff = _check_parity(clf, OnnxClassifier.load(stage), texts)
        manifest["parity"] = {"texts": len(texts), "max_abs_diff": diff, "tolerance": TOLERANCE}
        write_json(stage / MANIFEST, manifest)
    return ExportResult(out=out, arch=arch, texts=len(texts), max_diff=diff, seconds=time.time() - t0)


def _check_out(out: Path, src: Path, overwrite: bool) -> None:
    """`out` can be written, is not the bundle (or a folder holding it), and holds nothing we would destroy."""
    if out.exists() and not out.is_dir():
        raise UlmfitError(f"--out {out} is a file, not a folder", hint="name a folder for the export")
    here, bundle = out.resolve(), src.resolve()
    if here == bundle or here in bundle.parents:
        raise UlmfitError(f"--out {out} holds the bundle being exported", hint="choose another --out folder")
    if out.is_dir() and any(out.iterdir()) and not is_export(out) and not overwrite:
        raise UlmfitError(f"--out {out} already holds files that are not an ONNX export",
                          hint="pass --overwrite to replace that folder and everything in it, or choose another --out")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:  # missing folders are created when the export is written
        parent = parent.parent
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise UlmfitError(f"--out {out} cannot be written: {parent} is not writable ({e.strerror})",
                          hint="choose an --out folder you can write to") from None


def _read_texts(path: Path) -> list[str]:
    """One parity text per non-empty line."""
    if not path.is_file():
        raise UlmfitError(f"no such --texts file: {path}", hint="a plain text file, one text per line")
    with open(path, encoding="utf-8", errors="replace") as f:  # lines as `ulmfit predict` reads a plain file
        texts = [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise UlmfitError(f"--texts {path} has no texts", hint="a plain text file, one text per line")
    return texts


def _check_runtime() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise UlmfitError(f"exporting to ONNX needs {e.name}", hint="pip install 'ulmfit[export]'") from None


def _write(clf, src: Path, stage: Path) -> dict:
    """The export folder's files in `stage`; returns the manifest written there."""
    from importlib import metadata

    import onnx

    from ulmfit.classify.artifact import portable
    from ulmfit.classify.model import encoder_module
    from ulmfit.lm.model import arch_name
    from ulmfit.onnx_graphs import encoder_graph, head_graph

    encoder = encoder_module(clf.model)
    enc, states = encoder_graph(encoder)
    onnx.save_model(enc, str(stage / "encoder.onnx"))
    onnx.save_model(head_graph(clf.model[1], 3 * encoder.emb_sz, clf.task.activation), str(stage / "head.onnx"))
    clf.vocab.save(stage / "vocab.json")
    clf.tokenizer.save(stage / "tokenizer")
    if clf.ngram is not None:
        for name in (NGRAM_FILE, NGRAM_ARRAYS):
            shutil.copyfile(src / name, stage / name)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "labels": clf.labels, "task": clf.task.to_dict(), "direction": clf.direction, "arch": clf.arch,
        "classifier": clf.config.to_dict(), "temperature": clf.temperature, "ngram_weight": clf.ngram_weight,
        "thresholds": clf.part_thresholds,  # multi-label: tuned per label for the output, the neural model, n-gram
        "encoder": {"file": "encoder.onnx", "arch": arch_name(clf.arch), "state": [s.to_dict() for s in states]},
        "head": {"file": "head.onnx"},
        "source": portable(src),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {**versions(), **{p: metadata.version(p) for p in ("onnx", "onnxruntime")}},
    }
    write_json(stage / MANIFEST, manifest)
    return manifest


def _check_parity(clf, exported: OnnxClassifier, texts: list[str]) -> float:
    """The largest probability difference between the export and torch on `texts` (neural part and the
    output), after checking that both tokenize them alike; a UlmfitError past TOLERANCE."""
    for k, (a, b) in enumerate(zip(clf.numericalize(texts), exported.numericalize(texts))):
        if not np.array_equal(a, b):
            raise UlmfitError(f"the export's tokenizer splits parity text {k + 1} differently from the bundle's",
                              hint="the fastai text rules copied in ulmfit.onnx_tokenizer differ from the "
                                   "installed fastai's; nothing was written")
    from ulmfit.classify.ngram import mix

    torch_parts = clf.predict_parts(texts, max_chars=0)
    onnx_parts = exported.predict_parts(texts, max_chars=0)
    diffs = [np.abs(a - b).max() for a, b in zip(torch_parts, onnx_parts) if a is not None]
    diffs.append(np.abs(mix(*torch_parts, clf.ngram_weight) - mix(*onnx_parts, exported.ngram_weight)).max())
    # a regression's values are in the target's units: compare them in the network's (standardised) ones
    diff = float(max(diffs)) / (clf.task.std if clf.task.kind == "regression" else 1.0)
    if not diff <= TOLERANCE:  # nan fails too
        raise UlmfitError(f"the ONNX export's outputs differ from torch's by up to {diff:.2e} "
                          f"(tolerance {TOLERANCE:g}); nothing was written",
                          hint="report this with the bundle's config.json; `ulmfit predict` on the bundle still works")
    return diff
