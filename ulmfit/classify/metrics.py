"""Metrics in plain numpy for every task shape, and their plots.

single-label: accuracy, error rate, macro-F1, per-class precision/recall, confusion, NLL, ECE.
multi-label: micro/macro-F1, per-label precision/recall/F1/support, subset accuracy, Hamming loss, mean average
precision. regression: MAE, RMSE, Pearson, Spearman, R², and the accuracy of the binned value.

Conventions (the same as scikit-learn's defaults, which the tests check against):
- confusion[i, j] counts documents of true class i predicted as class j;
- a precision/recall/F1 whose denominator is 0 is 0;
- macro-F1 averages F1 over the classes present in the true or predicted labels (single-label) and over all
  labels (multi-label, scikit-learn's `average="macro"`);
- average precision is scikit-learn's (a step function over distinct scores); mean AP averages it over the labels
  that have a positive example.
"""

from __future__ import annotations

import math
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


TEMPERATURES = np.geomspace(0.05, 20.0, 241)  # 2.5% steps: finer than the fit's own noise on a validation split


def fit_temperature(y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray = TEMPERATURES) -> float:
    """The temperature in `grid` that minimises the negative log-likelihood of `y_true` (Guo et al., 2017).

    One parameter fitted on held-out documents: accuracy is unchanged, probabilities mean what they say."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
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


# ---------------------------------------------------------------------------------------------- multi-label

def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's average_precision_score for one label: sum over distinct thresholds of
    (R_n - R_{n-1}) * P_n. 0 when there is no positive example."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s, yy = np.asarray(scores, dtype=np.float64)[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each distinct score
    tp = np.cumsum(yy)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_report(y: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: list[float]) -> dict[str, Any]:
    """`y` (n, L) 0/1, `probs` (n, L); a label is predicted when its probability reaches its threshold."""
    y = np.asarray(y) > 0.5
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs >= np.asarray(thresholds)[None, :]
    tp, fp, fn = (y & pred).sum(0), (~y & pred).sum(0), (y & ~pred).sum(0)
    precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    micro_p, micro_r = _safe_div(tp.sum(), tp.sum() + fp.sum()), _safe_div(tp.sum(), tp.sum() + fn.sum())
    micro_f1 = float(_safe_div(2 * micro_p * micro_r, micro_p + micro_r))
    aps = [average_precision(y[:, j], probs[:, j]) for j in range(y.shape[1]) if y[:, j].any()]
    n = len(y)
    return {
        "documents": int(n),
        "micro_f1": micro_f1,
        "macro_f1": float(f1.mean()) if len(labels) else 0.0,
        "micro_precision": float(micro_p), "micro_recall": float(micro_r),
        "subset_accuracy": float((pred == y).all(axis=1).mean()) if n else 0.0,
        "hamming_loss": float((pred != y).mean()) if n else 0.0,
        "mean_average_precision": float(np.mean(aps)) if aps else 0.0,
        "bce": float(-(y * np.log(np.clip(probs, 1e-7, 1)) + ~y * np.log(np.clip(1 - probs, 1e-7, 1))).mean())
        if n else 0.0,
        "thresholds": {lab: float(t) for lab, t in zip(labels, thresholds)},
        "per_label": {lab: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                            "support": int(y[:, j].sum()), "threshold": float(thresholds[j])}
                      for j, lab in enumerate(labels)},
    }


def plot_per_label(report: dict[str, Any], path: Path, title: str) -> None:
    """Per-label precision, recall and F1 as horizontal bars, labels sorted by support, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["per_label"].items(), key=lambda kv: -kv[1]["support"])
    names = [f"{lab} ({r['support']:,})" for lab, r in rows]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.28 * len(rows) + 1.2)))
    try:
        y = np.arange(len(rows))
        for k, (key, colour) in enumerate((("precision", "#9ecae1"), ("recall", "#fdae6b"), ("f1", "#31a354"))):
            ax.barh(y + (k - 1) * 0.27, [r[key] for _, r in rows], height=0.27, color=colour, label=key)
        ax.set_yticks(y, labels=names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("score (labels by support, most frequent first)")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- regression

def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def binned_accuracy(y: np.ndarray, pred: np.ndarray, bins: list[float], cuts: list[float] | None = None) -> float:
    """The share of predictions in the true value's bin: the truth binned at `bins`, the prediction at `cuts`
    (tuned on a validation split; default: `bins`)."""
    return float((np.digitize(y, bins) == np.digitize(pred, cuts or bins)).mean()) if len(y) else 0.0


def regression_report(y: np.ndarray, pred: np.ndarray, bins: list[float] | None = None,
                      cuts: list[float] | None = None) -> dict[str, Any]:
    """MAE, RMSE, Pearson, Spearman, R² of `pred` against `y`; with bin edges, also the accuracy of the binned
    prediction against the binned truth (SST-5 from sentiment values: edges 0.2, 0.4, 0.6, 0.8), the prediction
    cut at `cuts` when given (tuned on the validation split) and at the edges themselves."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    err = pred - y
    var = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    rep = {"documents": int(len(y)), "mae": float(np.abs(err).mean()) if len(y) else 0.0,
           "rmse": float(math.sqrt((err ** 2).mean())) if len(y) else 0.0,
           "mse": float((err ** 2).mean()) if len(y) else 0.0,
           "pearson": _pearson(y, pred) if len(y) > 1 else 0.0,
           "spearman": _pearson(_ranks(y), _ranks(pred)) if len(y) > 1 else 0.0,
           "r2": 1.0 - float((err ** 2).sum()) / var if var > 0 else 0.0}
    if bins:
        yt, yp = np.digitize(y, bins), np.digitize(pred, cuts or bins)
        rep["bins"] = list(bins)
        rep["cuts"] = list(cuts or bins)
        rep["binned_accuracy"] = binned_accuracy(y, pred, bins, cuts)
        rep["binned_accuracy_at_edges"] = binned_accuracy(y, pred, bins)
        rep["binned_confusion"] = confusion_matrix(yt, yp, len(bins) + 1).tolist()
    return rep


def plot_scatter(y: np.ndarray, pred: np.ndarray, path: Path, title: str) -> None:
    """Predicted against true values with the y = x line, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        ax.scatter(y, pred, s=6, alpha=min(0.6, max(0.08, 300 / max(len(y), 1))), color="#3182bd")
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="#636363", lw=1, ls="--", label="y = x")
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig, path: Path) -> None:
    import io

    from ulmfit._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(Path(path), buf.getvalue())
