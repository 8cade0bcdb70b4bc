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


def classification_report(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Every number `ulmfit evaluate` reports, JSON-ready. `probs` is (n_docs, n_class) in `labels` order."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs)
    y_pred = probs.argmax(axis=1)
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    precision, recall, f1, support = per_class(cm)
    accuracy = float((y_pred == y_true).mean()) if len(y_true) else 0.0
    # Mean negative log-likelihood of the true class: the "valid loss" of an unweighted, unsmoothed model.
    p_true = probs[np.arange(len(y_true)), y_true] if len(y_true) else np.zeros(0)
    nll = float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean()) if len(y_true) else 0.0
    return {
        "documents": int(len(y_true)),
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "macro_f1": macro_f1_from_cm(cm),
        "nll": nll,
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
