"""The labelled data a classifier trains on: train + valid rows with labels, the --max-train sample, class weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ulmfit.classify.config import ClassifierConfig
from ulmfit.data import Corpus, load_corpus, require_labels, subsample
from ulmfit.errors import UlmfitError


def class_weight_vector(cfg: ClassifierConfig, labels: list[str], train_labels: list[str]) -> list[float] | None:
    """Cross-entropy class weights: none, "balanced" (n / (k * count_c), as scikit-learn), or the user's list."""
    if cfg.class_weights == "none":
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


def _labelled(corpus, split: str):
    """Rows of `split` that have a label (a partly labelled training set trains on the labelled part)."""
    idx = [i for i, (s, y) in enumerate(zip(corpus.splits, corpus.labels)) if s == split and y is not None]
    return Corpus([corpus.texts[i] for i in idx], [corpus.labels[i] for i in idx], [split] * len(idx), corpus.name)


def prepare_corpus(src: str | Path | Corpus, cfg: ClassifierConfig, *, text_col: str | None, label_col: str | None):
    """The labelled train + valid rows of SRC (valid carved from train when SRC has none), their label names,
    and the stratified --max-train subsample."""
    corpus = src if isinstance(src, Corpus) else load_corpus(src, text_col=text_col, label_col=label_col,
                                                             seed=cfg.seed)
    require_labels(corpus, min_classes=1)  # no label column at all: say so first
    train, valid = _labelled(corpus, "train"), _labelled(corpus, "valid")
    if not len(train):
        raise UlmfitError(f"{corpus.name} has no labelled training documents",
                          hint="a classifier needs a 'train' split with labels (check --label-col)")
    labels = require_labels(train, min_classes=2)
    if cfg.max_train is not None:
        train = subsample(train, "train", cfg.max_train, seed=cfg.seed, stratified=True)
        labels_kept = train.label_names()
        if len(labels_kept) < len(labels):
            raise UlmfitError(f"--max-train {cfg.max_train} keeps only {len(labels_kept)} of {len(labels)} classes",
                              hint=f"use at least {len(labels)} training documents")
    if not len(valid):
        raise UlmfitError(f"{corpus.name} has no labelled validation documents",
                          hint="add a 'valid' split, or enough training rows to carve 10% from")
    unseen = sorted(set(valid.label_names()) - set(labels))
    if unseen:
        raise UlmfitError(f"the validation split has label(s) {', '.join(unseen)} that no training document has",
                          hint="every class needs training examples")
    both = Corpus(train.texts + valid.texts, train.labels + valid.labels, train.splits + valid.splits, corpus.name)
    return both, labels

