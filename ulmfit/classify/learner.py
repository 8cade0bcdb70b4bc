"""The fastai side of classifier training: the Learner (loss, metrics, layer groups for discriminative learning
rates) and the callback that reports each epoch."""

from __future__ import annotations

import time
from collections.abc import Callable

import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.losses import BaseLoss, BCEWithLogitsLossFlat, CrossEntropyLossFlat, MSELossFlat
from fastai.metrics import AccumMetric, accuracy
from fastai.text.learner import TextLearner
from fastai.text.models.awdlstm import awd_lstm_clas_split
from fastcore.basics import noop

from ulmfit._io import progress
from ulmfit._memory import trim_callback
from ulmfit.classify.config import ClassifierConfig
from ulmfit.classify.metrics import macro_f1, multilabel_report, regression_report
from ulmfit.classify.task import Task
from ulmfit.errors import UlmfitError


def make_learner(dls, model, cfg: ClassifierConfig, task: Task, weights: list[float] | None):
    learn = TextLearner(dls, model, loss_func=_loss(cfg, task, weights, dls.device), metrics=_metrics(task),
                        splitter=awd_lstm_clas_split, alpha=cfg.alpha, beta=cfg.beta, moms=tuple(cfg.moms),
                        wd=cfg.wd, cbs=[trim_callback()])
    learn.remove_cbs(ProgressCallback)  # our own bars and one line per epoch instead of fastprogress' tables
    learn.logger = noop
    return learn


def _loss(cfg: ClassifierConfig, task: Task, weights: list[float] | None, device):
    """Cross-entropy (class weights, label smoothing), binary cross-entropy per label (positive weights), or MSE /
    Huber on the standardised target."""
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
    if cfg.label_smoothing and task.kind != "single-label":
        raise UlmfitError(f"label_smoothing applies to single-label classifiers, not to {task.kind}",
                          hint="drop --label-smoothing")
    if task.kind == "single-label":
        return CrossEntropyLossFlat(weight=weight, label_smoothing=cfg.label_smoothing)
    if task.kind == "multi-label":
        return BCEWithLogitsLossFlat(pos_weight=weight)
    if cfg.regression_loss == "huber":
        return BaseLoss(torch.nn.HuberLoss, floatify=True)
    return MSELossFlat()


def _metrics(task: Task) -> list:
    """What each epoch line shows besides the losses (the valid split, before any threshold is tuned)."""
    if task.kind == "single-label":
        return [accuracy, AccumMetric(macro_f1, dim_argmax=-1, to_np=True, invert_arg=True, n_class=len(task.labels),
                                      name="macro_f1")]
    if task.kind == "multi-label":
        def f1(average):
            def score(y, pred):
                return multilabel_report(y, pred, task.labels, [0.5] * len(task.labels))[f"{average}_f1"]
            return AccumMetric(score, activation="sigmoid", flatten=False, to_np=True, invert_arg=True,
                               name=f"{average}_f1")
        return [f1("micro"), f1("macro")]

    def mae(y, pred):  # in the target's own units
        return float(np.abs(pred - y).mean()) * task.std

    def pearson(y, pred):
        return regression_report(y, pred)["pearson"]
    return [AccumMetric(mae, to_np=True, invert_arg=True, name="mae"),
            AccumMetric(pearson, to_np=True, invert_arg=True, name="pearson")]


def epoch_callback(stage_of: Callable[[], int], on_epoch: Callable[[dict], None],
                   on_step: Callable[[float, float], None] | None = None) -> Callback:
    """Batch progress bars, one metrics dict per epoch handed to `on_epoch`, and (train loss, lr of the top layer
    group) after each optimizer step handed to `on_step`."""
    return _EpochLog(stage_of, on_epoch, on_step)


class _EpochLog(Callback):
    order = 60  # after Recorder (50), so this epoch's values are in recorder.log

    def __init__(self, stage_of: Callable[[], int], on_epoch: Callable[[dict], None],
                 on_step: Callable[[float, float], None] | None = None) -> None:
        self.stage_of, self.on_epoch, self.on_step = stage_of, on_epoch, on_step

    def before_epoch(self):
        self._t0, self._skipped = time.time(), False

    def after_cancel_epoch(self):  # fastai's start_epoch skips the epochs a resumed run already trained
        self._skipped = True

    def before_train(self):
        self._bar = progress(range(len(self.dl)), desc=f"stage {self.stage_of()} epoch {self.epoch + 1} train",
                             unit="batch")

    def before_validate(self):
        self._bar = progress(range(len(self.dl)), desc="  validate", unit="batch")

    def after_batch(self):
        next(self._bar, None)
        if self.training and self.on_step is not None:
            self.on_step(float(self.loss.detach()), float(self.opt.hypers[-1]["lr"]))

    def after_train(self):
        for _ in self._bar:  # drain (closes the bar)
            pass

    after_validate = after_train

    def after_epoch(self):
        if getattr(self, "_skipped", True):  # skipped before this callback's before_epoch ran: not an epoch
            return
        names = list(self.recorder.metric_names[1:-1])  # epoch ... time
        values = {n: float(v) for n, v in zip(names, self.recorder.log[1:len(names) + 1])}
        self.on_epoch({"stage": self.stage_of(), **values, "seconds": round(time.time() - self._t0, 2)})


def smooth_loss_state(learn) -> dict:
    """fastai's smoothed train loss (an average over the whole one-cycle, not reset per epoch): what a resumed run
    needs to report the same train_loss as the uninterrupted one."""
    sm = learn.recorder.smooth_loss
    return {"count": int(sm.count), "val": float(sm.val)}


def restore_smooth_loss(state: dict) -> Callback:
    """A callback that sets the smoothed train loss to `state` once, when the next fit begins (after the Recorder
    reset it)."""
    return _RestoreSmooth(state)


class _RestoreSmooth(Callback):
    order = 55  # after Recorder (50) resets it in before_fit

    def __init__(self, state: dict) -> None:
        self.state = state

    def before_fit(self):
        if self.state is not None:
            sm = self.recorder.smooth_loss
            sm.count, sm.val = self.state["count"], torch.tensor(self.state["val"])
            self.state = None
