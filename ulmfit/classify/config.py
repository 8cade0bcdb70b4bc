"""Classifier configuration: presets and training schedules, as plain data.

A schedule is a list of `fit_one_cycle` stages, written out so that it can be printed, stored in every bundle
and overridden from a JSON file or `--set` (or by name: `--set schedule=gradual|all-at-once`). `gradual` is the
one the fastai course (fastbook ch. 10) ran on IMDb, the `paper` preset's:

    learn.fit_one_cycle(1, 2e-2, moms=(0.8, 0.7, 0.8))                          # head only
    learn.freeze_to(-2); learn.fit_one_cycle(1, slice(1e-2/2.6**4, 1e-2), ...)  # + last LSTM layer
    learn.freeze_to(-3); learn.fit_one_cycle(1, slice(5e-3/2.6**4, 5e-3), ...)  # + next LSTM layer
    learn.unfreeze();    learn.fit_one_cycle(2, slice(1e-3/2.6**4, 1e-3), ...)  # everything

`all-at-once` (the `small` preset's, see PRESETS) is one stage,
`learn.unfreeze(); learn.fit_one_cycle(5, slice(1e-2/2.6**4, 1e-2), ...)`.

Presets, `--config`, `--set` and explicit options are resolved by `ulmfit.config`, the engine the language model
uses too. Only the standard library is imported here: the CLI validates a config before torch is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ulmfit import config as engine
from ulmfit.errors import UlmfitError
from ulmfit.runtime import PRECISIONS

LR_DIV = 2.6**4  # ULMFiT's discriminative fine-tuning: each layer group down trains at lr/2.6


@dataclass
class Stage:
    """One `fit_one_cycle` call of the gradual-unfreezing schedule."""

    freeze_to: int  # -1: classifier head only; -2: head + last LSTM layer; ...; 0: the whole model
    epochs: int  # epochs of this one-cycle run
    lr: float  # learning rate of the top layer group (the head)
    lr_div: float = 1.0  # the lowest group trains at lr/lr_div, groups between geometrically (fastai's slice)

    def describe(self) -> str:
        if self.freeze_to == 0:
            what, groups = "unfreeze()", "all layers"
        else:
            k = -self.freeze_to - 1
            what = f"freeze_to({self.freeze_to})"
            groups = "head only" if k == 0 else f"head + top {k} layer group{'s' if k > 1 else ''}"
        if self.lr_div == 1:
            lr = f"{self.lr:g}"
        elif abs(self.lr_div - LR_DIV) < 1e-9:
            lr = f"slice({self.lr:g}/2.6**4, {self.lr:g})"
        else:
            lr = f"slice({self.lr / self.lr_div:.3g}, {self.lr:g})"
        return f"{what:<14} {self.epochs} epoch{'s' if self.epochs != 1 else ' '}  lr {lr:<26} ({groups})"


def ulmfit_schedule() -> list[Stage]:
    """The fastai course's IMDb classifier schedule (5 epochs)."""
    return [
        Stage(freeze_to=-1, epochs=1, lr=2e-2),
        Stage(freeze_to=-2, epochs=1, lr=1e-2, lr_div=LR_DIV),
        Stage(freeze_to=-3, epochs=1, lr=5e-3, lr_div=LR_DIV),
        Stage(freeze_to=0, epochs=2, lr=1e-3, lr_div=LR_DIV),
    ]


def all_at_once_schedule() -> list[Stage]:
    """The paper's "Full" ablation, no gradual unfreezing: every layer from the start, 5 epochs at the course's
    second-stage learning rates, slice(1e-2/2.6**4, 1e-2)."""
    return [Stage(freeze_to=0, epochs=5, lr=1e-2, lr_div=LR_DIV)]


# Schedules by name: `--set schedule=all-at-once` instead of a list of stages.
SCHEDULES = {"gradual": ulmfit_schedule, "all-at-once": all_at_once_schedule}


