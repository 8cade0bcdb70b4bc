"""The learning-rate range test (fastai's `lr_find`) for a classifier or a language model: which peak learning
rate to train with, without training anything that is kept.

    build     the stage's own Learner on the stage's own data: `ulmfit.classify.fit`'s setup for a classifier, the
              language model's loaders and Learner for an LM (same batch size after min_steps, loss, AR/TAR,
              clipping, precision, freezing), so the sweep measures the training it advises
    sweep     one optimizer step per learning rate, growing exponentially from `start_lr` to `end_lr` over `steps`
              batches; it stops once the smoothed loss exceeds 4x its minimum (it has diverged), as fastai's does
    suggest   fastai's rules on the smoothed losses, without the first tenth of the sweep (the smoothing is still
              warming up) and the last five points (the divergence): valley, the suggestion (the middle of the
              longest run of falling loss: fastai's default since 2.5, a bolder choice than the other two), steepest
              slope and minimum/10 shown with it
    plot      smoothed loss against learning rate (log x), the three marked -> a PNG, written atomically

The weights are restored after the sweep and the Learner is thrown away: no bundle, run folder or checkpoint is
written, and the bundles read (the LM, a --pretrained one) are only read. The one file written is the PNG (and,
as for every stage, the token store in the cache, `ulmfit.store`).

Each stage keeps its peak learning rate in its own config field, and the result says which, as the exact `--set`
to train with: a classifier's lr is per schedule stage (`--set schedule=[...]`, the swept stage's lr replaced),
pretrain's is `lr`, lm-finetune's `ft_frozen_lr` (phase 1, body frozen) and `ft_lr` (phase 2, all layers).
A schedule stage other than the first is swept from the starting weights (LM encoder, untrained head), not from
the weights the earlier stages would have left: the suggestion for a later stage is a rougher guide.
"""

from __future__ import annotations

import copy
import io
import json
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException, CancelValidException
from fastai.callback.schedule import minimum, steep, valley
from fastai.torch_core import even_mults

from ulmfit import distributed
from ulmfit._io import atomic_write_bytes, progress
from ulmfit._outputs import check_output_file
from ulmfit.classify.config import ClassifierConfig
from ulmfit.classify.fit import _build, _setup
from ulmfit.errors import UlmfitError
from ulmfit.lm.config import LMConfig, schedule
from ulmfit.lm.pretrained import adopt_pretrained_arch, open_pretrained, start_from_pretrained
from ulmfit.lm.learner import setup_learner
from ulmfit.lm.train import read_corpus
from ulmfit.runtime import set_threads
from ulmfit.store import build_store
from ulmfit.tokenize import TokenizerSpec

START_LR, END_LR, STEPS = 1e-7, 10.0, 100  # fastai's lr_find defaults
DIVERGED = 4.0  # the sweep stops once the smoothed loss is this many times its minimum (fastai's stop_div)
BETA = 0.98  # the loss smoothing (fastai's Recorder: an exponential average, debiased)
SKIP_END = 5  # points left out at the end, for the suggestions and the plot (fastai's)
MIN_POINTS = 10  # fewer points than this left to suggest from: an error, not a guess
PNG_TAG = "ulmfit lr-find"  # in the PNG's Software field: an existing file with it may be replaced


@dataclass
class LRFindResult:
    stage: str  # "classifier", "lm pretrain" or "lm finetune"
    swept: str  # what trained during the sweep: the schedule stage / LM phase, its freezing, the batch size
    lrs: list[float]  # the peak (top layer group's) learning rate of each step
    losses: list[float]  # the smoothed training loss after each step
    suggestion: float  # fastai's valley rule
    steep: float  # the steepest slope
    minimum: float  # a tenth of the lr of the minimum loss
    stopped: str  # why the sweep ended
    key: str  # where this stage's learning rate is set: a config field, or a schedule stage's lr
    set_line: str  # the exact --set option to train with the suggestion
    out: Path  # the PNG


# ------------------------------------------------------------------------------------------- the two stages


