"""One classifier on a fine-tuned LM encoder (gradual unfreezing or all at once), read top to bottom:

    setup    resolve the LM bundle (or --from-scratch), read the labelled corpus and its task shape
             (`ulmfit.classify.task`), numericalize it with the LM's own tokenizer and vocab (never a new vocab:
             the encoder's embedding rows are that vocab)
    build    fastai's get_text_classifier(AWD_LSTM or QRNN) with the LM's arch and sizes; its encoder weights loaded
    fit      one fastai `fit_one_cycle` per schedule stage (freeze_to / unfreeze + discriminative lrs), the
             task's valid metrics after every epoch, the best epoch's weights kept in memory, OUT/checkpoint
             written (`--resume` continues from it), OUT/logs appended, early stopping (`patience`) checked
    choose   model-best is the best epoch only when it beats the last by more than validation noise
             (`selection.best_epoch`); both scored as `predict` scores them: a temperature (single-label) or
             thresholds / bin cut points tuned on valid, the n-gram model and its weight
    save     OUT/model-best and OUT/model-last, complete classifier bundles, published together

OUT is already checked and locked by the caller (`ulmfit.classify.train.train_classifier`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastai.callback.core import CancelFitException

from ulmfit import distributed
from ulmfit._rundir import staged_entries
from ulmfit.bundle import check_direction, direction_name, read_bundle
from ulmfit.classify import checkpoint
from ulmfit.classify.artifact import bundle_config, portable, report_figures, save_classifier
from ulmfit.classify.config import ClassifierConfig, fit_min_steps
from ulmfit.classify.data import class_weight_vector, label_counts, prepare_corpus
from ulmfit.classify.learner import epoch_callback, make_learner
from ulmfit.classify.model import build_model, load_encoder, snapshot
from ulmfit.classify.ngram import fit_ngram, mix
from ulmfit.classify.selection import Patience, best_epoch, log_calibration, ngram_ensemble, valid_report
from ulmfit.classify.task import Task
from ulmfit.errors import UlmfitError
from ulmfit.lm.config import resolve_config as lm_config
from ulmfit.lm.model import arch_label
from ulmfit.loaders import clas_dataloaders
from ulmfit.runlog import RunLog
from ulmfit.runtime import apply_precision, resolve_device, resolve_precision, seed_all, set_threads
from ulmfit.store import build_store
from ulmfit.tokenize import TokenizerSpec, check_compatible

FEW_STEPS = 50  # fewer optimizer steps than this in the whole schedule: warn (an epoch may be one or two steps)


@dataclass
class TrainResult:
    out: Path  # the run directory
    best: Path  # OUT/model-best
    last: Path  # OUT/model-last
    labels: list[str]
    metrics: list[dict[str, Any]]  # one dict per epoch
    best_epoch: int
    valid: dict[str, Any]  # classification_report of model-best on the valid split
    config: ClassifierConfig
    seconds: float
    interrupted: bool = False
    ngram: dict[str, Any] | None = None  # model-best's meta["ngram"]: the neural and n-gram models alone, the weight
    task: Task | None = None  # the task shape (single-label when None)

    @property
    def accuracy(self) -> float:
        """The valid accuracy of what `predict` outputs (the ensemble when the n-gram weight is above 0);
        for the other task shapes, their headline metric (`headline`)."""
        return float(self.valid[headline(self.valid)[0]])


def headline(report: dict[str, Any]) -> tuple[str, str]:
    """(key, name) of the number that sums up a report of any task shape."""
    kind = report.get("task", "single-label")
    return {"single-label": ("accuracy", "accuracy"), "multi-label": ("macro_f1", "macro-F1"),
            "regression": ("pearson", "Pearson r")}[kind]


def describe_report(report: dict[str, Any]) -> str:
    """The valid metrics of a report in one line, by task shape."""
    kind = report.get("task", "single-label")
    if kind == "multi-label":
        return (f"macro-F1 {report['macro_f1']:.4f}, micro-F1 {report['micro_f1']:.4f}, "
                f"mAP {report['mean_average_precision']:.4f}")
    if kind == "regression":
        line = (f"Pearson {report['pearson']:.4f}, Spearman {report['spearman']:.4f}, MAE {report['mae']:.4f}, "
                f"RMSE {report['rmse']:.4f}")
        return line + (f", binned accuracy {report['binned_accuracy']:.4f}" if "binned_accuracy" in report else "")
    return f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}"


@dataclass
class _Setup:
    cfg: ClassifierConfig
    bundle: Any  # the LM bundle, None with --from-scratch
    arch: dict[str, Any]
    corpus: Any
    task: Task
    labels: list[str]
    counts: dict[str, dict[str, Any]]
    weights: list[float] | None
    store: Any
    device: Any


def fit_classifier(src, *, lm, out: Path, config: ClassifierConfig, text_col: str | None = None,
                   label_col: str | None = None, device: str | None = None, resume: bool = False,
                   log: Callable[[str], None] = print) -> TrainResult:
    """Train one classifier on SRC with the encoder, tokenizer and vocab of the LM bundle `lm`; write
    OUT/model-best and OUT/model-last. Ctrl-C after the first epoch saves what finished (and keeps
    OUT/checkpoint), then re-raises; `resume` continues such a run from OUT/checkpoint."""
    set_threads()  # ULMFIT_THREADS, as for the language model
    t0 = time.time()
    ckpt = checkpoint.find(out, resume)  # before any work: nothing to resume is an error at once
    s = _setup(src, lm, config, text_col, label_col, device, log)
    learn, model = _build(s, log)
    made_with = {"config": s.cfg.to_dict(), "task": s.task.to_dict(), "data": s.corpus.fingerprint,
                 "vocab": s.store.vocab.fingerprint, "lm": None if s.bundle is None else s.bundle.meta.get("data"),
                 "processes": distributed.world_size()}  # under torchrun each rank's batches depend on it
    resumed = checkpoint.load(ckpt, made_with) if ckpt is not None else None
    if resumed is not None:
        log(f"resuming from {ckpt} after epoch {len(resumed.history)} (stage {resumed.stage}, epoch "
            f"{resumed.epoch_in_stage} of it)")
    with RunLog(out, resume=resumed is not None) as runlog:
        history, best, last_state, interrupted = _fit(learn, s.cfg, s.task, log, runlog,
                                                      save=lambda **kw: checkpoint.save(out, made_with=made_with,
                                                                                        **kw),
                                                      resumed=resumed, device=s.device)
    # rank 0 alone scores and writes the bundles under torchrun; every rank returns what it saved
    result = distributed.from_main(lambda: _choose_and_save(s, model, lm, out, history, best, last_state,
                                                            interrupted, t0, log), "saving the classifier")
    if interrupted:
        raise KeyboardInterrupt
    return result


def _setup(src, lm, cfg: ClassifierConfig, text_col, label_col, device, log) -> _Setup:
    """The LM, then the data: numericalized with the LM's tokenizer and vocab."""
    if cfg.from_scratch:
        if lm is not None:
            raise UlmfitError("--from-scratch trains without a language model, but --lm was given",
                              hint="drop one of --lm and --from-scratch")
        bundle, arch = None, lm_config(cfg.preset).arch_dict()
    else:
        if lm is None:
            raise UlmfitError("no language model given", hint="pass --lm LM_BUNDLE (the output of `ulmfit "
                              "lm-finetune` or `pretrain`), or --from-scratch for the baseline without one")
        bundle = read_bundle(lm, stage="lm")
        check_direction(bundle, cfg.backwards)
        arch = bundle.arch
    dev = resolve_device(device)
    corpus, task, why = prepare_corpus(src, cfg, text_col=text_col, label_col=label_col)
    labels = task.labels
    train_labels = [y for y, sp in zip(corpus.labels, corpus.splits) if sp == "train"]
    weights = class_weight_vector(cfg, task, train_labels)
    if bundle is not None:
        store = build_store(corpus, tokenizer=bundle.tokenizer, vocab=bundle.vocab)
        check_compatible(bundle.vocab, bundle.tokenizer, store.vocab, store.tokenizer,
                         what_a=f"the language model {portable(bundle.path)}", what_b="the classifier's token store")
    else:
        store = build_store(corpus, spec=TokenizerSpec(**lm_config(cfg.preset).tokenizer_spec()))
    counts = {sp: label_counts(task, [y for y, s in zip(corpus.labels, corpus.splits) if s == sp])
              for sp in ("train", "valid")}
    n_docs = {sp: corpus.splits.count(sp) for sp in ("train", "valid")}
    log(f"data: {corpus.name}: {n_docs['train']:,} train / {n_docs['valid']:,} valid documents, "
        f"vocab {len(store.vocab.itos):,}")
    log(f"task: {task.describe()} ({why})")
    if weights is not None:
        what = "positive-label weights" if task.kind == "multi-label" else "class weights"
        log(f"{what}: " + ", ".join(f"{lab} {w:.3g}" for lab, w in zip(labels, weights)))
    if task.kind != "single-label" and cfg.calibrate:
        log(f"calibration: a softmax temperature is for single-label classifiers; none for {task.kind}"
            + (" (thresholds are tuned per label on the valid split instead)" if task.kind == "multi-label" else ""))
    log(("encoder: random init (--from-scratch)" if bundle is None else f"encoder: {bundle.path}")
        + f"; {arch_label(arch)} ({direction_name(cfg.backwards)}); "
        + resolve_precision(cfg.precision, dev))
    cfg, note = fit_min_steps(cfg, n_docs["train"])
    if note:
        log(note)
    log(cfg.describe_schedule())
    return _Setup(cfg, bundle, arch, corpus, task, labels, counts, weights, store, dev)