def _stage(obj: Any, where: str) -> Stage:
    if isinstance(obj, Stage):
        return obj
    if not isinstance(obj, dict):
        raise UlmfitError(f"{where}: a schedule stage must be an object like "
                          '{"freeze_to": -1, "epochs": 1, "lr": 0.02}')
    names = {f.name for f in dataclasses.fields(Stage)}
    unknown = sorted(set(obj) - names)
    if unknown:
        raise UlmfitError(f"{where}: unknown schedule key(s) {', '.join(unknown)}",
                          hint=f"a stage has {', '.join(sorted(names))}")
    missing = sorted({"freeze_to", "epochs", "lr"} - set(obj))
    if missing:
        raise UlmfitError(f"{where}: schedule stage lacks {', '.join(missing)}")
    try:
        st = Stage(freeze_to=int(obj["freeze_to"]), epochs=int(obj["epochs"]), lr=float(obj["lr"]),
                   lr_div=float(obj.get("lr_div", 1.0)))
    except (TypeError, ValueError) as e:
        raise UlmfitError(f"{where}: bad schedule stage {obj!r} ({e})") from None
    return st


def _schedule(value: Any) -> list[Stage]:
    """A schedule's name (SCHEDULES) or a list of stages."""
    if isinstance(value, str):
        if value.strip() not in SCHEDULES:
            raise UlmfitError(f"unknown schedule {value!r}",
                              hint=f"name one of {', '.join(SCHEDULES)}, or give a list of stages")
        return SCHEDULES[value.strip()]()
    if not isinstance(value, list):
        raise UlmfitError("schedule must be a schedule's name or a list of stages")
    return [_stage(s, f"schedule[{i}]") for i, s in enumerate(value)]


def _class_weights(value: Any) -> str | list[float]:
    """"none", "balanced", or one weight per label: [1, 3] or "1,3" (the form --class-weights takes)."""
    if isinstance(value, str):
        if value.strip() in ("none", "balanced"):
            return value.strip()
        try:
            value = [float(v) for v in value.split(",")]
        except ValueError:
            pass
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    raise UlmfitError(f"class_weights must be \"none\", \"balanced\" or a list of numbers, not {value!r}")


@dataclass
class ClassifierConfig:
    """Everything that decides a classifier run. Written, resolved, into every classifier bundle.

    The encoder (arch and sizes) is not here: it comes from the LM bundle the encoder is taken from (or, with
    `from_scratch`, from the LM preset of the same name). The encoder's dropouts are fastai's
    `awd_lstm_clas_config` times `drop_mult`.
    """

    preset: str = "small"
    schedule: list[Stage] = field(default_factory=ulmfit_schedule,  # presets may name another (SCHEDULES)
                                  metadata={"coerce": _schedule})
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)  # one-cycle momentum schedule (fastai TextLearner)
    wd: float = 0.01  # decoupled weight decay (fastai's Adam default)
    bs: int = 32  # documents per batch
    seq_len: int = 72  # tokens per chunk the encoder reads at a time (the LM's seq_len names the same idea)
    max_len: int = 72 * 20  # only the last max_len tokens' outputs are pooled (fastai default)
    drop_mult: float = 0.5  # scales every dropout of awd_lstm_clas_config (the course used 0.5)
    lin_ftrs: list[int] = field(default_factory=lambda: [50])  # hidden sizes of the head
    head_ps: list[float] = field(default_factory=lambda: [0.1])  # head dropouts (one per lin_ftrs entry)
    alpha: float = 2.0  # activation regularization (AR) of the last LSTM output
    beta: float = 1.0  # temporal activation regularization (TAR)
    label_smoothing: float = 0.0  # 0: plain cross-entropy; e.g. 0.1 for noisy labels
    # "none", "balanced" (n/(k*count)) or one weight per label
    class_weights: str | list[float] = field(default="none", metadata={"coerce": _class_weights})
    backwards: bool = False  # read texts right to left (needs a backward LM)
    from_scratch: bool = False  # random encoder init, no LM: the baseline ULMFiT is measured against
    max_train: int | None = None  # keep only N training documents (stratified): the low-shot setting
    min_steps: int = 0  # fewer optimizer steps than this in the whole schedule: smaller bs, longer last stage
    patience: int = 0  # early stopping: stop after this many epochs without a better valid metric (0: never)
    min_delta: float = 0.0  # ...better by more than this (accuracy single-label, valid loss for the other shapes)
    best_margin: float = 2.0  # an earlier epoch is model-best only if it beats the last by this many std. errors
    precision: str = "auto"  # "auto": bf16 on a GPU or CPU that has it (else fp16 / fp32) | "fp32" | "bf16" | "fp16"
    # "auto": from the training labels (printed) | "single-label" | "multi-label" | "regression" (ulmfit.classify.task)
    task: str = "auto"
    label_delimiter: str = ","  # multi-label: between the labels of one cell ("2,14"); spaces around them ignored
    pos_weight: str = "none"  # multi-label: "none" | "balanced" (each label's negatives/positives, at most 100)
    regression_loss: str = "mse"  # regression: "mse" | "huber" (smooth L1 on the standardised target)
    bins: list[float] = field(default_factory=list)  # regression: edges for the binned value's accuracy too
    calibrate: bool = True  # fit a softmax temperature on the valid split (>= 200 docs): honest probabilities
    ngram: bool = True  # also fit the TF-IDF + logistic-regression baseline on the training split (in the bundle)
    ngram_weight: float | None = None  # its weight w in (1-w)*neural + w*n-gram; none: chosen on the valid split
    self_train: int = 0  # > 0: a teacher labels this many unlabeled texts, a student trains on its surest labels too
    self_train_keep: float = 0.5  # the fraction of them the student gets: the most confident, balanced per class
    seed: int = 42

    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.schedule)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moms"] = list(self.moms)
        return d

    def describe_schedule(self) -> str:
        kind = "Gradual unfreezing schedule" if len(self.schedule) > 1 else "Schedule"
        lines = [f"{kind} ({self.total_epochs()} epochs, moms {tuple(self.moms)}, "
                 f"bs {self.bs}, drop_mult {self.drop_mult}):"]
        lines += [f"  stage {i + 1}: {s.describe()}" for i, s in enumerate(self.schedule)]
        return "\n".join(lines)