def lr_find_classifier(src, *, lm, config: ClassifierConfig, out: str | Path, stage: int = 1,
                       text_col: str | None = None, label_col: str | None = None, device: str | None = None,
                       start_lr: float = START_LR, end_lr: float = END_LR, steps: int = STEPS,
                       overwrite: bool = False, log: Callable[[str], None] = print) -> LRFindResult:
    """Sweep the learning rate of schedule stage `stage` (1-based) of a classifier on SRC with the LM bundle `lm`:
    that stage's freezing and discriminative ratio (lr_div), the batch size training would use. Writes OUT (a
    PNG) and returns the suggestion."""
    out = _check_sweep(out, overwrite, start_lr, end_lr, steps)
    if config.self_train:
        raise UlmfitError("lr-find sweeps one classifier's training; self-training has no learning rate of its own",
                          hint="drop --set self_train (the teacher and the student train with the same schedule)")
    chosen = _pick(config.schedule, stage, "schedule stage", "--stage")
    set_threads()
    s = _setup(src, lm, config, text_col, label_col, device, log)
    learn, _ = _build(s, log)
    st = s.cfg.schedule[stage - 1]  # as `chosen`; fit_min_steps changed only bs and the last stage's epochs
    if st.freeze_to == 0:
        learn.unfreeze()
    else:
        learn.freeze_to(st.freeze_to)
    swept = f"schedule stage {stage}: {_trains(st.freeze_to)}, bs {s.cfg.bs}"
    if st.lr_div != 1:
        swept += f", lowest layer group at lr/{st.lr_div:g}"
    lrs, losses, stopped = sweep(learn, start_lr=start_lr, end_lr=end_lr, steps=steps, lr_div=st.lr_div)
    found = suggestions(lrs, losses, steps)
    schedule = [dict(vars(x)) for x in config.schedule]  # as the user resolved it: before min_steps changed it
    schedule[stage - 1]["lr"] = _round(found.valley)
    for x in schedule:
        x["lr_div"] = _round(x["lr_div"], 6)
        if x["lr_div"] == 1:
            del x["lr_div"]
    line = "--set schedule=" + shlex.quote(json.dumps(schedule))
    key = f"the lr of schedule stage {stage} (now {chosen.lr:g}; the other stages keep theirs)"
    return _finish("classifier", swept, lrs, losses, found, stopped, key, line, out, log)


def lr_find_lm(src, *, config: LMConfig, out: str | Path, pretrained: str | Path | None = None, stage: int = 1,
               seed: int = 42, backwards: bool = False, text_col: str | None = None, label_col: str | None = None,
               max_docs: int | None = None, device: str | None = None,
               explicit: set[str] | frozenset[str] = frozenset(), start_lr: float = START_LR,
               end_lr: float = END_LR, steps: int = STEPS, overwrite: bool = False,
               log: Callable[[str], None] = print) -> LRFindResult:
    """Sweep the learning rate of a language model on SRC: pretraining from scratch (no `pretrained`), or phase
    `stage` of fine-tuning `pretrained` (1: body frozen when ft_freeze_epochs > 0, else all layers). Writes OUT
    (a PNG) and returns the suggestion."""
    out = _check_sweep(out, overwrite, start_lr, end_lr, steps)
    kind = "pretrain" if pretrained is None else "finetune"
    source = None
    if pretrained is not None:
        source = open_pretrained(pretrained, backwards)
        config = adopt_pretrained_arch(config, source, explicit)
    phases = schedule(config, kind)
    if not phases:
        raise UlmfitError("nothing to sweep: the schedule has no epochs", hint="pass --epochs 1")
    phase = _pick(phases, stage, f"{kind} phase", "--stage")
    corpus = read_corpus(src, text_col, label_col, max_docs, seed, log)
    if source is None:
        store, init_state = build_store(corpus, spec=TokenizerSpec(**config.tokenizer_spec())), None
    else:
        store, init_state, notes = start_from_pretrained(source, corpus, config, log)
        for n in notes:
            log(n)
    learn, _, cfg, note, _, _ = setup_learner(store, corpus, config, phases, seed=seed, backwards=backwards,
                                              device=device, init_state=init_state)
    if note:
        log(note)
    if phase.trainable == "all":
        learn.unfreeze()
    else:
        learn.freeze()  # only the last layer group trains: embeddings + decoder, as lm-finetune's phase 1
    key = "lr" if kind == "pretrain" else "ft_lr" if phase.trainable == "all" else "ft_frozen_lr"
    swept = f"phase {stage}, {phase.name}, bs {cfg.bs} x seq_len {cfg.seq_len}"
    lrs, losses, stopped = sweep(learn, start_lr=start_lr, end_lr=end_lr, steps=steps)
    found = suggestions(lrs, losses, steps)
    line = f"--set {key}={_round(found.valley)}"
    return _finish(f"lm {kind}", swept, lrs, losses, found, stopped, f"{key} (now {phase.lr:g})", line, out, log)


