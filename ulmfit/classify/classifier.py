"""`Classifier`: a trained classifier bundle, ready to label texts.

    clf = Classifier.load("models/imdb-clas")        # a bundle dir, or a run dir (-> model-best)
    clf.predict(["A gem.", "Two hours I want back."])
    # [{"label": "pos", "probs": {"neg": 0.03, "pos": 0.97}}, {"label": "neg", "probs": {...}}]
    clf.predict_proba(texts)                         # (n, n_labels) float32, columns in clf.labels order

A text longer than `max_chars` characters (default MAX_CHARS, 100,000; 0: no limit) is classified from its first
`max_chars` characters, with a UserWarning saying how many were cut: time per text is linear in its length, and
the limit bounds it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit.classify.config import ClassifierConfig, config_from_dict
from ulmfit.classify.predict import MAX_CHARS, check_max_chars, clip_texts, clipped_message
from ulmfit.errors import UlmfitError


class Classifier:
    """A classifier ready for prediction: tokenizer, vocab, labels and the network (eval mode)."""

    def __init__(self, model, *, tokenizer, vocab, labels: list[str], config: ClassifierConfig,
                 arch: dict[str, Any], direction: str = "forward", path: Path | None = None, device=None,
                 quantized: bool = False, temperature: float = 1.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.labels = list(labels)
        self.config = config
        self.arch = arch
        self.direction = direction
        self.path = path
        self.device = device
        self.quantized = quantized
        self.temperature = temperature  # fitted on the valid split by `ulmfit classify` (1: none)

    @property
    def backwards(self) -> bool:
        return self.direction == "backward"

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, quantize: bool = False) -> Classifier:
        """Open a classifier bundle (or a `ulmfit classify` run dir). `quantize`: int8 dynamic quantization of
        the LSTM and Linear layers for faster CPU inference (slightly different probabilities)."""
        from ulmfit.bundle import read_bundle
        from ulmfit.classify.model import build_model, inference_model, load_state
        from ulmfit.runtime import resolve_device, set_threads as _set_threads

        _set_threads()  # ULMFIT_THREADS caps torch's threads, as for every other command
        b = read_bundle(path, stage="classifier")
        labels = b.labels
        if not labels or not isinstance(labels, list):
            raise UlmfitError(f"{b.path}/meta.json lists no labels", hint="the bundle is damaged; train again")
        cfg_dict = b.config.get("classifier")
        if not isinstance(cfg_dict, dict):
            raise UlmfitError(f"{b.path}/config.json has no classifier config", hint="the bundle is damaged")
        cfg = config_from_dict(cfg_dict)
        vocab, tokenizer = b.vocab, b.tokenizer
        arch = b.arch
        dev = resolve_device(device)
        if quantize and dev.type != "cpu":
            raise UlmfitError("int8 quantization runs on the CPU only", hint="use --device cpu with --int8")
        if arch.get("vocab_size", len(vocab.itos)) != len(vocab.itos):
            raise UlmfitError(f"{b.path}: vocab.json has {len(vocab.itos)} tokens but the model was built for "
                              f"{arch['vocab_size']}", hint="the bundle is damaged; train again")
        model = build_model(len(vocab.itos), len(labels), arch, cfg, pad_idx=vocab.pad_id)
        load_state(model, b.load_state("model"))
        model = inference_model(model.to(dev), quantize=quantize)
        temperature = float((b.meta.get("calibration") or {}).get("temperature", 1.0))  # older bundles: none
        if not temperature > 0:
            raise UlmfitError(f"{b.path}/meta.json has a bad calibration temperature {temperature}",
                              hint="the bundle is damaged; train again")
        return cls(model, tokenizer=tokenizer, vocab=vocab, labels=labels, config=cfg, arch=arch,
                   direction=b.direction, path=b.path, device=dev, quantized=quantize, temperature=temperature)

    # ------------------------------------------------------------------------------------------ predict

    def numericalize(self, texts: Iterable[str]) -> list[np.ndarray]:
        """Token ids of each text, exactly as the training data was numericalized (same tokenizer + vocab)."""
        return [np.asarray(self.vocab.encode(toks), dtype=np.int64) for toks in self.tokenizer.tokenize(texts)]

    def predict_proba(self, texts: str | Iterable[str], *, bs: int | None = None, progress: bool = False,
                      max_chars: int = MAX_CHARS) -> np.ndarray:
        """(n_texts, n_labels) float32 probabilities, rows in input order, columns in `self.labels` order.
        Texts longer than `max_chars` characters (0: no limit) are classified from their first `max_chars`."""
        from ulmfit.classify.metrics import temperature_scale
        from ulmfit.classify.model import predict_ids

        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise UlmfitError("there are no texts to classify", hint="pass at least one text")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise UlmfitError(f"text {bad} is a {type(texts[bad]).__name__}, not a string")
        texts = _clip(texts, max_chars)
        docs = self.numericalize(texts)
        probs = predict_ids(self.model, docs, bs=bs or max(self.config.bs, 64), pad_idx=self.vocab.pad_id,
                            bptt=self.config.bptt, backwards=self.backwards, bos_idx=self.vocab.bos_id,
                            device=self.device, progress_desc="predict" if progress else None)
        return temperature_scale(probs, self.temperature)

    def predict(self, texts: str | Iterable[str], *, bs: int | None = None,
                max_chars: int = MAX_CHARS) -> list[dict[str, Any]]:
        """One {"label": best label, "probs": {label: probability}} per text, in input order."""
        return probs_to_records(self.predict_proba(texts, bs=bs, max_chars=max_chars), self.labels)

    def __repr__(self) -> str:
        where = self.path.name if self.path else "?"
        return (f"Classifier({where}: {len(self.labels)} labels {self.labels[:5]}, {self.direction}, "
                f"vocab {len(self.vocab.itos)}{', int8' if self.quantized else ''})")


def _clip(texts: list, max_chars: int) -> list:
    """`clip_texts` for the Python API: a UserWarning (shown once per call site by default) counts the cuts."""
    check_max_chars(max_chars)
    texts, cut = clip_texts(texts, max_chars)
    if cut:
        warnings.warn(clipped_message(cut, max_chars, how="max_chars=0"), stacklevel=3)
    return texts


def probs_to_records(probs: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    best = probs.argmax(axis=1)
    return [{"label": labels[int(b)], "probs": {lab: float(p) for lab, p in zip(labels, row)}}
            for b, row in zip(best, probs)]


def load_models(paths: list[str | Path], *, device: str | None = None, quantize: bool = False) -> list[Classifier]:
    """Several classifiers meant to be used together: all must predict the same label set."""
    if not paths:
        raise UlmfitError("no model given", hint="pass one or more classifier directories")
    models = [Classifier.load(p, device=device, quantize=quantize) for p in paths]
    first = models[0]
    for m in models[1:]:
        if sorted(m.labels) != sorted(first.labels):
            raise UlmfitError(f"{m.path} predicts labels {m.labels} but {first.path} predicts {first.labels}",
                              hint="models can only be ensembled when they were trained on the same labels")
    return models


def ensemble_proba(models: list[Classifier], texts: list[str], *, bs: int | None = None, progress: bool = False,
                   max_chars: int = MAX_CHARS) -> tuple[np.ndarray, list[np.ndarray]]:
    """(mean probabilities, each model's probabilities), columns in the first model's label order. Texts longer
    than `max_chars` characters (0: no limit) are classified from their first `max_chars`."""
    labels = models[0].labels
    texts = _clip(list(texts), max_chars)  # once here, not once per model
    each = []
    for m in models:
        p = m.predict_proba(texts, bs=bs, progress=progress, max_chars=0)
        if m.labels != labels:  # same set, other order: reorder columns
            p = p[:, [m.labels.index(lab) for lab in labels]]
        each.append(p)
    return np.mean(each, axis=0).astype(np.float32), each