# Presets: the training knobs per compute budget, one reason a knob. The encoder's sizes come from the LM.
PRESETS: dict[str, dict[str, Any]] = {
    # Tests and smoke runs: a tiny model on a toy corpus gets few optimizer steps.
    "tiny": dict(
        bs=16,                        # small batches: more steps from few documents
        seq_len=16, max_len=16 * 20,  # short chunks, so that documents of several chunks are exercised
        drop_mult=0.5,                # the course's
        precision="fp32",             # as the tiny LM: a test's numbers must not depend on the CPU
        # The course's stages at a few times its learning rates, the lowest group at lr/10 (not lr/2.6**4) so
        # that the embeddings still move in so few steps.
        schedule=[dict(freeze_to=-1, epochs=1, lr=5e-2), dict(freeze_to=-2, epochs=1, lr=3e-2, lr_div=10),
                  dict(freeze_to=-3, epochs=1, lr=2e-2, lr_div=10), dict(freeze_to=0, epochs=3, lr=1e-2, lr_div=10)],
    ),
    # A CPU.
    "small": dict(
        bs=32,                        # keeps the step time low on two cores
        seq_len=72, max_len=72 * 20,  # fastai's
        drop_mult=0.5,                # the course's
        min_steps=130,                # few labels: a smaller batch and more epochs, so the head gets enough steps
        schedule="all-at-once",       # every layer from the start: the lower layers of a weak (CPU-trained) LM
                                      # need to move; gradual unfreezing (`paper`) suits a strong LM
    ),
    # The ULMFiT paper, for a GPU.
    "paper": dict(
        bs=64,                        # the paper's batch size for classifier fine-tuning
        seq_len=72, max_len=72 * 20,  # fastai's
        drop_mult=0.5,                # the course's
        min_steps=130,                # as small: few labels still get enough steps
        schedule="gradual",           # the course's gradual unfreezing
    ),
}
# The language model's QRNN presets name the same compute budgets: the encoder comes from the LM bundle, so the
# classifier's training knobs are those of the budget (one --preset works for every stage).
PRESETS["small-lstm"] = PRESETS["small-qrnn"] = PRESETS["small"]
PRESETS["paper-qrnn"] = PRESETS["paper"]


def field_names() -> list[str]:
    return engine.field_names(ClassifierConfig)


