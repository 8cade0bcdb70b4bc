"""Train language models (AWD-LSTM or QRNN, `LMConfig.arch`): `pretrain` (from scratch) and `finetune` (from a
bundle or fastai's WT103).

The recipe, top to bottom:
    setup     resolve config → read corpus → token store (+ pretrained weights, ulmfit.lm.pretrained) → LM stream
              loaders → model
    train     for each phase of the schedule: freeze/unfreeze, one-cycle fit (fastai Learner with the
              ULMFiT callbacks: ModelResetter, RNNRegularizer AR/TAR, GradientClip)
    save      after every epoch: OUT/checkpoint/ (ulmfit.lm.checkpoint) and OUT/model-best/ when the validation
              loss improved; OUT/model-last/ in a `finally:`
    cleanup   model-best's meta marked complete, the checkpoint removed
`resume=True` restores the checkpoint and continues with the same batches and schedule.

Under torchrun every rank runs this same recipe (`ulmfit.distributed`): each trains on its own rows of the stream,
rank 0 alone locks OUT, writes and prints.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastai.learner import Learner

from ulmfit import distributed
from ulmfit._io import read_json, write_json
from ulmfit._rundir import run_dir
from ulmfit.bundle import direction_name, write_bundle
from ulmfit.data import Corpus, load_corpus, subsample
from ulmfit.errors import UlmfitError
from ulmfit.lm import checkpoint
from ulmfit.lm.checkpoint import Resumed
from ulmfit.lm.config import LMConfig, Phase, format_config, format_schedule, resolve_config, schedule, validate
from ulmfit.lm.learner import TRAIN_SPLITS, VALID_SPLIT, fit_one_cycle, setup_learner
from ulmfit.lm.model import encoder_state
from ulmfit.lm.progress import epoch_callback, log_every
from ulmfit.lm.pretrained import adopt_pretrained_arch, open_pretrained, start_from_pretrained
from ulmfit.runlog import RunLog
from ulmfit.runtime import resolve_precision
from ulmfit.store import TokenStore, build_store
from ulmfit.tokenize import TokenizerSpec


@dataclass
class LMResult:
    """What a training run produced."""

    out: Path
    best: Path                    # OUT/model-best (lowest validation loss)
    last: Path                    # OUT/model-last
    metrics: list[dict]           # one dict per epoch: epoch, phase, train_loss, valid_loss, accuracy, perplexity
    best_epoch: int
    config: LMConfig
    resumed_from_epoch: int = 0   # epochs restored from the checkpoint (0 = fresh run)
    notes: list[str] = field(default_factory=list)   # e.g. the vocabulary overlap of lm-finetune

    @property
    def final(self) -> dict:
        return self.metrics[-1] if self.metrics else {}


# ------------------------------------------------------------------------------------------- public API


def pretrain(src: str | Path | Corpus, out: str | Path, cfg: LMConfig | str = "small", *, seed: int = 42,
             backwards: bool = False, device: str | None = None, text_col: str | None = None,
             label_col: str | None = None, max_docs: int | None = None, resume: bool = False,
             overwrite: bool = False, preset: str | None = None, also: Sequence[str | Path | Corpus] = (),
             log: Callable[[str], None] = print) -> LMResult:
    """Train an LM (cfg.arch) from scratch on `src` (labels ignored) and write OUT/model-best + OUT/model-last.

    Splits "train" and "unsup" train the model, "valid" validates it, "test" is never read. The tokenizer and
    vocabulary are trained on those non-test splits (ulmfit.store.build_store). `also`: more sources whose
    non-test documents join `src`'s (after `max_docs` capped `src`), e.g. the user's own unlabeled texts beside a
    public corpus.
    """
    preset, cfg = _as_config(cfg, preset)
    log_every()  # a bad ULMFIT_LOG_EVERY fails here, before any data is read
    out = Path(out)
    phases = schedule(cfg, "pretrain")
    if not phases:
        raise UlmfitError("nothing to train: epochs is 0", hint="pass --epochs 1 or more")
    with distributed.session(device):
        log = distributed.main_log(log)
        distributed.check_same({**_options("pretrain", src, None, out, cfg, preset, seed, backwards, text_col,
                                           label_col, max_docs, resume, overwrite, device),
                                "also": [a.fingerprint if isinstance(a, Corpus) else str(a) for a in also]})
        with distributed.on_main(run_dir(out, overwrite=overwrite, resume=resume, log=log), f"checking --out {out}"):
            ckpt = checkpoint.find(out, resume)
            with distributed.main_first("reading the corpus"):  # a registry download: once
                corpus = read_corpus(src, text_col, label_col, max_docs, seed, log, also)
            if ckpt is not None:
                store = checkpoint.rebuild_store(ckpt, corpus)
            else:
                log("training the tokenizer and building the token store on the non-test splits ...")
                store = build_store(corpus, spec=TokenizerSpec(**cfg.tokenizer_spec()))
            return _run(stage="pretrain", cfg=cfg, preset=preset, phases=phases, store=store, corpus=corpus,
                        out=out, seed=seed, backwards=backwards, device=device, init_state=None,
                        pretrained_info=None, ckpt=ckpt, log=log)


def finetune(src: str | Path | Corpus, pretrained: str | Path, out: str | Path, cfg: LMConfig | str = "small", *,
             seed: int = 42, backwards: bool = False, device: str | None = None, text_col: str | None = None,
             label_col: str | None = None, max_docs: int | None = None, resume: bool = False,
             overwrite: bool = False, preset: str | None = None, explicit: set[str] | frozenset[str] = frozenset(),
             log: Callable[[str], None] = print) -> LMResult:
    """Fine-tune a pretrained LM on a domain corpus with ULMFiT's schedule (frozen body, then all layers).

    `pretrained` is one of our LM bundles (or its run dir), or a folder with fastai's WikiText-103 files
    (`lstm_fwd.pth`/`lstm_bwd.pth` + `itos_wt103.pkl`), or the registry name "wt103" (via ulmfit.data.get_dataset).

    - From our bundle: its tokenizer and vocabulary are reused as they are (the classifier then shares them);
      the architecture comes from the bundle.
    - From fastai's WT103: a rules tokenizer + vocabulary are built on the domain corpus and the pretrained
      embedding/decoder rows are re-indexed with fastai's `match_embeds` (unknown words: mean embedding and
      mean decoder bias); the overlap is reported.
    `explicit` names the config keys the user set by hand; an architecture/tokenizer key that contradicts the
    pretrained model is an error (rather than silently ignored).
    """
    preset, cfg = _as_config(cfg, preset)
    log_every()  # a bad ULMFIT_LOG_EVERY fails here, before any data is read
    out = Path(out)
    with distributed.session(device):
        log = distributed.main_log(log)
        distributed.check_same({**_options("finetune", src, pretrained, out, cfg, preset, seed, backwards, text_col,
                                           label_col, max_docs, resume, overwrite, device),
                                "explicit": sorted(explicit)})
        with distributed.main_first("opening the pretrained model"):  # a registry download: once
            source = open_pretrained(pretrained, backwards)
        cfg = adopt_pretrained_arch(cfg, source, explicit)
        phases = schedule(cfg, "finetune")
        if not phases:
            raise UlmfitError("nothing to train: epochs and ft_freeze_epochs are both 0", hint="pass --epochs 1")
        with distributed.on_main(run_dir(out, overwrite=overwrite, resume=resume, log=log), f"checking --out {out}"):
            ckpt = checkpoint.find(out, resume)
            with distributed.main_first("reading the corpus"):
                corpus = read_corpus(src, text_col, label_col, max_docs, seed, log)
            if ckpt is not None:  # the weights come from the checkpoint
                store, init_state, notes = checkpoint.rebuild_store(ckpt, corpus), None, []
            else:
                store, init_state, notes = start_from_pretrained(source, corpus, cfg, log)
            for n in notes:
                log(n)
            info = {k: v for k, v in source.items() if k in ("kind", "name", "overlap", "preset", "extended")}
            result = _run(stage="finetune", cfg=cfg, preset=preset, phases=phases, store=store, corpus=corpus,
                          out=out, seed=seed, backwards=backwards, device=device, init_state=init_state,
                          pretrained_info=info, ckpt=ckpt, log=log)
            result.notes = notes
            return result


def read_corpus(src: Any, text_col: str | None, label_col: str | None, max_docs: int | None, seed: int,
                log: Callable[[str], None], also: Sequence[Any] = ()) -> Corpus:
    """The documents an LM trains and validates on: the non-test splits of `src`, each capped at `max_docs`,
    then every non-test document of the `also` sources (read whole, their text column detected)."""
    corpus = src if isinstance(src, Corpus) else load_corpus(src, text_col=text_col, label_col=label_col, seed=seed)
    if max_docs is not None:
        if max_docs < 1:
            raise UlmfitError("--max-docs must be at least 1")
        for split in (*TRAIN_SPLITS, VALID_SPLIT):
            if corpus.splits.count(split) > max_docs:
                corpus = subsample(corpus, split, max_docs, seed=seed, stratified=False)
    for extra in also:
        more = extra if isinstance(extra, Corpus) else load_corpus(extra, seed=seed)
        log(f"data: --also {more.name}: " + ", ".join(f"{s} {more.splits.count(s):,}" for s in
                                                      (*TRAIN_SPLITS, VALID_SPLIT) if more.splits.count(s)))
        corpus = Corpus(corpus.texts + more.texts, [None] * (len(corpus) + len(more)), corpus.splits + more.splits,
                        f"{corpus.name}+{more.name}")
    used = corpus.select([*TRAIN_SPLITS, VALID_SPLIT])
    counts = {s: used.splits.count(s) for s in (*TRAIN_SPLITS, VALID_SPLIT)}
    if not counts["train"] and not counts["unsup"]:
        raise UlmfitError(f"{corpus.name} has no train or unsup documents to train a language model on")
    if not counts[VALID_SPLIT]:
        raise UlmfitError(f"{corpus.name} has no valid split", hint="give the source a valid split or some train rows")
    n_test = corpus.splits.count("test")
    log(f"data: {corpus.name}: training on " + ", ".join(f"{s} ({counts[s]} docs)" for s in TRAIN_SPLITS
                                                       if counts[s])
        + f"; validating on valid ({counts[VALID_SPLIT]} docs)" + (f"; test ({n_test} docs) not used" if n_test else ""))
    return used


# ------------------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """State of one training run shared by the epoch callback, the checkpoint and the final save."""

    stage: str                    # "pretrain" or "finetune"
    cfg: LMConfig
    preset: str
    phases: list[Phase]
    store: TokenStore
    corpus: Corpus
    out: Path
    seed: int
    backwards: bool
    pretrained_info: dict | None  # what finetune started from, recorded in meta.json
    learn: Learner
    device: torch.device
    train_splits: tuple[str, ...]
    log: Callable[[str], None]
    metrics: list[dict] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    best_written: bool = False
    runlog: RunLog | None = None  # OUT/logs/: each step's train loss, each epoch's metrics
    step: int = 0  # optimizer steps over the whole run (fastai's train_iter restarts each phase)

    def config_json(self) -> dict:
        arch = self.cfg.arch_dict(len(self.store.vocab.itos))
        arch["pad_token"] = int(self.store.vocab.pad_id)
        return {"stage": "lm", "lm_stage": self.stage, "preset": self.preset, "seed": self.seed,
                "direction": direction_name(self.backwards), "arch": arch,
                "tokenizer": asdict(self.store.tokenizer.spec),
                "schedule": [p.to_dict() for p in self.phases], "lm_config": self.cfg.to_dict()}

    def meta_json(self, complete: bool) -> dict:
        return {"stage": "lm", "lm_stage": self.stage, "direction": direction_name(self.backwards),
                "metrics": self.metrics, "best_epoch": self.best_epoch,
                "epochs_completed": len(self.metrics), "epochs_planned": sum(p.epochs for p in self.phases),
                "complete": complete, "processes": distributed.world_size(),
                "data": {"source": self.corpus.name, "fingerprint": self.corpus.fingerprint,
                         "train_splits": list(self.train_splits), "valid_split": VALID_SPLIT,
                         "vocab_fingerprint": self.store.vocab.fingerprint},
                **({"pretrained": self.pretrained_info} if self.pretrained_info else {})}

    def write(self, name: str, complete: bool) -> Path:
        """OUT/<name> as a bundle, written by rank 0 alone (every rank holds the same weights)."""
        if not distributed.is_main():
            return self.out / name
        model = distributed.unwrap(self.learn.model)
        return write_bundle(self.out / name, config=self.config_json(), meta=self.meta_json(complete),
                            vocab=self.store.vocab, tokenizer=self.store.tokenizer,
                            weights={"model": model.state_dict(), "encoder": encoder_state(model)})

    def end_epoch(self, phase_idx: int, epoch_in_phase: int, row: dict) -> None:
        self.metrics.append(row)
        if row["valid_loss"] is not None and row["valid_loss"] < self.best_loss:
            self.best_loss, self.best_epoch = row["valid_loss"], row["epoch"]
            self.write("model-best", complete=False)
            self.best_written = True
        checkpoint.save(self, phase_idx, epoch_in_phase)


def _run(*, stage: str, cfg: LMConfig, preset: str, phases: list[Phase], store: TokenStore, corpus: Corpus,
         out: Path, seed: int, backwards: bool, device: str | None, init_state: dict | None,
         pretrained_info: dict | None, ckpt: Path | None, log: Callable[[str], None]) -> LMResult:
    """setup → train → save → cleanup; `ckpt` (OUT/checkpoint) continues an interrupted run."""
    learn, arch, cfg, bs_note, train_splits, dev = setup_learner(store, corpus, cfg, phases, seed=seed,
                                                                 backwards=backwards, device=device,
                                                                 init_state=init_state)
    run = Run(stage=stage, cfg=cfg, preset=preset, phases=phases, store=store, corpus=corpus, out=out, seed=seed,
              backwards=backwards, pretrained_info=pretrained_info, learn=learn, device=dev,
              train_splits=train_splits, log=log)
    resumed = checkpoint.restore(run, ckpt, dev) if ckpt is not None else None
    n_done = len(run.metrics)
    run.step = int(run.metrics[-1].get("step", 0)) if run.metrics else 0
    _log_setup(run, arch["vocab_size"], bs_note, ckpt, resumed)
    # a fresh run: an older run's checkpoint or model-best in OUT must not mix with this one (rank 0 removes them)
    if resumed is None and distributed.is_main():
        checkpoint.remove(out)
        shutil.rmtree(out / "model-best", ignore_errors=True)

    with RunLog(out, resume=resumed is not None) as run.runlog:
        last = _train(run, resumed)
    _finish(run, last)
    return LMResult(out=out, best=out / "model-best", last=out / "model-last", metrics=run.metrics,
                    best_epoch=run.best_epoch, config=cfg, resumed_from_epoch=n_done)


def _log_setup(run: Run, vocab_size: int, bs_note: str | None, ckpt: Path | None, resumed: Resumed | None) -> None:
    dev, log = run.device, run.log
    log(f"language model ({run.stage}, {direction_name(run.backwards)}, preset {run.preset}): vocab {vocab_size}, "
        f"{sum(p.numel() for p in run.learn.model.parameters()):,} parameters, device {dev}"
        + (f", {torch.get_num_threads()} threads" if dev.type == "cpu" else "")
        + f", {resolve_precision(run.cfg.precision, dev)}")
    if bs_note:
        log(bs_note)
    log("config:\n" + format_config(run.cfg))
    log("schedule:\n" + format_schedule(run.phases))
    if (line := distributed.describe(run.cfg.bs, "rows")) is not None:
        log(line)
    if resumed is not None:
        log(f"resuming from {ckpt.name}/ after epoch {len(run.metrics)} (phase {resumed.phase + 1}, "
            f"epoch {resumed.epoch_in_phase})")


def _train(run: Run, resumed: Resumed | None) -> Path:
    """Every phase of the schedule from where the run stands; OUT/model-last is written however it ends."""
    complete = False
    try:
        _fit_phases(run, resumed)
        complete = True
    finally:
        last = run.write("model-last", complete=complete)
        if not complete:
            run.log(f"training stopped; {last} holds the weights so far"
                    + (f", {run.out / checkpoint.CHECKPOINT} the last finished epoch (continue with --resume)"
                       if (run.out / checkpoint.CHECKPOINT).exists() else ""))
    return last


def _fit_phases(run: Run, resumed: Resumed | None) -> None:
    learn, phases = run.learn, run.phases
    start_phase, start_epoch = (resumed.phase, resumed.epoch_in_phase) if resumed is not None else (0, 0)
    offset = sum(p.epochs for p in phases[:start_phase])
    for i in range(start_phase, len(phases)):
        phase = phases[i]
        first = start_epoch if i == start_phase else 0
        if first >= phase.epochs:
            offset += phase.epochs
            continue
        if phase.trainable == "all":
            learn.unfreeze()
        else:
            learn.freeze()  # only the last layer group trains: embeddings + decoder (awd_lstm_lm_split)
        if resumed is not None and i == start_phase and first > 0:
            resumed.continue_mid_phase(learn, run.device)
        run.log(f"phase {i + 1}/{len(phases)}: {phase.name}")
        fit_one_cycle(learn, phase.epochs, first, phase, cbs=[epoch_callback(run, i, phase, offset, first)])
        offset += phase.epochs


def _finish(run: Run, last: Path) -> None:
    """model-best marked complete (or, when no epoch was validated, the last model copied there); the checkpoint
    removed."""
    out = run.out
    if not distributed.is_main():
        return
    if not run.best_written:  # every epoch had no validation loss: the last model is the best we have
        shutil.copytree(last, out / "model-best", dirs_exist_ok=True)
    else:  # refresh meta of model-best: the run is complete now
        meta = read_json(out / "model-best" / "meta.json")
        meta.update(complete=True, epochs_completed=len(run.metrics), metrics=run.metrics)
        write_json(out / "model-best" / "meta.json", meta)
    checkpoint.remove(out)
    best = run.metrics[run.best_epoch - 1] if run.best_epoch else {}
    run.log(f"done: {out / 'model-best'} (epoch {run.best_epoch}: valid_loss "
            f"{best.get('valid_loss', float('nan')):.4f}, accuracy {best.get('accuracy') or 0:.4f}, "
            f"perplexity {best.get('perplexity') or 0:.2f}); {out / 'model-last'}")


# ------------------------------------------------------------------------------------------- small helpers


def _options(stage: str, src: Any, pretrained: Any, out: Path, cfg: LMConfig, preset: str, seed: int,
             backwards: bool, text_col: str | None, label_col: str | None, max_docs: int | None, resume: bool,
             overwrite: bool, device: str | None) -> dict:
    """What every rank of a torchrun job must agree on before it reads any data (`distributed.check_same`)."""
    return {"stage": stage, "src": src.fingerprint if isinstance(src, Corpus) else str(src),
            "pretrained": None if pretrained is None else str(pretrained), "out": str(out), "lm_config": cfg.to_dict(),
            "preset": preset, "seed": seed, "backwards": backwards, "text_col": text_col, "label_col": label_col,
            "max_docs": max_docs, "resume": resume, "overwrite": overwrite, "device": device}


def _as_config(cfg: LMConfig | str, preset: str | None) -> tuple[str, LMConfig]:
    if isinstance(cfg, str):
        return cfg, resolve_config(cfg)
    validate(cfg)
    return preset or "custom", cfg