def _build(s: _Setup, log):
    """Loaders, the network with the LM's encoder in it, the Learner."""
    cfg, vocab = s.cfg, s.store.vocab
    seed_all(cfg.seed)
    dls = clas_dataloaders(s.store, s.labels, bs=cfg.bs, backwards=cfg.backwards, seed=cfg.seed, device=s.device,
                           seq_len=cfg.seq_len, targets=lambda split: s.task.targets(s.store.labels(split), split))
    steps = len(dls.train) * cfg.total_epochs()
    if steps < FEW_STEPS and not cfg.min_steps:  # with min_steps, fit_min_steps already saw to it
        log(f"warning: only {steps} optimizer steps in the whole schedule ({len(dls.train)} per epoch); with "
            f"few training documents pass a smaller --bs or more --epochs, or --set min_steps=130")
    model = build_model(len(vocab.itos), s.task.n_out, s.arch, cfg, pad_idx=vocab.pad_id)
    if s.bundle is not None:
        load_encoder(model, s.bundle.load_state("encoder"))
    learn = apply_precision(make_learner(dls, model, cfg, s.task, s.weights), cfg.precision, s.device)
    if (line := distributed.describe(cfg.bs, "documents")) is not None:  # under torchrun: the batch, the lr
        log(line)
    return distributed.data_parallel(learn), model


