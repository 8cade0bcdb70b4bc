"""`Classifier`: a trained classifier bundle, ready to label texts.

    clf = Classifier.load("models/imdb-clas")        # a bundle dir, or a run dir (-> model-best)
    clf.predict(["A gem.", "Two hours I want back."])
    # [{"label": "pos", "probs": {"neg": 0.03, "pos": 0.97}}, {"label": "neg", "probs": {...}}]
    clf.predict_proba(texts)                         # (n, n_labels) float32, columns in clf.labels order

A bundle trained with the n-gram baseline (`ulmfit.classify.ngram`) carries its weight in meta.json; predictions
are then (1-w) x neural + w x n-gram (`ngram_weight` overrides w; 0: the neural model alone).

A text longer than `max_chars` characters (default MAX_CHARS, 100,000; 0: no limit) is classified from its first
`max_chars` characters, with a UserWarning saying how many were cut: time per text is linear in its length, and
the limit bounds it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit.bundle import read_bundle
from ulmfit.classify.config import ClassifierConfig, config_from_dict
from ulmfit.classify.metrics import temperature_scale
from ulmfit.classify.model import build_model, inference_model, load_state, predict_ids
from ulmfit.classify.ngram import JSON_FILE as NGRAM_FILE
from ulmfit.classify.ngram import NgramModel, mix
from ulmfit.classify.predict import (
    MAX_CHARS,
    check_max_chars,
    clip_texts,
    clipped_message,
)
from ulmfit.classify.task import TASKS, Task
from ulmfit.errors import UlmfitError
from ulmfit.runtime import resolve_device, set_threads


class Classifier:
    """A classifier ready for prediction: tokenizer, vocab, labels and the network (eval mode)."""

    def __init__(self, model, *, tokenizer, vocab, labels: list[str], config: ClassifierConfig,
                 arch: dict[str, Any], direction: str = "forward", path: Path | None = None, device=None,
                 quantized: bool = False, temperature: float = 1.0, ngram: NgramModel | None = None,
                 ngram_weight: float = 0.0, task: Task | None = None, thresholds: list[float] | None = None,
                 part_thresholds: dict[str, list[float] | None] | None = None) -> None:
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
        self.ngram = ngram  # the bag-of-n-grams baseline fitted on the same training split, if the bundle has it
        self.ngram_weight = ngram_weight if ngram is not None else 0.0
        self.task = task or Task(kind="single-label", labels=list(labels))
        self.thresholds = thresholds  # multi-label: each label's decision threshold, tuned on the valid split
        # multi-label: the thresholds tuned for each part alone ("neural", "ngram") and for the shipped mix
        self.part_thresholds = part_thresholds or {"shipped": thresholds, "neural": thresholds, "ngram": thresholds}

    @property
    def backwards(self) -> bool:
        return self.direction == "backward"

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, quantize: bool = False,
             ngram_weight: float | None = None) -> Classifier:
        """Open a classifier bundle (or a `ulmfit classify` run dir). `quantize`: int8 dynamic quantization of
        the LSTM and Linear layers for faster CPU inference (slightly different probabilities). `ngram_weight`:
        the n-gram model's weight in the output instead of the one chosen at training (0: neural alone)."""
        set_threads()  # ULMFIT_THREADS caps torch's threads, as for every other command
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
        task = Task.from_dict(b.config.get("task"), labels)
        model = build_model(len(vocab.itos), task.n_out, arch, cfg, pad_idx=vocab.pad_id)
        load_state(model, b.load_state("model"))
        model = inference_model(model.to(dev), quantize=quantize)
        temperature = float((b.meta.get("calibration") or {}).get("temperature", 1.0))  # older bundles: none
        if not temperature > 0:
            raise UlmfitError(f"{b.path}/meta.json has a bad calibration temperature {temperature}",
                              hint="the bundle is damaged; train again")
        ngram, weight = _ngram_part(b, ngram_weight)
        parts = _thresholds(b.meta, task, labels)
        thresholds = parts["neural"] if weight == 0 else parts["ngram"] if weight == 1 else parts["shipped"]
        return cls(model, tokenizer=tokenizer, vocab=vocab, labels=labels, config=cfg, arch=arch,
                   direction=b.direction, path=b.path, device=dev, quantized=quantize, temperature=temperature,
                   ngram=ngram, ngram_weight=weight, task=task, thresholds=thresholds, part_thresholds=parts)

    # ------------------------------------------------------------------------------------------ predict

    def numericalize(self, texts: Iterable[str]) -> list[np.ndarray]:
        """Token ids of each text, exactly as the training data was numericalized (same tokenizer + vocab)."""
        return [np.asarray(self.vocab.encode(toks), dtype=np.int64) for toks in self.tokenizer.tokenize(texts)]

    def predict_proba(self, texts: str | Iterable[str], *, bs: int | None = None, progress: bool = False,
                      max_chars: int = MAX_CHARS) -> np.ndarray:
        """(n_texts, n_labels) float32 probabilities, rows in input order, columns in `self.labels` order: the
        neural model's, mixed with the n-gram model's when `ngram_weight` > 0. A multi-label classifier gives each
        label's own probability (rows need not sum to 1); a regression gives (n_texts, 1) values in the target's
        units. Texts longer than `max_chars` characters (0: no limit) are classified from their first
        `max_chars`."""
        neural, ngram = self.predict_parts(texts, bs=bs, progress=progress, max_chars=max_chars)
        return mix(neural, ngram, self.ngram_weight).astype(np.float32)

    def predict_parts(self, texts: str | Iterable[str], *, bs: int | None = None, progress: bool = False,
                      max_chars: int = MAX_CHARS) -> tuple[np.ndarray, np.ndarray | None]:
        """(the neural model's probabilities, the n-gram model's or None), both as `predict_proba`'s."""
        def run(docs: list[np.ndarray], bs: int, progress: bool) -> np.ndarray:
            return predict_ids(self.model, docs, bs=bs, pad_idx=self.vocab.pad_id, seq_len=self.config.seq_len,
                               backwards=self.backwards, bos_idx=self.vocab.bos_id, device=self.device,
                               progress_desc="predict" if progress else None, activation=self.task.activation)

        return predict_parts(self, texts, run, bs=bs, progress=progress, max_chars=max_chars)

    def predict(self, texts: str | Iterable[str], *, bs: int | None = None,
                max_chars: int = MAX_CHARS) -> list[dict[str, Any]]:
        """One dict per text, in input order: {"label": best label, "probs": {label: probability}}; for a
        multi-label classifier {"labels": [labels at or above their threshold], "probs": {...}}; for a regression
        {"value": number}."""
        return self.task.records(self.predict_proba(texts, bs=bs, max_chars=max_chars), self.thresholds)

    def __repr__(self) -> str:
        where = self.path.name if self.path else "?"
        return (f"Classifier({where}: {self.task.kind}, {len(self.labels)} labels {self.labels[:5]}, {self.direction}, "
                f"vocab {len(self.vocab.itos)}{', int8' if self.quantized else ''})")


