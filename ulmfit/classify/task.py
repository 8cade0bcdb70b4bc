"""What a classifier predicts, and everything that depends on it: one label per text, a set of labels, or a number.

    single-label  one class per text (any number of classes): softmax + cross-entropy, argmax
    multi-label   a set of labels per text (possibly empty): a sigmoid per label + binary cross-entropy, a decision
                  threshold per label tuned on the validation split
    regression    a number per text: a linear output on the standardised target (mean and std of the training
                  targets, stored) + MSE or Huber loss, read back in the target's own units

Label cells, as the data layer reads them (strings or None), are turned into targets here:

- multi-label: the labels of a text are separated by `delimiter` ("," by default: GoEmotions' "2,14"). Spaces
  around a label are ignored ("joy, love" is "joy,love"). An empty cell is the empty set. An empty label between
  delimiters ("joy,,love", "joy,") is an error naming the row: it is a broken file far more often than intended.
- regression: the cell must be a finite number; a missing or non-numeric one is an error naming the row.

`detect_task` chooses the kind from the training labels when the user does not (`--task`), and says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ulmfit.errors import UlmfitError

TASKS = ("single-label", "multi-label", "regression")
AUTO = "auto"
# Integer labels with at most this many distinct values are read as classes (star ratings 1-5), more as a number.
MAX_INT_CLASSES = 20
_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)  # decision thresholds tried per label on the valid split


def _number(cell: str | None) -> float | None:
    if cell is None:
        return None
    try:
        v = float(cell)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def detect_task(cells: list[str | None], delimiter: str = ",") -> tuple[str, str]:
    """(task, why) from the training label cells: numbers with fractions (or many distinct integers) are a
    regression target, cells holding `delimiter` are label sets, anything else is one label per text."""
    present = [c for c in cells if c is not None]
    numbers = [_number(c) for c in present]
    if present and all(v is not None for v in numbers):
        ints = all(float(v).is_integer() for v in numbers)
        distinct = len(set(numbers))
        if not ints or distinct > MAX_INT_CLASSES:
            return "regression", (f"every label is a number ({distinct:,} distinct values)")
        if not any(delimiter in c for c in present):
            return "single-label", (f"integer labels with {distinct} distinct values are read as classes; "
                                    "--task regression reads them as numbers")
    if any(delimiter in c for c in present):
        n = sum(delimiter in c for c in present)
        return "multi-label", f"{n:,} label cells hold several labels separated by {delimiter!r}"
    return "single-label", "one label per text"


def split_labels(cell: str | None, delimiter: str, where: str) -> list[str]:
    """The labels of one multi-label cell (see the module docstring for the rules)."""
    if cell is None or not cell.strip():
        return []
    parts = [p.strip() for p in cell.split(delimiter)]
    if any(not p for p in parts):
        raise UlmfitError(f"{where}: label cell {cell!r} has an empty label between {delimiter!r} delimiters",
                          hint="remove the stray delimiter (an empty cell means no label)")
    return parts


def _where(split: str, i: int, text: str | None) -> str:
    snippet = "" if text is None else f" ({text[:40]!r}{'...' if len(text) > 40 else ''})"
    return f"row {i + 1} of the {split} split{snippet}"


@dataclass
class Task:
    """The task shape of a classifier, stored in its bundle's config.json["task"]."""

    kind: str = "single-label"
    labels: list[str] = field(default_factory=list)  # output columns: the classes, or [target name] (regression)
    delimiter: str = ","  # multi-label: between the labels of a cell
    mean: float = 0.0  # regression: the training targets' mean and std (the network predicts (y - mean) / std)
    std: float = 1.0
    bins: list[float] = field(default_factory=list)  # regression: edges for the accuracy of the binned value

    @property
    def n_out(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def activation(self) -> str:
        return {"single-label": "softmax", "multi-label": "sigmoid", "regression": "none"}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, labels: list[str]) -> Task:
        """config.json["task"]; bundles from before task shapes existed are single-label."""
        if not d:
            return cls(kind="single-label", labels=list(labels))
        if d.get("kind") not in TASKS:
            raise UlmfitError(f"unknown task {d.get('kind')!r} in the bundle", hint="was it written by a newer ulmfit?")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    # ------------------------------------------------------------------------------------------ targets

    def targets(self, cells: list[str | None], split: str, texts: list[str] | None = None) -> np.ndarray:
        """What the loss compares with: class ids (int64), multi-hot rows (float32, n x labels) or standardised
        values (float32). Unknown labels and bad numbers are errors naming the row."""
        text = (lambda i: texts[i]) if texts is not None else (lambda i: None)
        if self.kind == "single-label":
            index = {lab: i for i, lab in enumerate(self.labels)}
            for i, c in enumerate(cells):
                if c not in index:
                    raise UlmfitError(f"{_where(split, i, text(i))}: label {c!r} is not one the model knows "
                                      f"({', '.join(self.labels[:10])})", hint="every label needs training examples")
            return np.fromiter((index[c] for c in cells), dtype=np.int64, count=len(cells))
        if self.kind == "multi-label":
            index = {lab: i for i, lab in enumerate(self.labels)}
            y = np.zeros((len(cells), len(self.labels)), dtype=np.float32)
            for i, c in enumerate(cells):
                for lab in split_labels(c, self.delimiter, _where(split, i, text(i))):
                    if lab not in index:
                        raise UlmfitError(f"{_where(split, i, text(i))}: label {lab!r} is not one the model knows",
                                          hint="every label needs training examples (or fix its spelling)")
                    y[i, index[lab]] = 1.0
            return y
        values = self.values(cells, split, texts)
        return ((values - self.mean) / self.std).astype(np.float32)

    def values(self, cells: list[str | None], split: str, texts: list[str] | None = None) -> np.ndarray:
        """Regression targets in their own units (float64); a missing or non-numeric cell is an error."""
        out = np.empty(len(cells), dtype=np.float64)
        for i, c in enumerate(cells):
            v = _number(c)
            if v is None:
                what = "has no target value" if c is None else f"target {c!r} is not a number"
                raise UlmfitError(f"{_where(split, i, texts[i] if texts else None)} {what}",
                                  hint="a regression target must be a number in every labelled row")
            out[i] = v
        return out

    def truth(self, cells: list[str | None], split: str, texts: list[str] | None = None) -> np.ndarray:
        """Gold answers for a report: class ids, multi-hot rows, or values in the target's units."""
        if self.kind == "regression":
            return self.values(cells, split, texts)
        return self.targets(cells, split, texts)

    # ------------------------------------------------------------------------------------------ outputs

    def outputs(self, raw: np.ndarray) -> np.ndarray:
        """The network's activated outputs (predict_ids) as users see them: probabilities, or values."""
        if self.kind == "regression":
            return (raw * self.std + self.mean).astype(np.float32)
        return raw

    def loss_of(self, y: np.ndarray, out: np.ndarray) -> float:
        """The loss used to weigh ensembles on the valid split: NLL, mean binary log-loss, or MSE."""
        if self.kind == "single-label":
            return float(-np.log(np.clip(out[np.arange(len(y)), y], 1e-12, 1)).mean())
        if self.kind == "multi-label":
            p = np.clip(out, 1e-7, 1 - 1e-7)
            return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
        return float(((out[:, 0] - y) ** 2).mean())

    def report(self, y: np.ndarray, out: np.ndarray, thresholds: list[float] | None = None) -> dict[str, Any]:
        """Every number `evaluate` reports for this task, JSON-ready, with "task" naming the kind."""
        from ulmfit.classify import metrics

        if self.kind == "single-label":
            rep = metrics.classification_report(y, out, self.labels)
        elif self.kind == "multi-label":
            rep = metrics.multilabel_report(y, out, self.labels, thresholds or [0.5] * len(self.labels))
        else:
            rep = metrics.regression_report(y, out[:, 0], self.bins, cuts=thresholds)
        return {"task": self.kind, **rep}

    @property
    def tuned(self) -> bool:
        """Whether its decisions are tuned on the valid split: a threshold per label (multi-label), the cut points
        between bins (a regression with bins)."""
        return self.kind == "multi-label" or (self.kind == "regression" and bool(self.bins))

    def tune(self, y: np.ndarray, out: np.ndarray) -> list[float] | None:
        """The tuned decisions for outputs `out` against gold `y` (`tuned`), else None."""
        if self.kind == "multi-label":
            return self.tune_thresholds(y, out)
        if self.kind == "regression" and self.bins:
            return self.tune_cuts(y, out[:, 0])
        return None

    def tune_cuts(self, y: np.ndarray, pred: np.ndarray) -> list[float]:
        """Regression with bins: the cut points on the predicted value that bin it most accurately against the
        binned truth (coordinate ascent from the bin edges, candidates at the predictions' quantiles). A model
        trained on squared error pulls its predictions toward the mean, so the extreme bins are under-predicted
        when the prediction is cut at the truth's own edges."""
        from ulmfit.classify.metrics import binned_accuracy

        cuts = list(self.bins)
        candidates = np.unique(np.quantile(pred, np.linspace(0, 1, 201)))
        best = binned_accuracy(y, pred, self.bins, cuts)
        for _ in range(3):
            for k in range(len(cuts)):
                lo = cuts[k - 1] if k else -np.inf
                hi = cuts[k + 1] if k + 1 < len(cuts) else np.inf
                for c in candidates[(candidates > lo) & (candidates < hi)]:
                    trial = cuts[:k] + [float(c)] + cuts[k + 1:]
                    acc = binned_accuracy(y, pred, self.bins, trial)
                    if acc > best + 1e-12:
                        best, cuts = acc, trial
        return cuts

    def tune_thresholds(self, y: np.ndarray, probs: np.ndarray) -> list[float]:
        """Multi-label: per label, the threshold with the best F1 on (y, probs); 0.5 for a label with no
        positive example (its F1 cannot tell thresholds apart)."""
        out = []
        for j in range(probs.shape[1]):
            yj, pj = y[:, j] > 0.5, probs[:, j]
            if not yj.any():
                out.append(0.5)
                continue
            f1 = [_f1(yj, pj >= t) for t in _THRESHOLDS]
            out.append(float(_THRESHOLDS[int(np.argmax(f1))]))
        return out

    def records(self, out: np.ndarray, thresholds: list[float] | None = None) -> list[dict[str, Any]]:
        """One dict per text, what `Classifier.predict` returns and `predict` writes as JSON lines:
        {"label", "probs"} | {"labels", "probs"} | {"value"} (and "bin", from 0, when the task has bins)."""
        if self.kind == "regression":
            if not self.bins:
                return [{"value": float(v)} for v in out[:, 0]]
            bins = np.digitize(out[:, 0], thresholds or self.bins)  # the bin, cut where the valid split said
            return [{"value": float(v), "bin": int(b)} for v, b in zip(out[:, 0], bins)]
        if self.kind == "multi-label":
            t = np.asarray(thresholds or [0.5] * len(self.labels))
            return [{"labels": [lab for lab, on in zip(self.labels, row >= t) if on],
                     "probs": {lab: float(p) for lab, p in zip(self.labels, row)}} for row in out]
        best = out.argmax(axis=1)
        return [{"label": self.labels[int(b)], "probs": {lab: float(p) for lab, p in zip(self.labels, row)}}
                for b, row in zip(best, out)]

    def describe(self) -> str:
        if self.kind == "regression":
            return (f"regression of {self.labels[0]!r} (standardised: mean {self.mean:.4g}, std {self.std:.4g})"
                    + (f", bins {self.bins}" if self.bins else ""))
        n = len(self.labels)
        shown = ", ".join(self.labels[:12]) + (f" and {n - 12} more" if n > 12 else "")
        return f"{self.kind}, {n} labels ({shown})"


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float((y & pred).sum())
    return 0.0 if tp == 0 else 2 * tp / (float(y.sum()) + float(pred.sum()))


def make_task(kind: str, train_cells: list[str | None], train_texts: list[str], *, delimiter: str, target: str,
              bins: list[float]) -> Task:
    """The task of a training run, from its training label cells (labels collected, targets standardised)."""
    if kind == "regression":
        probe = Task(kind="regression", labels=[target])
        values = probe.values(train_cells, "train", train_texts)
        std = float(values.std())
        if len(values) < 2 or std == 0:
            raise UlmfitError(f"every training target is {values[0]:g}: a constant has nothing to learn",
                              hint="check --label-col (a regression target must vary)")
        return Task(kind="regression", labels=[target], mean=float(values.mean()), std=std, bins=list(bins))
    if bins:
        raise UlmfitError("bins apply to regression targets", hint="drop --set bins, or pass --task regression")
    if kind == "multi-label":
        names = sorted({lab for i, c in enumerate(train_cells)
                        for lab in split_labels(c, delimiter, _where("train", i, train_texts[i]))})
        if not names:
            raise UlmfitError("no training document has a label", hint="check --label-col and --set label_delimiter")
        return Task(kind="multi-label", labels=names, delimiter=delimiter)
    names = sorted({c for c in train_cells if c is not None})
    return Task(kind="single-label", labels=names)