def _fit(learn, cfg: ClassifierConfig, task: Task, log, runlog: RunLog, save=None, resumed=None, device=None):
    """One one-cycle per schedule stage, until early stopping (`cfg.patience`) says enough. Returns (history, best
    epoch {epoch, state}, the last finished epoch's weights, interrupted). After a Ctrl-C or SIGTERM mid-epoch the
    "last" weights are those of the last epoch that finished, so model-last holds the epoch its meta names.
    Every step's train loss and every epoch's metrics go to `runlog` (OUT/logs/); after every epoch `save(...)`
    writes the checkpoint (`ulmfit.classify.checkpoint`) that `resumed` continues from."""
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": None, "state": None, "epoch": 0}
    finished: dict[str, Any] = {"state": None}
    current = {"stage": 0, "in_stage": 0, "step": 0}  # the step counts across stages (fastai's train_iter does not)
    patience = Patience(cfg.patience, cfg.min_delta, task.kind)
    if resumed is not None:
        history, best = list(resumed.history), dict(resumed.best)
        finished["state"] = resumed.last_state
        learn.model.load_state_dict(resumed.last_state)
        patience.__dict__.update(resumed.patience)
        learn.dls.train.epoch = resumed.loader_epoch
        current["step"] = int(history[-1].get("step", 0)) if history else 0

    def on_epoch(m: dict) -> None:
        current["in_stage"] += 1
        m = {"epoch": len(history) + 1, **m, "step": current["step"]}
        history.append(m)
        score = (m["accuracy"], -m["valid_loss"]) if task.kind == "single-label" else (-m["valid_loss"],)
        mark = ""
        if best["score"] is None or score > best["score"]:
            best.update(score=score, epoch=m["epoch"], state=snapshot(learn.model))
            mark = "  *best"
        finished["state"] = best["state"] if mark else snapshot(learn.model)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if k not in ("epoch", "stage", "seconds", "step"))
        log(f"epoch {m['epoch']:>2} (stage {m['stage']})  {shown}  {m['seconds']:.1f}s{mark}")
        runlog.epoch(m, step=current["step"])
        why = patience.update(m)
        if save is not None:
            done = current["in_stage"] == cfg.schedule[current["stage"] - 1].epochs  # a stage boundary: (next, 0)
            save(stage=current["stage"] + done, epoch_in_stage=0 if done else current["in_stage"], history=history,
                 best=best, learn=learn, patience=dict(patience.__dict__), loader_epoch=learn.dls.train.epoch)
        if why is not None:
            log(why)
            raise CancelFitException  # ends this one-cycle; the loop below runs no further stage

    def on_step(loss: float, lr: float) -> None:
        current["step"] += 1
        step, epoch = current["step"], len(history) + 1
        runlog.scalar("train_loss", loss, step=step, epoch=epoch, stage=current["stage"])
        runlog.scalar("lr", lr, step=step, epoch=epoch, stage=current["stage"])

    learn.add_cb(epoch_callback(lambda: current["stage"], on_epoch, on_step))
    first_stage, first_epoch = (resumed.stage, resumed.epoch_in_stage) if resumed is not None else (1, 0)
    try:
        for i, st in enumerate(cfg.schedule, 1):
            if patience.stopped_at is not None or i < first_stage:
                continue
            current["stage"], start = i, first_epoch if i == first_stage else 0
            current["in_stage"] = start
            if st.freeze_to == 0:
                learn.unfreeze()
            else:
                learn.freeze_to(st.freeze_to)
            if resumed is not None and i == first_stage:
                resumed.continue_mid_stage(learn, device)
            lr = st.lr if st.lr_div == 1 else slice(st.lr / st.lr_div, st.lr)
            learn.fit_one_cycle(st.epochs, lr, moms=tuple(cfg.moms), wd=cfg.wd, start_epoch=start)
    except KeyboardInterrupt:
        if not history:
            raise
        log(f"interrupted after {len(history)} epoch(s): saving model-last and model-best; --resume continues "
            "from OUT/checkpoint")
        return history, best, finished["state"], True  # keep what finished epochs learned, as spaCy does
    if patience.stopped_at is not None:
        history[-1]["early_stop"] = {"patience": cfg.patience, "min_delta": cfg.min_delta,
                                     "best_epoch": patience.best_epoch}
    return history, best, finished["state"], False


