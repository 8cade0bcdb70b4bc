"""Seeded, stratified splits: carve a validation set, subsample a split, check a corpus has classes.

Both `carve_valid` and `subsample` shuffle before taking rows: readers return rows sorted by label (an IMDb
folder lists every `neg` review before every `pos` one), so "the first n" would be one class only.
Stratification keeps each label's share (unlabeled rows are a stratum of their own); the same seed always
picks the same rows.
"""

from __future__ import annotations

import random
from collections import defaultdict

from ulmfit.data.corpus import SPLITS, Corpus
from ulmfit.errors import UlmfitError


def _strata(labels: list[str | None], idx: list[int]) -> dict[str | None, list[int]]:
    out: dict[str | None, list[int]] = defaultdict(list)
    for i in idx:
        out[labels[i]].append(i)
    # Sorted so the rng is consumed in the same order whatever the row order of the source.
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")))


def _allocate(sizes: dict, n: int) -> dict:
    """Split n over strata in proportion to their sizes (largest remainder), never more than a stratum has."""
    total = sum(sizes.values())
    n = min(n, total)
    quota = {k: n * v / total for k, v in sizes.items()}
    take = {k: int(q) for k, q in quota.items()}
    for k in sorted(sizes, key=lambda k: quota[k] - take[k], reverse=True)[: n - sum(take.values())]:
        take[k] += 1
    return take


def _pick(labels: list[str | None], idx: list[int], n: int, rng: random.Random, stratified: bool) -> list[int]:
    """n of the rows `idx`, shuffled, in proportion to their labels when stratified."""
    if not stratified:
        idx = list(idx)
        rng.shuffle(idx)
        return idx[:n]
    strata = _strata(labels, idx)
    take = _allocate({k: len(v) for k, v in strata.items()}, n)
    picked: list[int] = []
    for k, rows in strata.items():
        rows = list(rows)
        rng.shuffle(rows)
        picked += rows[: take[k]]
    rng.shuffle(picked)  # interleave the classes
    return picked


def carve_splits(labels: list[str | None], splits: list[str], valid_pct: float, seed: int) -> list[str]:
    """`splits` with valid_pct of "train" (at least one row) turned into "valid", stratified by label when the
    labels are categories (at most max(10, 5% of the rows) distinct values), else a plain random draw.

    Unchanged when valid_pct is 0, when there already is a "valid" split, or with fewer than 2 train rows.
    """
    if not 0 <= valid_pct < 1:
        raise UlmfitError(f"valid_pct must be in [0, 1), got {valid_pct}", hint="e.g. 0.1 for 10%")
    train = [i for i, s in enumerate(splits) if s == "train"]
    if valid_pct == 0 or "valid" in splits or len(train) < 2:
        return list(splits)
    n = max(1, round(len(train) * valid_pct))
    # Stratify by label only when labels are categories: a numeric target (or near-unique label sets) would make
    # strata of one row each, and the largest-remainder rule would then pick them in label order, not at random.
    distinct = len({labels[i] for i in train})
    categorical = distinct <= max(10, len(train) // 20)
    chosen = set(_pick(labels, train, n, random.Random(seed), stratified=categorical))
    return ["valid" if i in chosen else s for i, s in enumerate(splits)]


def carve_valid(corpus: Corpus, valid_pct: float, seed: int) -> Corpus:
    """The corpus with valid_pct of "train" moved to "valid" (see `carve_splits`)."""
    splits = carve_splits(corpus.labels, corpus.splits, valid_pct, seed)
    return corpus if splits == corpus.splits else Corpus(corpus.texts, corpus.labels, splits, corpus.name)


def subsample(corpus: Corpus, split: str, n: int, seed: int, stratified: bool = True) -> Corpus:
    """Keep n rows of `split` (shuffled first, class shares kept when stratified); other splits untouched.

    The kept rows come in shuffled order, where the split's first row was; with n >= the split's size every
    row is kept (shuffled).
    """
    if split not in SPLITS:
        raise UlmfitError(f"unknown split {split!r}", hint=f"use one of: {', '.join(SPLITS)}")
    if n < 1:
        raise UlmfitError(f"cannot subsample {split} to {n} rows", hint="n must be at least 1")
    idx = [i for i, s in enumerate(corpus.splits) if s == split]
    if not idx:
        have = ", ".join(s for s in SPLITS if s in corpus.splits)
        raise UlmfitError(f"{corpus.name} has no {split!r} split to subsample (splits: {have})")
    keep = _pick(corpus.labels, idx, n, random.Random(seed), stratified)
    order: list[int] = []
    for i, s in enumerate(corpus.splits):
        if s != split:
            order.append(i)
        elif i == idx[0]:
            order += keep
    return Corpus([corpus.texts[i] for i in order], [corpus.labels[i] for i in order],
                  [corpus.splits[i] for i in order], corpus.name)


def require_labels(corpus: Corpus, min_classes: int = 2) -> list[str]:
    """The sorted label names of a corpus a classifier is trained on; an error when it has too few classes."""
    names = corpus.label_names()
    if not names:
        raise UlmfitError(f"{corpus.name} has no labels: a classifier needs labeled documents",
                          hint="point at a labeled source, or pass --label-col NAME")
    if len(names) < min_classes:
        classes = f"{len(names)} class{'es' if len(names) > 1 else ''} ({', '.join(names)})"
        raise UlmfitError(f"{corpus.name} has only {classes}: a classifier needs at least {min_classes}",
                          hint="check --label-col, or use a source with more classes")
    return names
