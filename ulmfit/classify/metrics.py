"""Classification metrics in plain numpy: accuracy, error rate, macro-F1, per-class precision/recall, confusion.

Conventions (the same as scikit-learn's defaults, which the tests check against):
- confusion[i, j] counts documents of true class i predicted as class j;
- a precision/recall/F1 whose denominator is 0 is 0;
- macro-F1 averages F1 over the classes present in the true or predicted labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_class: int) -> np.ndarray:
    """(n_class, n_class) int64 counts; rows are true classes, columns predicted ones."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * n_class + y_pred, minlength=n_class * n_class).reshape(n_class, n_class)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, f1, support per class from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def macro_f1_from_cm(cm: np.ndarray) -> float:
    _, _, f1, support = per_class(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_class: int | None = None) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if n_class is None:
        n_class = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    return macro_f1_from_cm(confusion_matrix(y_true, y_pred, n_class))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE: |accuracy - mean confidence| over equal-width confidence bins, weighted by the bins' shares."""
    y_true, probs = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if not len(y_true):
        return 0.0
    conf = probs.max(axis=1)
    right = (probs.argmax(axis=1) == y_true).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(which):
        m = which == b
        total += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(total)


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T): the same ranking, confidence flattened (T > 1) or sharpened (T < 1)."""
    if temperature == 1.0:
        return np.asarray(probs)
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.asarray(probs).dtype)


def fit_temperature(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The temperature (0.05-20) that minimises the negative log-likelihood of `y_true` (Guo et al., 2017).

    One parameter fitted on held-out documents: accuracy is unchanged, probabilities mean what they say."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    grid = np.geomspace(0.05, 20.0, 241)  # 2.5% steps: finer than the fit's own noise on a validation split
    return float(grid[int(np.argmin([_nll(y_true, temperature_scale(probs, t)) for t in grid]))])


def _nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    if not len(y_true):
        return 0.0
    return float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)).mean())


def classification_report(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Every number `ulmfit evaluate` reports, JSON-ready. `probs` is (n_docs, n_class) in `labels` order."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs)
    y_pred = probs.argmax(axis=1)
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    precision, recall, f1, support = per_class(cm)
    accuracy = float((y_pred == y_true).mean()) if len(y_true) else 0.0
    return {
        "documents": int(len(y_true)),
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "macro_f1": macro_f1_from_cm(cm),
        "nll": _nll(y_true, probs),  # the "valid loss" of an unweighted, unsmoothed model
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {
            lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                  "support": int(support[i])}
            for i, lab in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": cm.tolist()},
    }


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str = "Confusion matrix") -> None:
    """Write a confusion-matrix PNG (matplotlib's Agg backend; no display needed), atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ulmfit._io import atomic_write_bytes

    cm = np.asarray(cm)
    n = len(labels)
    size = max(3.5, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(n), labels=labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels=labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(title)
        hi = cm.max() if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if hi and cm[i, j] > hi / 2 else "black")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
