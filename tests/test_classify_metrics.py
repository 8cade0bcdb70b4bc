"""Metrics in plain numpy agree with scikit-learn on the numbers `ulmfit evaluate` reports."""

from __future__ import annotations

import numpy as np
import pytest

from ulmfit.classify.metrics import classification_report, confusion_matrix, macro_f1, plot_confusion

skm = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("n_class,seed", [(2, 0), (3, 1), (5, 2)])
def test_report_matches_sklearn(n_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_class, 300)
    logits = rng.normal(size=(300, n_class))
    logits[np.arange(300), y] += 1.0  # better than chance, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = [f"c{i}" for i in range(n_class)]
    rep = classification_report(y, probs, labels)
    pred = probs.argmax(1)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert rep["error_rate"] == pytest.approx(1 - skm.accuracy_score(y, pred))
    assert rep["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert rep["nll"] == pytest.approx(skm.log_loss(y, probs, labels=list(range(n_class))))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=list(range(n_class)), zero_division=0)
    for i, lab in enumerate(labels):
        assert rep["per_class"][lab]["precision"] == pytest.approx(p[i])
        assert rep["per_class"][lab]["recall"] == pytest.approx(r[i])
        assert rep["per_class"][lab]["f1"] == pytest.approx(f[i])
        assert rep["per_class"][lab]["support"] == s[i]
    assert rep["confusion"]["matrix"] == skm.confusion_matrix(y, pred, labels=list(range(n_class))).tolist()


def test_class_never_predicted_counts_zero_in_macro_f1() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])  # class 2 never predicted: its F1 is 0 and it still counts
    assert macro_f1(y, pred, 3) == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert macro_f1(y, pred, 3) == pytest.approx((1 + 2 / 3 + 0) / 3)
    # a class absent from both truth and predictions does not drag the average down (sklearn's convention)
    assert macro_f1(np.array([0, 1]), np.array([0, 1]), 5) == pytest.approx(1.0)


def test_confusion_rows_are_truth() -> None:
    cm = confusion_matrix(np.array([0, 0, 0, 1]), np.array([1, 1, 0, 1]), 2)
    assert cm.tolist() == [[1, 2], [0, 1]]


def test_confusion_png(tmp_path) -> None:
    path = tmp_path / "cm.png"
    plot_confusion(np.array([[5, 1], [2, 7]]), ["neg", "pos"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "cm.png"]  # no temporary left behind


def test_expected_calibration_error_by_hand() -> None:
    from ulmfit.classify.metrics import expected_calibration_error

    y = np.array([0, 0, 1, 1])
    # two documents at confidence 0.95 (one right), two at 0.65 (both right): |0.5-0.95|/2 + |1-0.65|/2
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.35, 0.65], [0.35, 0.65]])
    assert expected_calibration_error(y, probs) == pytest.approx(0.45 / 2 + 0.35 / 2)
    assert expected_calibration_error(y[:0], probs[:0]) == 0.0


def test_temperature_fit_recovers_an_overconfident_model() -> None:
    from ulmfit.classify.metrics import expected_calibration_error, fit_temperature, temperature_scale

    rng = np.random.default_rng(0)
    logits = rng.normal(scale=1.5, size=(5000, 3))
    honest = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in honest])
    overconfident = temperature_scale(honest, 0.5)  # logits doubled: the classic fine-tuned network
    t = fit_temperature(y, overconfident)
    assert 1.8 < t < 2.2  # undoes the doubling
    fixed = temperature_scale(overconfident, t)
    assert (fixed.argmax(1) == overconfident.argmax(1)).all()  # accuracy cannot change
    assert expected_calibration_error(y, fixed) < expected_calibration_error(y, overconfident) / 3
    assert np.allclose(fixed, honest, atol=0.03)
    assert fit_temperature(y, honest) == pytest.approx(1.0, abs=0.1)
