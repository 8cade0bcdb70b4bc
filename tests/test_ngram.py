"""The n-gram baseline inside every classifier bundle: numpy inference equals scikit-learn's, it round-trips
through the bundle files without pickle, and the ensemble weight follows the validation split."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ulmfit.classify.ngram import ARRAYS_FILE, JSON_FILE, NgramModel, _analyze, choose_weight, fit_ngram, mix
from ulmfit.errors import UlmfitError

WORDS = "film plot actor scene music story camera light city road night house".split()


def _corpus(n: int, seed: int, classes=("neg", "pos")) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    cue = {"neg": ["awful", "dull"], "pos": ["superb", "lovely"], "mid": ["fine", "okay"]}
    texts, labels = [], []
    for _ in range(n):
        lab = rng.choice(classes)
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 15))] + [rng.choice(cue[lab])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, labels


def test_the_analyzer_is_scikit_learns() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    sk = TfidfVectorizer(ngram_range=(1, 2), lowercase=True, strip_accents="unicode").build_analyzer()
    for text in ["Café déjà-vu, NAÏVE résumé!", "a b cd ef_gh 12 x9 — ok", "Ünïcödé ßtraße ﬁne", "", "I'm here"]:
        assert _analyze(text) == sk(text)


@pytest.mark.parametrize("classes", [("neg", "pos"), ("mid", "neg", "pos")])
def test_numpy_inference_equals_scikit_learn_and_round_trips(tmp_path, classes) -> None:
    texts, labels = _corpus(120, seed=0, classes=classes)
    model = fit_ngram(texts, labels, list(classes), seed=0)
    test, _ = _corpus(30, seed=1, classes=classes)
    test.append("nothing known here zzz")  # no known n-gram: the intercept alone
    p = model.predict_proba(test)
    assert p.shape == (31, len(classes)) and np.allclose(p.sum(1), 1)

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.9, sublinear_tf=True, strip_accents="unicode",
                          max_features=100_000)
    x = vec.fit_transform(texts)
    ref = LogisticRegression(max_iter=2000, C=model.c).fit(x, [list(classes).index(y) for y in labels])
    logits = ref.decision_function(vec.transform(test)) / model.temperature  # calibrated out of fold
    if logits.ndim == 1:
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(p, expected / expected.sum(1, keepdims=True), atol=1e-6)
    assert np.array_equal(p.argmax(1), ref.predict(vec.transform(test)))  # the temperature changes no decision
    assert (np.array(classes)[p[:30].argmax(1)] == np.array(_corpus(30, seed=1, classes=classes)[1])).mean() > 0.8

    model.save(tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([JSON_FILE, ARRAYS_FILE])
    assert b"pickle" not in (tmp_path / ARRAYS_FILE).read_bytes()[:200]
    again = NgramModel.load(tmp_path)
    assert np.array_equal(again.predict_proba(test), p) and again.classes == list(classes)


def test_the_temperature_calibrates_an_overconfident_model_out_of_fold() -> None:
    from ulmfit.classify.ngram import oof_temperature as fit_temperature

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    right = rng.random(400) < 0.7  # 70% right, and always sure: logits of +-20
    scores = np.where(right == (y == 1), 20.0, -20.0)
    t = fit_temperature(scores, y)
    p_right = 1 / (1 + np.exp(-20.0 / t))
    assert t > 10 and abs(p_right - right.mean()) < 0.05  # as sure as it is right
    honest = np.where(y == 1, 1.0, -1.0) * np.log(0.7 / 0.3) * np.where(right, 1, -1)  # already calibrated
    assert 0.8 < fit_temperature(honest, y) < 1.25
    texts, labels = _corpus(120, seed=0)
    model = fit_ngram(texts, labels, ["neg", "pos"], seed=0)
    assert model.temperature == fit_ngram(texts, labels, ["neg", "pos"], seed=0).temperature  # deterministic


def test_a_bundle_without_the_ngram_part_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(UlmfitError, match="has no complete n-gram model"):
        NgramModel.load(tmp_path)


def test_the_weight_follows_whichever_model_validation_prefers() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    right = np.eye(2)[y] * 0.8 + 0.1          # confident and correct
    noise = rng.dirichlet([1, 1], size=200)   # uninformative
    assert choose_weight(y, p_neural=noise, p_ngram=right)[0] == 1.0
    assert choose_weight(y, p_neural=right, p_ngram=noise)[0] == 0.0
    w, table = choose_weight(y, p_neural=right, p_ngram=right)
    assert w == 0.0 and len(table) == 11  # a tie goes to the neural model alone
    assert choose_weight(y, noise, right) == choose_weight(y, noise, right)  # deterministic
    assert np.array_equal(mix(right, None, 0.7), right)
    assert np.allclose(mix(right, noise, 0.25), 0.75 * right + 0.25 * noise)


def test_the_weight_is_chosen_on_a_large_enough_valid_split_only() -> None:
    from ulmfit.classify.selection import MIN_WEIGHT_DOCS, ngram_ensemble

    rng = np.random.default_rng(1)
    for n, expect in ((MIN_WEIGHT_DOCS, 1.0), (MIN_WEIGHT_DOCS - 1, 0.5)):
        y = rng.integers(0, 2, n)
        right, noise = np.eye(2)[y] * 0.8 + 0.1, rng.dirichlet([1, 1], size=n)
        meta = ngram_ensemble(y, noise, right, ["a", "b"], weight=None)
        assert meta["weight"] == expect and meta["chosen_on_valid"] == (expect == 1.0)
        assert ngram_ensemble(y, noise, right, ["a", "b"], weight=0.2)["weight"] == 0.2


def test_tiny_training_sets_still_fit() -> None:
    texts, labels = _corpus(6, seed=3)
    model = fit_ngram(texts, labels, ["neg", "pos"], seed=0)
    assert model.predict_proba(texts).shape == (6, 2)


# ---- through the pipeline: classify stores it, predict and evaluate use it ---------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny LM and two classifiers on it: with the n-gram model (default) and without (--set ngram=off)."""
    from test_classify import _pretrain, labelled, lm_corpus, write_csv
    from ulmfit.cli.main import main

    tmp = tmp_path_factory.mktemp("ngram")
    lm = _pretrain(tmp / "lm", lm_corpus(300), epochs=1)
    src = write_csv(tmp / "reviews.csv", labelled(80, 40, seed=1, valid_rare=False))
    base = ["classify", str(src), "--lm", str(lm), "--preset", "tiny", "--seed", "0"]
    assert main(base + ["--out", str(tmp / "with")]) == 0
    assert main(base + ["--out", str(tmp / "without"), "--set", "ngram=off"]) == 0
    return tmp, src


