"""The fastai side of classifier training: the Learner (loss, metrics, layer groups for discriminative learning
rates) and the callback that reports each epoch."""

from __future__ import annotations

import time
from collections.abc import Callable

import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import AccumMetric, accuracy
from fastai.text.learner import TextLearner
from fastai.text.models.awdlstm import awd_lstm_clas_split
from fastcore.basics import noop

from ulmfit._io import progress
from ulmfit._memory import trim_callback
from ulmfit.classify.config import ClassifierConfig
from ulmfit.classify.metrics import macro_f1


def make_learner(dls, model, cfg: ClassifierConfig, labels: list[str], weights: list[float] | None):
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=dls.device)
    loss = CrossEntropyLossFlat(weight=weight, label_smoothing=cfg.label_smoothing)
    f1 = AccumMetric(macro_f1, dim_argmax=-1, to_np=True, invert_arg=True, n_class=len(labels), name="macro_f1")
    learn = TextLearner(dls, model, loss_func=loss, metrics=[accuracy, f1], splitter=awd_lstm_clas_split,
                        alpha=cfg.alpha, beta=cfg.beta, moms=tuple(cfg.moms), wd=cfg.wd, cbs=[trim_callback()])
    learn.remove_cbs(ProgressCallback)  # our own bars and one line per epoch instead of fastprogress' tables
    learn.logger = noop
    return learn


def epoch_callback(stage_of: Callable[[], int], on_epoch: Callable[[dict], None]) -> Callback:
    """Batch progress bars, and one metrics dict per epoch handed to `on_epoch`."""
    return _EpochLog(stage_of, on_epoch)


class _EpochLog(Callback):
    order = 60  # after Recorder (50), so this epoch's values are in recorder.log

    def __init__(self, stage_of: Callable[[], int], on_epoch: Callable[[dict], None]) -> None:
        self.stage_of, self.on_epoch = stage_of, on_epoch

    def before_epoch(self):
        self._t0 = time.time()

    def before_train(self):
        self._bar = progress(range(len(self.dl)), desc=f"stage {self.stage_of()} epoch {self.epoch + 1} train",
                             unit="batch")

    def before_validate(self):
        self._bar = progress(range(len(self.dl)), desc="  validate", unit="batch")

    def after_batch(self):
        next(self._bar, None)

    def after_train(self):
        for _ in self._bar:  # drain (closes the bar)
            pass

    after_validate = after_train

    def after_epoch(self):
        names = list(self.recorder.metric_names[1:-1])  # epoch ... time
        values = dict(zip(names, self.recorder.log[1:len(names) + 1]))
        self.on_epoch({"stage": self.stage_of(), "train_loss": float(values["train_loss"]),
                       "valid_loss": float(values["valid_loss"]), "accuracy": float(values["accuracy"]),
                       "macro_f1": float(values["macro_f1"]), "seconds": round(time.time() - self._t0, 2)})
