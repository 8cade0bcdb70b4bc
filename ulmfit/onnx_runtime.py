"""`OnnxClassifier`: an `ulmfit export` folder on ONNX Runtime, with `Classifier`'s prediction interface and its
outputs, and neither torch nor fastai imported (numpy, onnxruntime, and spaCy or sentencepiece for the tokens).

    clf = OnnxClassifier.load("models/imdb-onnx")
    clf.predict_proba(["A gem.", "Two hours I want back."])   # (n, n_labels) float32, columns in clf.labels order

`ulmfit predict` and `ulmfit evaluate` take an export folder wherever they take a bundle.

What `Classifier.predict_proba` computes, step by step (`ulmfit.classify.model.predict_ids` and fastai's
SentenceEncoder / masked_concat_pool), reproduced here around the two graphs of `ulmfit.onnx_graphs`:

1. tokens -> ids with the bundle's vocab, reversed for a backward model; an empty document becomes [xxbos];
2. documents sorted longest first, batched, padded by `pad_batch` (whole chunks of padding before the text);
3. per seq_len-token chunk: the rows whose chunk starts with a real token run through encoder.onnx, carrying their
   state; rows that join start from zeros, rows beyond them get zero outputs; only chunks within the last max_len
   tokens are kept;
4. concat pooling over the kept outputs, padding masked: [output at the last real token, max, mean];
5. head.onnx -> probabilities (or a regression's value); `Task.outputs`; temperature scaling (single-label); the
   n-gram model mixed in with the bundle's weight.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit._io import progress as progress_bar
from ulmfit._io import read_json
from ulmfit.classify.config import ClassifierConfig, config_from_dict
from ulmfit.classify.model import pad_batch
from ulmfit.classify.ngram import JSON_FILE as NGRAM_FILE
from ulmfit.classify.ngram import NgramModel, mix
from ulmfit.classify.predict import (
    MAX_CHARS,
)
from ulmfit.classify.task import Task
from ulmfit.errors import UlmfitError
from ulmfit.onnx_tokenizer import PortableTokenizer
from ulmfit.tokenize.vocab import Vocab

MANIFEST = "export.json"  # marks an export folder and holds everything besides the graphs, vocab and tokenizer
FORMAT = "ulmfit-onnx-classifier"
FORMAT_VERSION = 1


def is_export(path: str | Path) -> bool:
    """Whether `path` is a folder written by `ulmfit export`."""
    return (Path(path) / MANIFEST).is_file()


class OnnxClassifier:
    """An exported classifier ready for prediction: tokenizer, vocab, labels, the two ONNX sessions."""

    def __init__(self, path: Path, manifest: dict[str, Any], *, ngram: NgramModel | None,
                 ngram_weight: float) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.manifest = manifest
        self.labels: list[str] = list(manifest["labels"])
        self.task = Task.from_dict(manifest.get("task"), self.labels)
        self.direction: str = manifest["direction"]
        self.config: ClassifierConfig = config_from_dict(manifest["classifier"])
        self.arch: dict[str, Any] = manifest["arch"]
        self.temperature = float(manifest["temperature"])
        self.ngram = ngram
        self.ngram_weight = ngram_weight if ngram is not None else 0.0
        self.device, self.quantized = "cpu", False  # what `serve`'s /info reports of a Classifier
        # multi-label decision thresholds tuned at training, as Classifier.load picks them for the n-gram weight
        self.part_thresholds = manifest.get("thresholds") or {"shipped": None, "neural": None, "ngram": None}
        pick = "neural" if self.ngram_weight == 0 else "ngram" if self.ngram_weight == 1 else "shipped"
        self.thresholds = self.part_thresholds[pick]
        self.vocab = Vocab.load(self.path / "vocab.json")
        self.tokenizer = PortableTokenizer.load(self.path / "tokenizer")
        enc = manifest["encoder"]
        self._states = enc["state"]  # [{"name", "shape" (-1: batch), "batch_axis"}], the graph's state inputs
        opts = ort.SessionOptions()
        threads = os.environ.get("ULMFIT_THREADS")  # the cap every other command applies to torch
        if threads:
            try:
                opts.intra_op_num_threads = max(1, int(threads))
            except ValueError:
                raise UlmfitError(f"ULMFIT_THREADS={threads!r} is not a number") from None
        opts.inter_op_num_threads = 1
        self._encoder = _session(ort, self.path / enc["file"], opts)
        self._head = _session(ort, self.path / manifest["head"]["file"], opts)

    @property
    def backwards(self) -> bool:
        return self.direction == "backward"

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, quantize: bool = False,
             ngram_weight: float | None = None) -> OnnxClassifier:
        """Open an export folder; the arguments are `Classifier.load`'s. ONNX Runtime runs it on the CPU, in
        float32: `device` may only be cpu, and `quantize` is refused."""
        path = Path(path)
        if device not in (None, "cpu"):
            raise UlmfitError(f"{path} is an ONNX export, which runs on the CPU, not on {device}",
                              hint="drop --device, or pass the classifier bundle it was exported from")
        if quantize:
            raise UlmfitError(f"{path} is an ONNX export; int8 quantization applies to torch bundles only",
                              hint="drop --int8, or pass the classifier bundle it was exported from")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UlmfitError(f"{path} is an ONNX export, and running it needs onnxruntime",
                              hint="pip install 'ulmfit[export]' (or just onnxruntime)") from None
        try:
            manifest = read_json(path / MANIFEST)
        except (OSError, ValueError) as e:
            raise UlmfitError(f"cannot read {path / MANIFEST}: {e}", hint="the export is damaged; export again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise UlmfitError(f"{path / MANIFEST} is not a version {FORMAT_VERSION} ulmfit ONNX export",
                              hint="export the classifier bundle again with this version of ulmfit")
        ngram, weight = _ngram_part(path, manifest, ngram_weight)
        return cls(path, manifest, ngram=ngram, ngram_weight=weight)

    # ------------------------------------------------------------------------------------------ predict

    def numericalize(self, texts: Iterable[str]) -> list[np.ndarray]:
        return [np.asarray(self.vocab.encode(toks), dtype=np.int64) for toks in self.tokenizer.tokenize(texts)]

    def predict_proba(self, texts: str | Iterable[str], *, bs: int | None = None, progress: bool = False,
                      max_chars: int = MAX_CHARS) -> np.ndarray:
        """As `Classifier.predict_proba`: (n_texts, n_labels) float32 probabilities (values for a regression),
        the n-gram model mixed in."""
        neural, ngram = self.predict_parts(texts, bs=bs, progress=progress, max_chars=max_chars)
        return mix(neural, ngram, self.ngram_weight).astype(np.float32)

    def predict_parts(self, texts: str | Iterable[str], *, bs: int | None = None, progress: bool = False,
                      max_chars: int = MAX_CHARS) -> tuple[np.ndarray, np.ndarray | None]:
        """(the neural model's probabilities, the n-gram model's or None), as `Classifier.predict_parts`."""
        from ulmfit.classify.classifier import predict_parts

        return predict_parts(self, texts, lambda docs, bs, progress: self.predict_ids(docs, bs=bs, progress=progress),
                             bs=bs, progress=progress, max_chars=max_chars)

    def predict(self, texts: str | Iterable[str], *, bs: int | None = None,
                max_chars: int = MAX_CHARS) -> list[dict[str, Any]]:
        """One dict per text, in input order, as `Classifier.predict`."""
        return self.task.records(self.predict_proba(texts, bs=bs, max_chars=max_chars), self.thresholds)

    def predict_ids(self, docs: list[np.ndarray], *, bs: int, progress: bool = False) -> np.ndarray:
        """The network's activated outputs (n_docs, n_out) float32 for numericalized documents, in the order
        given; `predict_ids` of ulmfit.classify.model, step for step."""
        pad, bos = self.vocab.pad_id, self.vocab.bos_id
        docs = [d[::-1] if self.backwards else d for d in docs]
        docs = [d if len(d) else np.array([bos], dtype=np.int64) for d in docs]
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        order = np.argsort(-lengths, kind="stable")  # longest first, as SentenceEncoder needs
        out = np.empty((len(docs), self.task.n_out), dtype=np.float32)
        starts = range(0, len(docs), bs)
        if progress:
            starts = progress_bar(starts, total=(len(docs) + bs - 1) // bs, desc="predict", unit="batch")
        for s in starts:
            idx = order[s:s + bs]
            x = pad_batch([docs[i] for i in idx], pad, self.config.seq_len)
            outputs, mask = self._encode(x)
            out[idx] = self._head.run(None, {"features": masked_concat_pool(outputs, mask, self.config.seq_len)})[0]
        return out

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """fastai's SentenceEncoder.forward on a padded batch (bs, sl): the kept outputs (bs, kept, emb_sz) and
        their padding mask."""
        bs, sl = x.shape
        seq_len, max_len, pad = self.config.seq_len, self.config.max_len, self.vocab.pad_id
        mask = x == pad
        states = [np.zeros([max(d, 0) for d in s["shape"]], dtype=np.float32) for s in self._states]  # 0 rows
        outs, masks = [], []
        for i in range(0, sl, seq_len):
            real_bs = int((x[:, i] != pad).sum())  # the rows that have started (sorted longest first)
            states = [_resize(st, real_bs, s["batch_axis"]) for st, s in zip(states, self._states)]
            feed = {"ids": np.ascontiguousarray(x[:real_bs, i:i + seq_len])}
            feed.update((s["name"], st) for s, st in zip(self._states, states))
            o, *states = self._encoder.run(None, feed)                    # o: (real_bs, chunk, emb_sz)
            if sl - i <= max_len:
                full = np.zeros((bs, *o.shape[1:]), dtype=np.float32)  # fastai's _pad_tensor
                full[:real_bs] = o
                outs.append(full)
                masks.append(mask[:, i:i + seq_len])
        return np.concatenate(outs, axis=1), np.concatenate(masks, axis=1)

    def __repr__(self) -> str:
        return (f"OnnxClassifier({self.path.name}: {self.task.kind}, {len(self.labels)} labels {self.labels[:5]}, "
                f"{self.direction}, vocab {len(self.vocab.itos)})")


def _session(ort, path: Path, opts):
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types (NoSuchFile, InvalidProtobuf, Fail, ...)
        raise UlmfitError(f"cannot load {path}: {type(e).__name__}: {str(e).strip().splitlines()[0]}",
                          hint="the export is damaged or incomplete; export the bundle again") from e


def _resize(state: np.ndarray, rows: int, axis: int) -> np.ndarray:
    """AWD_LSTM._change_hidden: fewer rows keep the first ones' state; new rows start from zeros."""
    have = state.shape[axis]
    if have >= rows:
        return np.ascontiguousarray(np.take(state, np.arange(rows), axis=axis))
    shape = list(state.shape)
    shape[axis] = rows - have
    return np.concatenate([state, np.zeros(shape, dtype=state.dtype)], axis=axis)


