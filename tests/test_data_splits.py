"""Splits: carving a validation set and subsampling are seeded, stratified and shuffled; require_labels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ulmfit.data import Corpus, load_corpus, require_labels, subsample
from ulmfit.data.splits import carve_valid
from ulmfit.errors import UlmfitError


def sorted_by_label(n_pos: int, n_neg: int, n_test: int = 0) -> Corpus:
    """Like an IMDb folder: every neg row, then every pos row, then the test rows."""
    texts = [f"neg {i}" for i in range(n_neg)] + [f"pos {i}" for i in range(n_pos)]
    labels = ["neg"] * n_neg + ["pos"] * n_pos
    texts += [f"test {i}" for i in range(n_test)]
    labels += ["pos" if i % 2 else "neg" for i in range(n_test)]
    splits = ["train"] * (n_neg + n_pos) + ["test"] * n_test
    return Corpus(texts, labels, splits, "toy")


def test_carve_valid_is_seeded_stratified_and_random() -> None:
    c = sorted_by_label(n_pos=300, n_neg=100, n_test=10)
    a, b, other = carve_valid(c, 0.1, seed=3), carve_valid(c, 0.1, seed=3), carve_valid(c, 0.1, seed=4)
    assert a.splits == b.splits and a.fingerprint == b.fingerprint
    assert a.splits != other.splits
    assert a.summary()["valid"] == {"documents": 40, "labels": {"neg": 10, "pos": 30}}
    assert a.summary()["train"]["documents"] == 360 and a.summary()["test"]["documents"] == 10
    # Random rows, not the first ones of each class: the valid neg rows are spread over the 100 neg rows.
    idx = [i for i, s in enumerate(a.splits) if s == "valid" and a.labels[i] == "neg"]
    assert idx != list(range(10)) and max(idx) > 50
    assert a.texts == c.texts  # rows stay where they were; only their split changes


def test_carve_valid_keeps_an_existing_valid_and_zero_means_none() -> None:
    c = sorted_by_label(n_pos=10, n_neg=10)
    assert carve_valid(c, 0, seed=0).splits == c.splits
    with_valid = Corpus(c.texts, c.labels, ["valid"] + c.splits[1:], "toy")
    assert carve_valid(with_valid, 0.5, seed=0).splits == with_valid.splits
    # A tiny train set still gets one valid row.
    tiny = Corpus(["a", "b", "c"], ["x", "y", "x"], ["train"] * 3, "tiny")
    assert carve_valid(tiny, 0.1, seed=0).splits.count("valid") == 1


def test_subsample_is_balanced_shuffled_and_leaves_other_splits() -> None:
    c = sorted_by_label(n_pos=500, n_neg=500, n_test=6)
    s = subsample(c, "train", 100, seed=0)
    train = s.select("train")
    assert Counter(train.labels) == {"neg": 50, "pos": 50}
    assert train.labels[:50] != ["neg"] * 50  # shuffled: not all of one class first
    assert s.select("test").texts == c.select("test").texts
    assert len(s) == 106
    # Drawn from the whole class, not its first rows.
    assert max(int(t.split()[1]) for t in train.texts) > 250
    assert subsample(c, "train", 100, seed=0).texts == train.texts + s.select("test").texts
    assert subsample(c, "train", 100, seed=1).texts != s.texts


def test_subsample_keeps_class_shares_and_all_when_n_is_large() -> None:
    c = sorted_by_label(n_pos=90, n_neg=30)
    assert Counter(subsample(c, "train", 40, seed=0).labels) == {"pos": 30, "neg": 10}
    everything = subsample(c, "train", 1000, seed=0)
    assert sorted(everything.texts) == sorted(c.texts) and everything.texts != c.texts
    unstratified = subsample(c, "train", 40, seed=0, stratified=False)
    assert len(unstratified) == 40


def test_subsample_errors() -> None:
    c = sorted_by_label(n_pos=3, n_neg=3)
    with pytest.raises(UlmfitError, match="no 'test' split"):
        subsample(c, "test", 2, seed=0)
    with pytest.raises(UlmfitError, match="at least 1"):
        subsample(c, "train", 0, seed=0)
    with pytest.raises(UlmfitError, match="unknown split"):
        subsample(c, "dev", 2, seed=0)


def test_require_labels() -> None:
    assert require_labels(sorted_by_label(2, 2)) == ["neg", "pos"]
    with pytest.raises(UlmfitError, match="has no labels"):
        require_labels(Corpus(["a", "b"], [None, None], ["train", "train"], "lm.txt"))
    with pytest.raises(UlmfitError, match=r"only 1 class \(pos\): a classifier needs at least 2"):
        require_labels(Corpus(["a", "b"], ["pos", None], ["train", "train"], "one.csv"))
    with pytest.raises(UlmfitError, match="only 2 classes"):
        require_labels(sorted_by_label(2, 2), min_classes=3)


def test_load_corpus_carving_is_deterministic(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("text,label\n" + "".join(f"doc {i},{'ab'[i % 2]}\n" for i in range(50)))
    a, b = load_corpus(p, seed=7), load_corpus(p, seed=7)
    assert a.splits == b.splits and a.fingerprint == b.fingerprint
    assert a.summary()["valid"] == {"documents": 5, "labels": {"a": 3, "b": 2}} or \
        a.summary()["valid"] == {"documents": 5, "labels": {"a": 2, "b": 3}}
    assert load_corpus(p, seed=8).splits != a.splits
    assert "valid" not in load_corpus(p, valid_pct=0).splits