def _thresholds(meta: dict, task: Task, labels: list[str]) -> dict[str, list[float] | None]:
    """The decisions tuned at training (multi-label thresholds, a regression's bin cut points) for what predict
    outputs ("shipped"), the neural model alone and the n-gram model alone (an explicit --ngram-weight between 0
    and 1 uses the shipped ones)."""
    if not task.tuned:
        return {"shipped": None, "neural": None, "ngram": None}
    default = [0.5] * len(labels) if task.kind == "multi-label" else list(task.bins)

    def ok(t):  # a bundle without tuned decisions (e.g. written by a test): 0.5, or the bin edges
        return t if isinstance(t, list) and len(t) == len(default) else default

    shipped = ok(meta.get("thresholds"))
    neural = ok(meta.get("neural_thresholds") or shipped)
    return {"shipped": shipped, "neural": neural, "ngram": ok((meta.get("ngram") or {}).get("thresholds") or shipped)}


def _ngram_part(b, weight: float | None) -> tuple[NgramModel | None, float]:
    """The bundle's n-gram model and its weight (the one chosen at training unless `weight` is given)."""
    has = (b.path / NGRAM_FILE).is_file()
    if weight is not None and not 0 <= weight <= 1:
        raise UlmfitError(f"--ngram-weight must be in [0, 1], not {weight}", hint="0 uses the neural model alone")
    if weight and not has:
        raise UlmfitError(f"{b.path} has no n-gram model, so an n-gram weight of {weight:g} cannot apply",
                          hint="it was trained with ngram off or before bundles carried one: use --ngram-weight 0")
    if weight is None:
        weight = float((b.meta.get("ngram") or {}).get("weight", 0.0))
    return (NgramModel.load(b.path) if has else None), weight