def masked_concat_pool(output: np.ndarray, mask: np.ndarray, seq_len: int) -> np.ndarray:
    """fastai's masked_concat_pool: [output at the last real token, max, mean] over unmasked positions,
    (bs, sl, n) -> (bs, 3n)."""
    lens = output.shape[1] - mask.sum(axis=1)
    last_lens = mask[:, -seq_len:].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # an all-padding row is nan, as in torch
        avg_pool = np.where(mask[:, :, None], 0, output).sum(axis=1) / lens[:, None].astype(np.float32)
    max_pool = np.where(mask[:, :, None], -np.inf, output).max(axis=1)
    last = output[np.arange(output.shape[0]), output.shape[1] - last_lens - 1]
    return np.concatenate([last, max_pool, avg_pool], axis=1).astype(np.float32)


def _ngram_part(path: Path, manifest: dict[str, Any], weight: float | None) -> tuple[NgramModel | None, float]:
    """The export's n-gram model and its weight (the one chosen at training unless `weight` is given)."""
    has = (path / NGRAM_FILE).is_file()
    if weight is not None and not 0 <= weight <= 1:
        raise UlmfitError(f"--ngram-weight must be in [0, 1], not {weight}", hint="0 uses the neural model alone")
    if weight and not has:
        raise UlmfitError(f"{path} has no n-gram model, so an n-gram weight of {weight:g} cannot apply",
                          hint="its bundle was trained with ngram off: use --ngram-weight 0")
    if weight is None:
        weight = float(manifest.get("ngram_weight", 0.0))
    return (NgramModel.load(path) if has else None), weight