def parse_sets(sets: Iterable[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs, converted by field type (`ulmfit.config`); unknown keys are errors."""
    return engine.parse_sets(ClassifierConfig, sets)


def load_overrides(path: Path | None) -> dict[str, Any]:
    """A `--config` JSON file's values, converted by field type; {} without one."""
    return {} if path is None else engine.read_config_file(ClassifierConfig, path)


def scale_epochs(schedule: list[Stage], epochs: int) -> list[Stage]:
    """`--epochs N`: N epochs in all. The unfreezing stages keep one epoch each and the last stage takes the
    rest (with the default schedule, N=5 is the course's run and N=10 trains the unfrozen model 7 epochs)."""
    n = len(schedule)
    if epochs < n:
        raise UlmfitError(f"--epochs {epochs} is fewer than the schedule's {n} stages",
                          hint="give at least one epoch per stage, or a shorter schedule with --config")
    out = [dataclasses.replace(s, epochs=1) for s in schedule[:-1]]
    out.append(dataclasses.replace(schedule[-1], epochs=epochs - (n - 1)))
    return out


MIN_BS = 8  # fit_min_steps halves bs no further: below it the batch gradient is mostly noise


def fit_min_steps(cfg: ClassifierConfig, n_train: int) -> tuple[ClassifierConfig, str | None]:
    """A schedule for few labels: when N training documents give fewer than `cfg.min_steps` optimizer steps in
    the whole schedule, halve bs (not below 8), then lengthen the last stage until they do.

    Returns the config to train with and a one-line note saying what changed (None when nothing did). The
    schedule counts epochs, and with 90 documents an epoch at bs 32 is two steps: too few for the head to learn
    anything, however good the LM is.
    """
    total = cfg.total_epochs()

    def per_epoch(bs: int) -> int:  # the training loader drops the last partial batch unless it is the only one
        return n_train // bs if n_train > bs else 1

    before = per_epoch(cfg.bs) * total
    if cfg.min_steps <= 0 or before >= cfg.min_steps:
        return cfg, None
    def enough(bs: int) -> bool:
        return per_epoch(bs) * total >= cfg.min_steps

    bs = engine.halve_batch(cfg.bs, MIN_BS, enough)
    if not enough(bs) and bs > MIN_BS:  # a batch that is no power of two times MIN_BS ends at MIN_BS itself
        bs = MIN_BS
    per = per_epoch(bs)
    extra = max(0, -(-(cfg.min_steps - per * total) // per))
    schedule = list(cfg.schedule)
    schedule[-1] = dataclasses.replace(schedule[-1], epochs=schedule[-1].epochs + extra)
    new = dataclasses.replace(cfg, bs=bs, schedule=schedule)
    note = (f"few training documents: {n_train} at bs {cfg.bs} are {before} optimizer steps in the whole "
            f"schedule, fewer than min_steps {cfg.min_steps}; training at bs {bs} with {extra} more epoch"
            f"{'s' if extra != 1 else ''} in the last stage ({per * new.total_epochs()} steps; --set min_steps=0 "
            f"keeps the schedule as given)")
    return new, note


def resolve_config(preset: str = "small", *, config_file: Path | None = None, sets: list[str] | None = None,
                   overrides: Mapping[str, Any] | None = None, epochs: int | None = None) -> ClassifierConfig:
    """Preset, then the JSON file, then `--set`, then explicit options (`overrides`, e.g. --bs), then --epochs.

    Unknown keys are errors; values are converted to the field's type and validated here, before any data is
    read or any model is built.
    """
    engine.check_preset(PRESETS, preset)
    values = engine.user_values(ClassifierConfig, config_file, sets, overrides)
    if "preset" in values:
        raise UlmfitError("set the preset with --preset, not in the config")
    cfg = engine.from_preset(ClassifierConfig, PRESETS, preset, {**values, "preset": preset})
    if epochs is not None:
        cfg.schedule = scale_epochs(cfg.schedule, epochs)
    validate(cfg)
    return cfg


def validate(cfg: ClassifierConfig) -> None:
    if not cfg.schedule:
        raise UlmfitError("the schedule has no stages")
    for i, s in enumerate(cfg.schedule):
        if s.epochs < 1:
            raise UlmfitError(f"schedule stage {i + 1} has {s.epochs} epochs; each stage needs at least 1")
        if s.freeze_to > 0:
            raise UlmfitError(f"schedule stage {i + 1}: freeze_to must be negative (-1 = head only) or 0 "
                              f"(everything), not {s.freeze_to}")
        if not s.lr > 0 or not s.lr_div >= 1:
            raise UlmfitError(f"schedule stage {i + 1}: lr must be > 0 and lr_div >= 1")
    if len(cfg.moms) != 3:
        raise UlmfitError("moms must be three numbers (start, middle, end), e.g. [0.8, 0.7, 0.8]")
    for name in ("bs", "seq_len", "max_len"):
        if getattr(cfg, name) < 1:
            raise UlmfitError(f"{name} must be at least 1, not {getattr(cfg, name)}")
    if cfg.max_len < cfg.seq_len:
        raise UlmfitError(f"max_len ({cfg.max_len}) must be at least seq_len ({cfg.seq_len})")
    if len(cfg.head_ps) != len(cfg.lin_ftrs):
        raise UlmfitError(f"head_ps needs one dropout per lin_ftrs entry ({len(cfg.lin_ftrs)})")
    if not 0 <= cfg.label_smoothing < 1:
        raise UlmfitError(f"label_smoothing must be in [0, 1), not {cfg.label_smoothing}")
    if not 0 <= cfg.drop_mult:
        raise UlmfitError(f"drop_mult must be >= 0, not {cfg.drop_mult}")
    if cfg.min_steps < 0:
        raise UlmfitError(f"min_steps must be >= 0, not {cfg.min_steps}")
    if cfg.precision not in PRECISIONS:
        raise UlmfitError(f"unknown precision {cfg.precision!r}", hint=f"choose one of: {', '.join(PRECISIONS)}")
    if cfg.patience < 0 or cfg.min_delta < 0:
        raise UlmfitError(f"patience and min_delta must be >= 0 (0: no early stopping), not {cfg.patience}, "
                          f"{cfg.min_delta}")
    if cfg.best_margin < 0:
        raise UlmfitError(f"best_margin must be >= 0, not {cfg.best_margin}")
    if cfg.ngram_weight is not None and not 0 <= cfg.ngram_weight <= 1:
        raise UlmfitError(f"ngram_weight must be in [0, 1] (or none: chosen on the valid split), not {cfg.ngram_weight}")
    if cfg.ngram_weight and not cfg.ngram:
        raise UlmfitError("ngram_weight needs the n-gram model", hint="drop --set ngram=off, or set ngram_weight=0")
    from ulmfit.classify.task import AUTO, TASKS

    if cfg.task not in (AUTO, *TASKS):
        raise UlmfitError(f"unknown task {cfg.task!r}", hint=f"use one of: {', '.join((AUTO, *TASKS))}")
    if not cfg.label_delimiter or cfg.label_delimiter.strip() != cfg.label_delimiter:
        raise UlmfitError(f"label_delimiter must be a character without spaces, not {cfg.label_delimiter!r}",
                          hint="e.g. --set label_delimiter='|'")
    if cfg.pos_weight not in ("none", "balanced"):
        raise UlmfitError(f"pos_weight must be none or balanced, not {cfg.pos_weight!r}")
    if cfg.regression_loss not in ("mse", "huber"):
        raise UlmfitError(f"regression_loss must be mse or huber, not {cfg.regression_loss!r}")
    if list(cfg.bins) != sorted(set(cfg.bins)):
        raise UlmfitError(f"bins must be increasing edges, not {cfg.bins}", hint="e.g. --set bins=0.2,0.4,0.6,0.8")
    if cfg.self_train < 0:
        raise UlmfitError(f"self_train must be >= 0 (0 = off), not {cfg.self_train}")
    if not 0 < cfg.self_train_keep <= 1:
        raise UlmfitError(f"self_train_keep must be in (0, 1], not {cfg.self_train_keep}",
                          hint="e.g. 0.5 keeps the surer half of the pseudo-labels")
    if cfg.max_train is not None and cfg.max_train < 2:
        raise UlmfitError(f"--max-train must be at least 2, not {cfg.max_train}")
    if isinstance(cfg.class_weights, list) and any(w <= 0 for w in cfg.class_weights):
        raise UlmfitError("class weights must be positive")


def config_from_dict(d: dict[str, Any]) -> ClassifierConfig:
    """Rebuild the config stored in a bundle (unknown keys from newer versions are errors, as everywhere)."""
    d = dict(d)
    if "bptt" in d:  # bundles written before the rename to seq_len (one name for one idea across stages)
        d["seq_len"] = d.pop("bptt")
    preset = d.pop("preset", "small")
    unknown = sorted(set(d) - set(field_names()))
    if unknown:
        raise UlmfitError(f"classifier config has unknown key(s) {', '.join(unknown)}",
                          hint="was the model written by a newer ulmfit?")
    values = {k: engine.coerce(ClassifierConfig, k, v) for k, v in d.items()}
    return ClassifierConfig(preset=preset, **values)