def predict_parts(clf, texts: str | Iterable[str], run: Callable[[list[np.ndarray], int, bool], np.ndarray], *,
                  bs: int | None, progress: bool, max_chars: int) -> tuple[np.ndarray, np.ndarray | None]:
    """What `predict_parts` of a Classifier (or of an ONNX export, `ulmfit.onnx_runtime`) returns: the texts
    checked and cut to `max_chars`, numericalized, run through the network by `run(docs, bs, progress)`, turned
    into the task's outputs (temperature-scaled, single-label), and the n-gram model's outputs or None."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise UlmfitError("there are no texts to classify", hint="pass at least one text")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise UlmfitError(f"text {bad} is a {type(texts[bad]).__name__}, not a string")
    texts = _clip(texts, max_chars)
    neural = clf.task.outputs(run(clf.numericalize(texts), bs or max(clf.config.bs, 64), progress))
    if clf.task.kind == "single-label":
        neural = temperature_scale(neural, clf.temperature)
    return neural, (clf.ngram.predict_proba(texts) if clf.ngram is not None else None)


def _clip(texts: list, max_chars: int) -> list:
    """`clip_texts` for the Python API: a UserWarning (shown once per call site by default) counts the cuts."""
    check_max_chars(max_chars)
    texts, cut = clip_texts(texts, max_chars)
    if cut:
        warnings.warn(clipped_message(cut, max_chars, how="max_chars=0"), stacklevel=4)
    return texts


def probs_to_records(probs: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    best = probs.argmax(axis=1)
    return [{"label": labels[int(b)], "probs": {lab: float(p) for lab, p in zip(labels, row)}}
            for b, row in zip(best, probs)]


def load_models(paths: list[str | Path], *, device: str | None = None, quantize: bool = False,
                ngram_weight: float | None = None, task: str | None = None) -> list[Classifier]:
    """Several classifiers meant to be used together: all must have the same task shape and label set (and
    `task`, when given)."""
    if not paths:
        raise UlmfitError("no model given", hint="pass one or more classifier directories")
    if task is not None and task not in TASKS:
        raise UlmfitError(f"unknown task {task!r}", hint=f"use one of: {', '.join(TASKS)}")
    from ulmfit.onnx_runtime import (  # `ulmfit export` folders: same interface, no torch
        OnnxClassifier,
        is_export,
    )

    models = [(OnnxClassifier if is_export(p) else Classifier).load(p, device=device, quantize=quantize,
                                                                    ngram_weight=ngram_weight) for p in paths]
    first = models[0]

    def kind(m) -> str:  # an exported model without task shapes is single-label
        return getattr(getattr(m, "task", None), "kind", "single-label")

    for m in models:
        if task is not None and kind(m) != task:
            raise UlmfitError(f"{m.path} is a {kind(m)} model, not {task}",
                              hint=f"drop --task, or pass a {task} model")
        if kind(m) != kind(first):
            raise UlmfitError(f"{m.path} is a {kind(m)} model but {first.path} is {kind(first)}",
                              hint="only models of the same task shape can be ensembled")
    for m in models[1:]:
        if kind(first) != "regression" and sorted(m.labels) != sorted(first.labels):
            raise UlmfitError(f"{m.path} predicts labels {m.labels} but {first.path} predicts {first.labels}",
                              hint="models can only be ensembled when they were trained on the same labels")
    return models


def ensemble_proba(models: list[Classifier], texts: list[str], *, bs: int | None = None, progress: bool = False,
                   max_chars: int = MAX_CHARS) -> tuple[np.ndarray, list[np.ndarray]]:
    """(mean outputs, each model's outputs), columns in the first model's label order: probabilities (or values,
    for regression models). Texts longer than `max_chars` characters (0: no limit) are classified from their
    first `max_chars`."""
    labels = models[0].labels
    texts = _clip(list(texts), max_chars)  # once here, not once per model
    each = [aligned(m.predict_proba(texts, bs=bs, progress=progress, max_chars=0), m.labels, labels)
            for m in models]
    return np.mean(each, axis=0).astype(np.float32), each


def aligned(p: np.ndarray, have: list[str], want: list[str]) -> np.ndarray:
    """Probability columns reordered from label order `have` to `want` (the same set)."""
    return p if have == want or p.shape[1] != len(want) else p[:, [have.index(lab) for lab in want]]


def ensemble_records(models: list[Classifier], outputs: np.ndarray) -> list[dict[str, Any]]:
    """The records (`Classifier.predict`) of ensembled outputs: a multi-label ensemble decides with the mean of
    its models' thresholds (each tuned on its own valid split)."""
    first = models[0]
    thresholds = None
    if getattr(first, "task", None) is None:  # a model without task shapes (an exported one): single-label
        return probs_to_records(outputs, first.labels)
    if first.task.kind == "multi-label":
        each = [aligned(np.asarray([m.thresholds]), m.labels, first.labels)[0] for m in models]
        thresholds = list(np.mean(each, axis=0))
    elif first.task.tuned and all(m.thresholds and len(m.thresholds) == len(first.thresholds) for m in models):
        thresholds = list(np.mean([m.thresholds for m in models], axis=0))  # a regression's bin cut points
    return first.task.records(outputs, thresholds)
