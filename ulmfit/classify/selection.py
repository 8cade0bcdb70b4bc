"""Choosing and scoring what `classify` saves: which epoch model-best holds, and its validation report with the
temperature that calibrates its probabilities (the same batch-independent inference `predict` uses)."""

from __future__ import annotations

import math
from typing import Any

from ulmfit.classify.metrics import fit_temperature, temperature_scale
from ulmfit.classify.model import predict_ids
from ulmfit.classify.task import Task

# A temperature fitted on fewer valid documents follows their noise, so calibration is skipped below this.
MIN_CALIBRATION_DOCS = 200
# On fewer valid documents the weight of the n-gram model follows their noise (a handful of sentences can make
# either model look perfect), so the ensemble is the plain mean of both, the safer prior, instead.
MIN_WEIGHT_DOCS = 100


def best_epoch(history: list[dict[str, Any]], n_valid: int, margin: float,
               kind: str = "single-label") -> tuple[int, str | None]:
    """The epoch model-best holds: the best by validation (accuracy, then loss), unless the last epoch is within
    `margin` standard errors of its accuracy; then the last. Returns (epoch, a log line when noise decided).

    With few labels the validation split is tiny and the best epoch is often an early one that won by a document
    or two; the last epoch has trained longest, so a lead within validation noise (or a tie in accuracy) goes to
    it. `margin` 0 keeps the plain best epoch. Multi-label and regression runs keep the epoch of the lowest valid
    loss: their epoch metrics are measured before thresholds are tuned, the loss needs none.
    """
    if not history:
        return 0, None
    if kind != "single-label":  # multi-label and regression: the lowest valid loss (thresholds come later)
        return min(history, key=lambda m: (m["valid_loss"], -m["epoch"]))["epoch"], None
    best = max(history, key=lambda m: (m["accuracy"], -m["valid_loss"]))
    last = history[-1]
    if margin <= 0 or best is last:
        return best["epoch"], None
    p = (best["accuracy"] + last["accuracy"]) / 2
    se = math.sqrt(p * (1 - p) / max(n_valid, 1))
    lead = best["accuracy"] - last["accuracy"]
    if lead > margin * se:
        return best["epoch"], None
    return last["epoch"], (f"model-best is the last epoch ({last['epoch']}): epoch {best['epoch']} led it by "
                           f"{lead:.4f} valid accuracy, within {margin:g} standard errors ({margin * se:.4f}) of "
                           f"{n_valid} valid documents (--set best_margin=0 keeps the best epoch)")


def valid_report(model, state, docs, y, task: Task, cfg, vocab, dev):
    """(metrics, calibration, outputs) of `state` on the valid split, with the same batch-independent inference
    and the same temperature that `predict` uses. Calibration (a softmax temperature) is single-label only."""
    model.load_state_dict(state)
    model.eval()
    raw = predict_ids(model, docs, bs=max(cfg.bs, 32), pad_idx=vocab.pad_id, seq_len=cfg.seq_len,
                      backwards=cfg.backwards, bos_idx=vocab.bos_id, device=dev, activation=task.activation)
    out = task.outputs(raw)
    if task.kind != "single-label":
        return task.report(y, out), None, out
    plain = task.report(y, out)
    t = fit_temperature(y, out) if cfg.calibrate and len(y) >= MIN_CALIBRATION_DOCS else 1.0
    if t != 1.0:
        out = temperature_scale(out, t)
    report = plain if t == 1.0 else task.report(y, out)
    calibration = {"temperature": t, "valid_docs": int(len(y)), "nll_before": plain["nll"], "nll": report["nll"],
                   "ece_before": plain["ece"], "ece": report["ece"]}
    return report, calibration, out


def ngram_ensemble(y, p_neural, p_ngram, task: Task, weight: float | None,
                   thresholds: list[float] | None = None) -> dict[str, Any]:
    """meta.json["ngram"]: the n-gram model alone and in the ensemble on the valid split, and the weight used:
    `weight` when given; else the one with the lowest valid loss (log-loss; mean squared error for regression),
    or the plain mean (0.5) when the valid split is too small to choose between weights (`MIN_WEIGHT_DOCS`).
    `task` may be a list of labels (single-label)."""
    from ulmfit.classify.ngram import choose_weight, mix

    if not isinstance(task, Task):
        task = Task(kind="single-label", labels=list(task))
    chosen, table = choose_weight(y, p_neural, p_ngram, loss=None if task.kind == "single-label" else task.loss_of)
    if weight is not None:
        w, how = weight, "ngram_weight"
    elif len(y) < MIN_WEIGHT_DOCS:
        w, how = 0.5, f"the plain mean: {len(y)} valid documents are too few to choose a weight"
    else:
        w, how = chosen, "the lowest valid log-loss" if task.kind != "regression" else "the lowest valid MSE"
    return {"weight": w, "chosen_on_valid": how.startswith("the lowest"), "how": how, "weights_tried": table,
            "valid": task.report(y, p_ngram, thresholds),
            "ensemble_valid": task.report(y, mix(p_neural, p_ngram, w), thresholds)}


def log_calibration(cal: dict[str, Any], calibrate: bool, log) -> None:
    if cal["temperature"] != 1.0:
        log(f"calibration: temperature {cal['temperature']:.2f} fitted on {cal['valid_docs']} valid documents "
            f"(ECE {cal['ece_before']:.3f} -> {cal['ece']:.3f}, NLL {cal['nll_before']:.3f} -> {cal['nll']:.3f})")
    elif calibrate and cal["valid_docs"] < MIN_CALIBRATION_DOCS:
        log(f"calibration: skipped, {cal['valid_docs']} valid documents are too few to fit a temperature "
            f"(at least {MIN_CALIBRATION_DOCS})")


class Patience:
    """Early stopping: after `patience` epochs (0: never) in which the monitored metric has not beaten its best
    by more than `min_delta`, `update` returns the line that says so and the run stops. The metric is the
    validation accuracy (single-label) or loss (the other shapes: their metrics before thresholds are tuned
    say less), as `best_epoch` chooses."""

    def __init__(self, patience: int, min_delta: float, kind: str) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.key, self.sign = ("accuracy", 1.0) if kind == "single-label" else ("valid_loss", -1.0)
        self.best: float | None = None
        self.best_epoch = self.waited = 0
        self.stopped_at: int | None = None

    def update(self, m: dict[str, Any]) -> str | None:
        value = self.sign * m[self.key]
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_epoch, self.waited = value, m["epoch"], 0
            return None
        self.waited += 1
        if not self.patience or self.waited < self.patience:
            return None
        self.stopped_at = m["epoch"]
        what = "accuracy" if self.key == "accuracy" else "loss"
        return (f"early stopping after epoch {m['epoch']}: the valid {what} has not improved by more than "
                f"{self.min_delta:g} for {self.patience} epoch{'s' if self.patience > 1 else ''} (best: epoch "
                f"{self.best_epoch}, {self.sign * self.best:.4f}); the rest of the schedule is skipped")