def _choose_and_save(s: _Setup, model, lm, out: Path, history, best, last_state, interrupted: bool, t0: float,
                     log) -> TrainResult:
    """model-best's epoch, both bundles scored as `predict` scores them, then written into OUT together."""
    cfg, vocab, labels, task = s.cfg, s.store.vocab, s.labels, s.task
    valid_docs = s.store.docs("valid")
    chosen, why = best_epoch(history, len(valid_docs), cfg.best_margin, task.kind)
    if chosen != best["epoch"]:
        best.update(epoch=chosen, state=last_state)
    if why:
        log(why)
    valid_y = task.truth(s.store.labels("valid"), "valid")
    states = {"model-best": best["state"], "model-last": last_state}
    scored = {name: valid_report(model, state, valid_docs, valid_y, task, cfg, vocab, s.device)
              for name, state in states.items()}
    ngram, ngram_meta = _fit_ngram(s, valid_y, {name: sc[2] for name, sc in scored.items()}, log)
    data_meta = {"source": s.corpus.name, "fingerprint": s.corpus.fingerprint, "documents": s.counts}
    # an http(s) URL says where the LM came from (its cache would not); file:// is a local absolute path: not stored
    shared = str(lm).startswith(("http://", "https://"))
    lm_meta = None if s.bundle is None else {"path": str(lm) if shared else portable(s.bundle.path),
                                             "data": s.bundle.meta.get("data")}
    config = bundle_config(cfg, s.arch, vocab, s.store.tokenizer, labels, task)
    reports: dict[str, dict] = {}
    with staged_entries(out, keep=(checkpoint.CHECKPOINT,) if interrupted else ()) as tmp:
        for name, state in states.items():
            report, calibration, neural = scored[name]
            part = ngram_meta.get(name)  # meta["valid"] is what predict outputs; each part alone in meta["ngram"]
            p_ngram = part.pop("_outputs") if part else None
            outputs = neural if part is None else mix(neural, p_ngram, part["weight"])
            thresholds = neural_thresholds = None
            if task.tuned:  # each output scored with the decisions tuned on it, as predict uses them
                thresholds = task.tune(valid_y, outputs)
                neural_thresholds = task.tune(valid_y, neural)
                report = task.report(valid_y, neural, neural_thresholds)
                if part:
                    part["thresholds"] = task.tune(valid_y, p_ngram)
                    part["valid"] = task.report(valid_y, p_ngram, part["thresholds"])
                    part["ensemble_valid"] = task.report(valid_y, outputs, thresholds)
            if part:
                part["neural_valid"] = report
                report = part["ensemble_valid"]
            reports[name] = report
            meta = {"stage": "classifier", "labels": labels, "task": task.kind,
                    "direction": direction_name(cfg.backwards),
                    "metrics": history, "best_epoch": best["epoch"],
                    "epoch": best["epoch"] if name == "model-best" else len(history),
                    "valid": report, "calibration": calibration, "thresholds": thresholds,
                    "neural_thresholds": neural_thresholds, "data": data_meta,
                    "lm": lm_meta, "from_scratch": cfg.from_scratch, "interrupted": interrupted,
                    "ngram": ngram_meta.get(name), "seconds": round(time.time() - t0, 1)}
            figures = report_figures(task, report, valid_y, outputs, "valid")
            save_classifier(tmp / name, config=config, meta=meta, vocab=vocab, tokenizer=s.store.tokenizer,
                            state=state, figures=figures)
            if ngram is not None:
                ngram.save(tmp / name)
    seconds = time.time() - t0
    result = TrainResult(out=out, best=out / "model-best", last=out / "model-last", labels=labels,
                         metrics=history, best_epoch=best["epoch"], valid=reports["model-best"], config=cfg,
                         seconds=seconds, interrupted=interrupted, ngram=ngram_meta.get("model-best"), task=task)
    # Re-scored as `predict` and `evaluate` will score it (each document read without the padding its training
    # batch had), so it can differ from the epoch line above by a document or so.
    log(f"model-best (epoch {best['epoch']}): valid {describe_report(result.valid)} as predict scores it; saved "
        f"to {out}/model-best and {out}/model-last ({seconds:.0f}s)")
    if scored["model-best"][1] is not None:
        log_calibration(scored["model-best"][1], cfg.calibrate, log)
    if result.ngram:
        e = result.ngram
        key, name = headline(e["valid"])
        log(f"predict outputs (1-w) x neural + w x n-gram, w {e['weight']:g}"
            + f" ({e['how']})"
            + f"; valid {name} of the neural model alone {e['neural_valid'][key]:.4f}, "
            f"of the n-gram model alone {e['valid'][key]:.4f}")
    return result