def test_classify_stores_the_ngram_model_and_its_validated_weight(runs) -> None:
    import json

    from ulmfit.classify import Classifier

    tmp, src = runs
    meta = json.loads((tmp / "with" / "model-best" / "meta.json").read_text())["ngram"]
    # 40 valid documents are too few to choose a weight on: the plain mean
    assert meta["weight"] == 0.5 and not meta["chosen_on_valid"] and "too few" in meta["how"]
    assert len(meta["weights_tried"]) == 11
    assert {"valid", "ensemble_valid", "c", "cv_accuracy"} <= set(meta)
    clf = Classifier.load(tmp / "with")
    texts = ["the film was good and great", "the film was bad and awful"]
    neural, ngram = clf.predict_parts(texts)
    w = meta["weight"]
    assert np.allclose(clf.predict_proba(texts), (1 - w) * neural + w * ngram, atol=1e-6)
    alone = Classifier.load(tmp / "with", ngram_weight=0)
    assert np.allclose(alone.predict_proba(texts), neural, atol=1e-6)
    assert Classifier.load(tmp / "without").ngram is None
    assert not (tmp / "without" / "model-best" / JSON_FILE).exists()


def test_evaluate_reports_both_models_and_the_ensemble(runs, capsys) -> None:
    from ulmfit.cli.main import main

    tmp, src = runs
    assert main(["evaluate", str(tmp / "with"), str(src), "--split", "valid", "--ngram-weight", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "+ n-gram (w 0.5)" in out and "model-best neural" in out and "model-best n-gram" in out


def test_asking_for_the_ensemble_without_an_ngram_model_is_one_line(runs, capsys) -> None:
    from ulmfit.cli.main import main

    tmp, src = runs
    assert main(["predict", str(tmp / "without"), "--input", str(src), "--ngram-weight", "0.5"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ") and "has no n-gram model" in err[0] and len(err) == 2
    assert main(["predict", str(tmp / "with"), "--input", str(src), "--ngram-weight", "2"]) == 1
    assert "--ngram-weight must be in [0, 1]" in capsys.readouterr().err
