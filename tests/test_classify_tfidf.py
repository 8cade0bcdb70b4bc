"""The TF-IDF model: the baseline of scripts/bench_imdb.py and self-training's second opinion."""

from __future__ import annotations

import random

import numpy as np
import pytest

from test_classify import FILLER, NEG_FREQ, POS_FREQ
from ulmfit.classify.tfidf import fit_tfidf, tfidf_proba
from ulmfit.errors import UlmfitError


def reviews(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        pos = rng.random() < 0.5
        words = [rng.choice(FILLER) for _ in range(12)] + [rng.choice(POS_FREQ if pos else NEG_FREQ)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append("pos" if pos else "neg")
    return texts, labels


def test_it_learns_the_sentiment_words_and_answers_in_the_order_asked() -> None:
    texts, labels = reviews(200, seed=0)
    model = fit_tfidf(texts, labels, seed=0)
    test, truth = reviews(200, seed=1)
    p = tfidf_proba(model, test, ["neg", "pos"])
    assert p.shape == (200, 2) and np.allclose(p.sum(1), 1)
    assert (np.array(["neg", "pos"])[p.argmax(1)] == np.array(truth)).mean() >= 0.95
    assert np.allclose(tfidf_proba(model, test, ["pos", "neg"]), p[:, ::-1])  # columns follow `labels`


def test_too_few_labels_or_an_unknown_label_is_a_clear_error() -> None:
    texts, labels = reviews(40, seed=2)
    with pytest.raises(UlmfitError, match="at least two labels with two training documents each"):
        fit_tfidf(texts, ["pos"] * 40)
    with pytest.raises(UlmfitError, match="at least two labels with two training documents each"):
        fit_tfidf(texts, ["pos"] * 39 + ["neg"])
    with pytest.raises(UlmfitError, match="never saw the label"):
        tfidf_proba(fit_tfidf(texts, labels), texts, ["neg", "meh"])