def _fit_ngram(s: _Setup, valid_y: np.ndarray, p_neural: dict[str, np.ndarray], log):
    """The n-gram baseline on the same training split, scored on the valid split alone and in the ensemble with
    each bundle's neural outputs. Returns (model or None, {bundle name: meta["ngram"]}); each meta also holds, for
    the caller to pop, "_outputs": the n-gram model's valid outputs."""
    cfg, corpus, task = s.cfg, s.corpus, s.task
    if not cfg.ngram:
        return None, {}
    train = [(t, y) for t, y, sp in zip(corpus.texts, corpus.labels, corpus.splits) if sp == "train"]
    valid = [t for t, sp in zip(corpus.texts, corpus.splits) if sp == "valid"]
    t0 = time.time()
    model = fit_ngram([t for t, _ in train], [y for _, y in train], s.labels, cfg.seed, task)
    p_ngram = model.predict_proba(valid)
    fitted = {"kind": {"single-label": "tfidf-logreg", "multi-label": "tfidf-logreg-per-label",
                       "regression": "tfidf-ridge"}[task.kind],
              "c": model.c, "cv_accuracy": model.cv_accuracy, "cv_metric": model.cv_metric,
              "features": len(model.vocab)}
    metas = {name: {**fitted, **ngram_ensemble(valid_y, p, p_ngram, task, cfg.ngram_weight), "_outputs": p_ngram}
             for name, p in p_neural.items()}
    key, what = headline(metas["model-best"]["valid"])
    how = {"single-label": "TF-IDF + logistic regression", "multi-label": "TF-IDF + a logistic regression per label",
           "regression": "TF-IDF + ridge regression"}[task.kind]
    log(f"n-gram baseline ({how}, {'alpha' if task.kind == 'regression' else 'C'} {model.c:g} by "
        f"cross-validation, {len(model.vocab):,} features, {time.time() - t0:.0f}s): valid {what} "
        f"{metas['model-best']['valid'][key]:.4f}")
    return model, metas