# ------------------------------------------------------------------------------------------- the sweep


def sweep(learn, *, start_lr: float = START_LR, end_lr: float = END_LR, steps: int = STEPS,
          lr_div: float = 1.0) -> tuple[list[float], list[float], str]:
    """Train `learn` (as frozen as it is) one batch per learning rate, exponentially from `start_lr` to `end_lr`
    in `steps` steps; the layer groups below the top one at fastai's slice(lr/lr_div, lr) ratios. Returns (peak
    lrs, smoothed losses, why it stopped). The model's weights are restored afterwards."""
    if learn.opt is None:
        learn.create_opt()
    n_groups = len(learn.opt.param_lists)
    mults = even_mults(1 / lr_div, 1.0, n_groups) if lr_div != 1 and n_groups > 1 else np.ones(n_groups)
    rec = _Sweep(start_lr, end_lr, steps, np.asarray(mults, dtype=np.float64))
    saved = copy.deepcopy(learn.model.state_dict())
    try:
        with learn.no_logging():
            learn.fit(steps // len(learn.dls.train) + 1, cbs=[rec])
    finally:
        rec.close()
        learn.model.load_state_dict(saved)
        learn.opt.zero_grad()
    if not rec.lrs:
        raise UlmfitError("the sweep ran no training step", hint="the training split needs at least one batch")
    return rec.lrs, rec.losses, rec.stopped


class _Sweep(Callback):
    """Sets each step's learning rate, records the smoothed loss, stops at `steps` or at divergence."""

    order = 60  # after Recorder (50); before_batch still runs before the optimizer step
    run_valid = False

    def __init__(self, start: float, end: float, steps: int, mults: np.ndarray) -> None:
        self.start, self.end, self.steps, self.mults = start, end, steps, mults
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.stopped = f"reached --end-lr {end:g}"
        self._avg, self._best = 0.0, math.inf
        self._bar = progress(range(steps), desc="lr sweep", unit="step")

    def before_batch(self) -> None:
        lr = self.start * (self.end / self.start) ** (len(self.lrs) / (self.steps - 1))
        self.opt.set_hyper("lr", list(lr * self.mults))
        self._lr = lr

    def after_batch(self) -> None:
        next(self._bar, None)
        loss = float(self.loss.detach().float().mean())
        self._avg = BETA * self._avg + (1 - BETA) * loss
        smooth = self._avg / (1 - BETA ** (len(self.lrs) + 1))
        self.lrs.append(self._lr)
        self.losses.append(smooth)
        if not math.isfinite(smooth):
            self.stopped = f"the loss became {smooth} at lr {self._lr:.2g}"
            raise CancelFitException
        self._best = min(self._best, smooth)
        if smooth > DIVERGED * self._best:
            self.stopped = f"diverged at lr {self._lr:.2g} (smoothed loss above {DIVERGED:g}x its minimum)"
            raise CancelFitException
        if len(self.lrs) >= self.steps:
            raise CancelFitException

    def before_validate(self) -> None:
        raise CancelValidException

    def close(self) -> None:
        for _ in self._bar:  # drain (closes the bar)
            pass


@dataclass
class Suggestions:
    valley: float  # the suggestion
    steep: float
    minimum: float  # a tenth of the minimum's lr
    points: dict[str, tuple[float, float]]  # {legend: (lr, smoothed loss)}: the points the plot marks


def suggestions(lrs: list[float], losses: list[float], steps: int) -> Suggestions:
    """fastai's three rules on the sweep without its first tenth and its last SKIP_END points."""
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    n = finite[-1] + 1 if finite else 0
    lo, hi = steps // 10, n - SKIP_END
    if hi - lo < MIN_POINTS:
        where = f"at lr {lrs[n - 1]:.2g} " if n else ""
        raise UlmfitError(f"the sweep stopped after {len(lrs)} steps {where}with {max(hi - lo, 0)} usable points, "
                          f"too few to suggest a learning rate (it needs {MIN_POINTS})",
                          hint="sweep more steps (--steps), or a lower range (--start-lr, --end-lr)")
    x, y = torch.tensor(lrs[lo:hi], dtype=torch.float64), torch.tensor(losses[lo:hi], dtype=torch.float64)
    lr_valley, at_valley = valley(x, y, steps)
    lr_steep, at_steep = steep(x, y, steps)
    lr_min, at_min = minimum(x, y, steps)  # returns the minimum's lr / 10, and the minimum's own point
    return Suggestions(valley=float(lr_valley), steep=float(lr_steep), minimum=float(lr_min), points={
        f"valley {lr_valley:.2g} (suggested)": (float(at_valley[0]), float(at_valley[1])),
        f"steepest slope {lr_steep:.2g}": (float(at_steep[0]), float(at_steep[1])),
        f"minimum {at_min[0]:.2g} (/10 = {lr_min:.2g})": (float(at_min[0]), float(at_min[1]))})


# ------------------------------------------------------------------------------------------- output


def plot_png(lrs: list[float], losses: list[float], points: dict[str, tuple[float, float]], title: str) -> bytes:
    """The smoothed loss against the learning rate (log x, without the last SKIP_END points, as fastai plots it),
    each rule's point marked; PNG bytes tagged PNG_TAG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(len(lrs) - SKIP_END, 2)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        ax.plot(lrs[:end], losses[:end], color="tab:blue")
        for (name, (lr, loss)), color in zip(points.items(), ("tab:red", "tab:orange", "tab:green")):
            ax.plot(lr, loss, "o", color=color, label=name)
        ax.axvline(next(iter(points.values()))[0], color="tab:red", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (top layer group)")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_title(title, fontsize=9)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": PNG_TAG})
    finally:
        plt.close(fig)
    return buf.getvalue()


def is_lr_plot(path: Path) -> bool:
    """Whether `path` is a PNG that lr-find wrote (its Software field says PNG_TAG)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and PNG_TAG.encode() in head


def _finish(stage: str, swept: str, lrs: list[float], losses: list[float], found: Suggestions, stopped: str,
            key: str, line: str, out: Path, log) -> LRFindResult:
    """The PNG written, the suggestion printed (the last line: the option to train with), the result."""
    said = (f"suggested lr {found.valley:.2g} (fastai's valley rule); steepest slope {found.steep:.2g}; "
            f"minimum/10 {found.minimum:.2g}")
    atomic_write_bytes(out, plot_png(lrs, losses, found.points, f"lr-find, {stage}: {swept}\n{said}"))
    log(f"lr sweep ({swept}): {len(lrs)} steps from {lrs[0]:.2g} to {lrs[-1]:.2g}; {stopped}")
    log(said)
    log(f"plot: {out}")
    log(f"it goes in {key}; train with:")
    log(line)
    return LRFindResult(stage=stage, swept=swept, lrs=lrs, losses=losses, suggestion=found.valley, steep=found.steep,
                        minimum=found.minimum, stopped=stopped, key=key.split(" (")[0], set_line=line, out=out)


def _check_sweep(out: str | Path, overwrite: bool, start_lr: float, end_lr: float, steps: int) -> Path:
    """Every option checked before any data is read: the PNG path, the range, the steps, one process."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UlmfitError(f"--out {out} is not a .png file", hint="name the plot's file, e.g. --out lr.png")
    check_output_file(out, option="--out", ours=is_lr_plot, overwrite=overwrite)
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise UlmfitError(f"the sweep needs 0 < --start-lr < --end-lr, not {start_lr:g} and {end_lr:g}",
                          hint=f"e.g. --start-lr {START_LR:g} --end-lr {END_LR:g}")
    if steps < 2 * MIN_POINTS + SKIP_END:
        raise UlmfitError(f"--steps {steps} is too few to suggest from",
                          hint=f"use at least {2 * MIN_POINTS + SKIP_END} (default {STEPS})")
    if distributed.world_size() > 1:
        raise UlmfitError("lr-find runs in one process, not under torchrun", hint="run it without torchrun")
    return out


def _pick(items: list, stage: int, what: str, option: str):
    if not 1 <= stage <= len(items):
        raise UlmfitError(f"{option} {stage}: there is no {what} {stage}",
                          hint=f"the schedule has {len(items)}: pass {option} 1" + (f" to {len(items)}"
                                                                                   if len(items) > 1 else ""))
    return items[stage - 1]


def _trains(freeze_to: int) -> str:
    """What a schedule stage's freezing trains, in words."""
    if freeze_to == 0:
        return "all layers (unfreeze())"
    k = -freeze_to - 1
    return f"freeze_to({freeze_to}): " + ("the head only" if k == 0 else
                                          f"the head + top {k} layer group{'s' if k > 1 else ''}")


def _round(x: float, digits: int = 2) -> float:
    """`x` to `digits` significant digits: a learning rate read off a noisy curve has no more."""
    return float(f"{x:.{digits}g}")

