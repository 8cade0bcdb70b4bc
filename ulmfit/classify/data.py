"""The labelled data a classifier trains on: the task shape, train + valid rows with labels, the --max-train sample,
class and positive-label weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ulmfit.classify.config import ClassifierConfig
from ulmfit.classify.task import AUTO, Task, detect_task, make_task
from ulmfit.data import Corpus, load_corpus, require_labels, subsample
from ulmfit.errors import UlmfitError

POS_WEIGHT_MAX = 100.0  # a label seen once in 10,000 texts would otherwise weigh 10,000 times a negative


def class_weight_vector(cfg: ClassifierConfig, task: Task, train_labels: list[str | None]) -> list[float] | None:
    """Loss weights: single-label cross-entropy class weights (none, "balanced" = n / (k * count_c) as
    scikit-learn, or the user's list); multi-label positive-class weights (pos_weight=balanced: each label's
    negatives / positives, capped at POS_WEIGHT_MAX)."""
    labels = task.labels
    if task.kind != "single-label" and cfg.class_weights != "none":
        raise UlmfitError(f"class_weights apply to single-label classifiers, not to {task.kind}",
                          hint="for rare labels of a multi-label task use --set pos_weight=balanced")
    if task.kind == "multi-label" and cfg.pos_weight == "balanced":
        y = task.targets(train_labels, "train")
        pos = y.sum(axis=0)
        return [float(min(POS_WEIGHT_MAX, (len(y) - p) / p)) if p else 1.0 for p in pos]
    if task.kind != "multi-label" and cfg.pos_weight != "none":
        raise UlmfitError(f"pos_weight applies to multi-label classifiers, not to {task.kind}",
                          hint="for imbalanced classes of a single-label task use --class-weights balanced")
    if cfg.class_weights == "none" or task.kind != "single-label":
        return None
    if cfg.class_weights == "balanced":
        counts = Counter(train_labels)
        n, k = len(train_labels), len(labels)
        return [n / (k * counts[lab]) if counts[lab] else 0.0 for lab in labels]
    w = list(cfg.class_weights)
    if len(w) != len(labels):
        raise UlmfitError(f"class_weights has {len(w)} values but the data has {len(labels)} labels "
                          f"({', '.join(labels)})", hint="give one weight per label, in that (sorted) order")
    return w


def _rows(corpus: Corpus, split: str, keep_unlabelled: bool) -> Corpus:
    """Rows of `split`: those with a label, or all of them when an empty label cell means something (the empty
    label set of a multi-label task; a regression row without a target, which `Task.values` then names)."""
    idx = [i for i, (s, y) in enumerate(zip(corpus.splits, corpus.labels))
           if s == split and (keep_unlabelled or y is not None)]
    return Corpus([corpus.texts[i] for i in idx], [corpus.labels[i] for i in idx], [split] * len(idx), corpus.name)


def choose_task(cfg: ClassifierConfig, train_cells: list[str | None], label_col: str | None = None) -> tuple[str, str]:
    """(task kind, why): --task when given, else detected from the training labels (several label columns: a
    multi-label task whatever their values)."""
    if cfg.task != AUTO:
        return cfg.task, "--task"
    if label_col and "," in label_col:
        return "multi-label", f"--label-col names {len(label_col.split(','))} 0/1 columns; --task sets it"
    kind, why = detect_task(train_cells, cfg.label_delimiter)
    return kind, f"{why}; --task sets it"


def prepare_corpus(src: str | Path | Corpus, cfg: ClassifierConfig, *, text_col: str | None,
                   label_col: str | None) -> tuple[Corpus, Task, str]:
    """The labelled train + valid rows of SRC (valid carved from train when SRC has none), the task and why it was
    chosen, and the --max-train subsample. Every valid label is checked against the training labels here."""
    corpus = src if isinstance(src, Corpus) else load_corpus(src, text_col=text_col, label_col=label_col,
                                                             seed=cfg.seed)
    require_labels(corpus, min_classes=1)  # no label column at all: say so first
    kind, why = choose_task(cfg, [y for y, s in zip(corpus.labels, corpus.splits) if s == "train"], label_col)
    keep_empty = kind != "single-label"
    train, valid = _rows(corpus, "train", keep_empty), _rows(corpus, "valid", keep_empty)
    if not len(train):
        raise UlmfitError(f"{corpus.name} has no labelled training documents",
                          hint="a classifier needs a 'train' split with labels (check --label-col)")
    if kind == "single-label":
        require_labels(train, min_classes=2)
    if cfg.max_train is not None:
        before = make_task(kind, train.labels, train.texts, delimiter=cfg.label_delimiter, target="", bins=[])
        train = subsample(train, "train", cfg.max_train, seed=cfg.seed, stratified=kind == "single-label")
        kept = make_task(kind, train.labels, train.texts, delimiter=cfg.label_delimiter, target="", bins=[])
        if kind != "regression" and len(kept.labels) < len(before.labels):
            raise UlmfitError(f"--max-train {cfg.max_train} keeps only {len(kept.labels)} of {len(before.labels)} "
                              f"labels", hint=f"use more training documents (at least {len(before.labels)})")
    if not len(valid):
        raise UlmfitError(f"{corpus.name} has no labelled validation documents",
                          hint="add a 'valid' split, or enough training rows to carve 10% from")
    task = make_task(kind, train.labels, train.texts, delimiter=cfg.label_delimiter,
                     target=label_col or "value", bins=list(cfg.bins))
    if kind == "multi-label" and "," in (label_col or ""):  # several 0/1 columns: every column is a label
        task.labels = sorted(set(task.labels) | {c.strip() for c in label_col.split(",")})
    if kind == "single-label":
        unseen = sorted(set(valid.label_names()) - set(task.labels))
        if unseen:
            raise UlmfitError(f"the validation split has label(s) {', '.join(unseen)} that no training document "
                              "has", hint="every class needs training examples")
    task.targets(valid.labels, "valid", valid.texts)  # a bad valid row fails now, before the token store is built
    both = Corpus(train.texts + valid.texts, train.labels + valid.labels, train.splits + valid.splits, corpus.name)
    return both, task, why


def label_counts(task: Task, cells: list[str | None]) -> dict[str, int]:
    """Documents per label (multi-label: per label in the set); for regression, the target's summary."""
    if task.kind == "single-label":
        return dict(sorted(Counter(cells).items()))
    if task.kind == "multi-label":
        y = task.targets(cells, "train")
        return {lab: int(n) for lab, n in zip(task.labels, y.sum(axis=0))}
    v = task.values(cells, "train")
    return {"documents": len(v), "min": float(v.min()), "max": float(v.max()), "mean": float(np.mean(v))}
