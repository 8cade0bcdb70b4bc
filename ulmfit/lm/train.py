"""Train AWD-LSTM language models: `pretrain` (from scratch) and `finetune` (from a bundle or fastai's WT103).

The recipe, top to bottom:
    setup     resolve config → read corpus → token store → LM stream loaders → model (+ pretrained weights)
    train     for each phase of the schedule: freeze/unfreeze, one-cycle fit (fastai Learner with the
              ULMFiT callbacks: ModelResetter, RNNRegularizer AR/TAR, GradientClip)
    save      after every epoch: OUT/checkpoint/ (model, optimizer, schedule position, RNG states) and
              OUT/model-best/ when the validation loss improved; OUT/model-last/ in a `finally:`
    resume    `resume=True` restores the checkpoint and continues with the same batches and schedule
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulmfit._io import atomic_dir, read_json, write_json
from ulmfit._rundir import run_dir
from ulmfit._precision import apply_precision, resolve_precision
from ulmfit.bundle import direction_name, locate, read_bundle, write_bundle
from ulmfit.errors import UlmfitError
from ulmfit.lm.config import (ARCH_KEYS, TOKENIZER_KEYS, LMConfig, Phase, fit_min_steps, format_config,
                              format_schedule, resolve_config, schedule, validate)

if TYPE_CHECKING:
    import torch

    from ulmfit.data import Corpus

TRAIN_SPLITS = ("train", "unsup")   # all non-test splits but valid feed the LM; test is never read
VALID_SPLIT = "valid"
CHECKPOINT = "checkpoint"


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
             overwrite: bool = False, preset: str | None = None, log: Callable[[str], None] = print) -> LMResult:
    """Train an AWD-LSTM LM from scratch on `src` (labels ignored) and write OUT/model-best + OUT/model-last.

    Splits "train" and "unsup" train the model, "valid" validates it, "test" is never read. The tokenizer and
    vocabulary are trained on those non-test splits (ulmfit.store.build_store).
    """
    preset, cfg = _as_config(cfg, preset)
    _log_every()  # a bad ULMFIT_LOG_EVERY fails here, before any data is read
    out = Path(out)
    phases = schedule(cfg, "pretrain")
    if not phases:
        raise UlmfitError("nothing to train: epochs is 0", hint="pass --epochs 1 or more")
    with run_dir(out, overwrite=overwrite, resume=resume, log=log):
        ckpt = _open_checkpoint(out, resume)
        corpus = _read_corpus(src, text_col, label_col, max_docs, seed, log)
        from ulmfit.store import build_store
        from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab

        if ckpt is not None:  # numericalize exactly as before the interruption
            tok, vocab = TextTokenizer.load(ckpt / "tokenizer"), Vocab.load(ckpt / "vocab.json")
            store = build_store(corpus, tokenizer=tok, vocab=vocab)
        else:
            log("training the tokenizer and building the token store on the non-test splits ...")
            store = build_store(corpus, spec=TokenizerSpec(**cfg.tokenizer_spec()))
        return _run(stage="pretrain", cfg=cfg, preset=preset, phases=phases, store=store, corpus=corpus, out=out,
                    seed=seed, backwards=backwards, device=device, init_state=None, pretrained_info=None,
                    ckpt=ckpt, log=log)


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
    _log_every()  # a bad ULMFIT_LOG_EVERY fails here, before any data is read
    out = Path(out)
    source = _open_pretrained(pretrained, backwards)
    cfg = _adopt_pretrained_arch(cfg, source, explicit)
    phases = schedule(cfg, "finetune")
    if not phases:
        raise UlmfitError("nothing to train: epochs and ft_freeze_epochs are both 0", hint="pass --epochs 1")
    with run_dir(out, overwrite=overwrite, resume=resume, log=log):
        ckpt = _open_checkpoint(out, resume)
        corpus = _read_corpus(src, text_col, label_col, max_docs, seed, log)
        from ulmfit.store import build_store
        from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab

        notes: list[str] = []
        init_state = None
        if ckpt is not None:
            tok, vocab = TextTokenizer.load(ckpt / "tokenizer"), Vocab.load(ckpt / "vocab.json")
            store = build_store(corpus, tokenizer=tok, vocab=vocab)
        elif source["kind"] == "bundle" and cfg.ft_extend_vocab:
            store, init_state, note = _extend_vocab(source, corpus, cfg.ft_extend_vocab)
            notes.append(note)
        elif source["kind"] == "bundle":
            b = source["bundle"]
            store = build_store(corpus, tokenizer=b.tokenizer, vocab=b.vocab)
            init_state = b.load_state("model")
            notes.append(f"reusing the pretrained tokenizer ({b.tokenizer.spec.kind}) and vocabulary "
                         f"({len(b.vocab.itos)} tokens) as they are")
        else:
            from ulmfit.lm.wt103 import load_itos, load_pth_state, match_embeds
            from ulmfit.lm.model import normalize_state

            log("building the domain vocabulary (rules tokenizer, as fastai's WT103 model) ...")
            store = build_store(corpus, spec=TokenizerSpec(**cfg.tokenizer_spec()))
            state = normalize_state(load_pth_state(source["checkpoint"].weights))
            init_state, match = match_embeds(state, load_itos(source["checkpoint"].itos), list(store.vocab.itos))
            notes.append(match.describe())
            source["overlap"] = {"found": match.n_found, "domain_vocab": match.n_new, "pretrained_vocab": match.n_old,
                                 "ratio": round(match.overlap, 4)}
        for n in notes:
            log(n)
        info = {k: v for k, v in source.items() if k in ("kind", "name", "overlap", "preset", "extended")}
        result = _run(stage="finetune", cfg=cfg, preset=preset, phases=phases, store=store, corpus=corpus, out=out,
                      seed=seed, backwards=backwards, device=device, init_state=init_state, pretrained_info=info,
                      ckpt=ckpt, log=log)
        result.notes = notes
        return result


# ------------------------------------------------------------------------------------------- setup helpers


def _extend_vocab(source: dict, corpus: Corpus, n_max: int) -> tuple[Any, dict, str]:
    """Our bundle's vocab + up to `n_max` frequent domain words it lacks (rules tokenizer only).

    The domain vocabulary is built with the bundle's own tokenizer and spec (max_vocab, min_freq); the new words
    are appended after the pretrained ids (which keep their rows) and their embedding/decoder rows start from
    the mean, as in fastai's `match_embeds`.
    """
    from ulmfit.lm.model import normalize_state
    from ulmfit.lm.wt103 import extend_embeds
    from ulmfit.store import build_store
    from ulmfit.tokenize import Vocab
    from ulmfit.tokenize.vocab import FAKE

    b = source["bundle"]
    if b.tokenizer.spec.kind != "rules":
        raise UlmfitError("ft_extend_vocab needs a rules-tokenizer model: sentencepiece has no unknown words",
                          hint="drop --set ft_extend_vocab")
    old = list(b.vocab.itos)
    domain = build_store(corpus, tokenizer=b.tokenizer)   # the domain vocab, in frequency order
    have = set(old)
    new = [w for w in domain.vocab.itos if w not in have and w != FAKE][:n_max]
    itos = old + new
    itos += [FAKE] * (-len(itos) % 8)                      # fastai keeps vocab sizes a multiple of 8
    vocab = Vocab(itos)
    state = extend_embeds(normalize_state(b.load_state("model")), len(itos))
    source["extended"] = {"added": len(new), "pretrained_vocab": len(old), "vocab": len(itos)}
    store = build_store(corpus, tokenizer=b.tokenizer, vocab=vocab)
    return store, state, (f"extending the pretrained vocabulary of {len(old)} tokens with {len(new)} frequent "
                          f"domain words (mean embedding to start); reusing the pretrained tokenizer")


def _as_config(cfg: LMConfig | str, preset: str | None) -> tuple[str, LMConfig]:
    if isinstance(cfg, str):
        return cfg, resolve_config(cfg)
    validate(cfg)
    return preset or "custom", cfg


def _read_corpus(src: Any, text_col: str | None, label_col: str | None, max_docs: int | None, seed: int,
                 log: Callable[[str], None]) -> Corpus:
    from ulmfit.data import Corpus

    if isinstance(src, Corpus):
        corpus = src
    else:
        from ulmfit.data import load_corpus

        corpus = load_corpus(src, text_col=text_col, label_col=label_col, seed=seed)
    if max_docs is not None:
        if max_docs < 1:
            raise UlmfitError("--max-docs must be at least 1")
        from ulmfit.data import subsample

        for split in (*TRAIN_SPLITS, VALID_SPLIT):
            if corpus.splits.count(split) > max_docs:
                corpus = subsample(corpus, split, max_docs, seed=seed, stratified=False)
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


def _open_checkpoint(out: Path, resume: bool) -> Path | None:
    ckpt = out / CHECKPOINT
    if resume:
        if not (ckpt / "progress.json").is_file():
            raise UlmfitError(f"nothing to resume: {ckpt} does not exist",
                              hint="the run finished (checkpoints are removed then) or never completed an epoch; "
                                   "run again without --resume")
        return ckpt
    return None


def _open_pretrained(pretrained: str | Path, backwards: bool) -> dict[str, Any]:
    """Classify the --pretrained argument: our bundle, or a fastai checkpoint folder (or registry name)."""
    from ulmfit.lm.wt103 import find_checkpoint

    p = locate(pretrained)  # a shared archive (URL or .tar.gz) is fetched and extracted once
    if not p.exists() and str(pretrained) in ("wt103", "wt103-fwd", "wt103-bwd"):
        from ulmfit.data import get_dataset  # the registry downloads (or finds) fastai's archive

        name = str(pretrained) if str(pretrained) != "wt103" else ("wt103-bwd" if backwards else "wt103-fwd")
        p = get_dataset(name)
    if not p.exists():
        raise UlmfitError(f"pretrained model not found: {p}",
                          hint="pass an LM bundle (the --out of `ulmfit pretrain`) or a folder with fastai's "
                               "lstm_fwd.pth + itos_wt103.pkl")
    if (p / "meta.json").is_file() or (p / "model-best").is_dir() or (p / "model-last").is_dir():
        from ulmfit.bundle import check_direction

        b = read_bundle(p, stage="lm")
        check_direction(b, backwards)
        return {"kind": "bundle", "bundle": b, "name": b.meta.get("data", {}).get("source", p.name),
                "preset": b.config.get("preset")}
    ck = find_checkpoint(p, backwards)
    if ck is None:
        raise UlmfitError(f"{p} is neither an LM bundle nor a fastai checkpoint folder",
                          hint="pass the --out of `ulmfit pretrain`, or a folder with lstm_fwd.pth + itos_wt103.pkl")
    return {"kind": "fastai-wt103", "checkpoint": ck, "name": ck.name}


def _adopt_pretrained_arch(cfg: LMConfig, source: dict, explicit: set[str] | frozenset[str]) -> LMConfig:
    """The architecture (and, for bundles, the tokenizer) comes from the pretrained model; explicit
    contradictions are errors."""
    import dataclasses

    if source["kind"] == "bundle":
        b = source["bundle"]
        arch = b.arch
        lm_cfg = b.config.get("lm_config", {})
        size_keys = ("emb_sz", "n_hid", "n_layers", "tie_weights", "out_bias")
        taken = {k: arch[k] for k in size_keys if k in arch}
        tok_spec = b.config.get("tokenizer", {})
        tok_vals = {"tokenizer": tok_spec.get("kind"), "lang": tok_spec.get("lang"),
                    "max_vocab": tok_spec.get("max_vocab"), "min_freq": tok_spec.get("min_freq"),
                    "sp_vocab_size": tok_spec.get("sp_vocab_size"), "sp_model_type": tok_spec.get("sp_model_type")}
        tok_vals = {k: v for k, v in tok_vals.items() if v is not None}
        what = f"the pretrained model {b.path}"
    else:
        from ulmfit.lm.model import arch_from_state, normalize_state
        from ulmfit.lm.wt103 import load_pth_state

        state = normalize_state(load_pth_state(source["checkpoint"].weights))
        found = arch_from_state(state)
        taken = {k: found[k] for k in ("emb_sz", "n_hid", "n_layers", "out_bias")}
        taken["tie_weights"] = True
        tok_vals = {"tokenizer": "rules", "lang": "en"}
        lm_cfg = {}
        what = f"fastai's checkpoint {source['name']}"
    for k, v in {**taken, **tok_vals}.items():
        if k in explicit and getattr(cfg, k) != v:
            kind = "tokenizer" if k in TOKENIZER_KEYS else "architecture"
            raise UlmfitError(f"{what} has {k}={v!r} but you asked for {k}={getattr(cfg, k)!r} ({kind} mismatch)",
                              hint=f"drop the {k} override: lm-finetune keeps the pretrained {kind}")
    changes = dict(taken)
    changes.update(tok_vals)
    # dropouts are a fine-tuning choice (drop_mult); the base dropout ratios follow the pretrained model
    for k in ("output_p", "hidden_p", "input_p", "embed_p", "weight_p"):
        if k in lm_cfg and k not in explicit:
            changes[k] = lm_cfg[k]
    return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------------------------------- the runner


def _set_threads() -> None:
    import torch

    n = os.environ.get("ULMFIT_THREADS")
    if n:
        try:
            torch.set_num_threads(max(1, int(n)))
        except ValueError:
            raise UlmfitError(f"ULMFIT_THREADS={n!r} is not a number") from None


def resolve_device(device: str | None) -> torch.device:
    import torch

    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UlmfitError(f"unknown device {device!r}", hint="use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UlmfitError(f"device {device} requested but no CUDA GPU is available", hint="use --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UlmfitError("device mps requested but it is not available", hint="use --device cpu")
    return dev


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def _seed_epoch(seed: int, epoch: int, dls) -> None:
    """Re-seed every RNG at each epoch start: shuffling, dropout masks — identical after a resume."""
    import numpy as np
    import torch

    s = _epoch_seed(seed, epoch)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    for dl in getattr(dls, "loaders", []):
        if hasattr(dl, "rng"):
            dl.rng = random.Random(s)
        if hasattr(dl, "set_epoch"):
            dl.set_epoch(epoch)
        elif isinstance(getattr(dl, "epoch", None), int):  # ulmfit.loaders.LMStreamLoader shuffles by (seed, epoch)
            dl.epoch = epoch


def _rng_state() -> dict:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = random.getstate()
    return {"python": [st[0], list(st[1]), st[2]], "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                             has_gauss, cached],
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def _plain(obj: Any) -> Any:
    """Optimizer state with numpy scalars → python numbers, so torch.load(weights_only=True) reads it."""
    import numpy as np
    import torch

    from fastcore.foundation import L

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, L):  # fastai's hypers: a fastcore L, restored as L in _restore
        return [_plain(v) for v in obj]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if isinstance(obj, list) else [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _to_device(obj: Any, device) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def _fit_one_cycle(learn, n_epoch: int, start_epoch: int, phase: Phase, cbs: list) -> None:
    """fastai's one-cycle (cosine lr warm-up/anneal, inverse momentum) with an exact mid-cycle restart.

    The schedule position is computed from (epoch, batch) each step rather than accumulated, so a run resumed at
    `start_epoch` sets bit-identical learning rates and momenta to an uninterrupted one.
    """
    import numpy as np
    from fastai.callback.core import Callback
    from fastai.callback.schedule import combined_cos

    learn.opt.set_hyper("lr", phase.lr)
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    scheds = {"lr": combined_cos(phase.pct_start, lr_max / 25.0, lr_max, lr_max / 1e5),
              "mom": combined_cos(phase.pct_start, *phase.moms)}

    class OneCycle(Callback):
        order, run_valid = 10, False  # after TrainEvalCallback, before the optimizer step

        def before_batch(self) -> None:
            if not self.training:
                return
            n_iter = self.n_iter
            pct = ((start_epoch + self.epoch) * n_iter + self.iter) / (n_epoch * n_iter)
            for name, f in scheds.items():
                self.opt.set_hyper(name, f(pct))

    learn.fit(n_epoch - start_epoch, cbs=[OneCycle(), *cbs], wd=phase.wd)


class _Run:
    """State of one training run shared by the epoch callback, the checkpoint and the final save."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
        self.metrics: list[dict] = []
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_written = False

    # --- artifacts ---------------------------------------------------------------------------------------

    def config_json(self) -> dict:
        cfg: LMConfig = self.cfg
        arch = cfg.arch(len(self.store.vocab.itos))
        arch["pad_token"] = int(self.store.vocab.pad_id)
        return {"stage": "lm", "lm_stage": self.stage, "preset": self.preset, "seed": self.seed,
                "direction": direction_name(self.backwards), "arch": arch,
                "tokenizer": asdict(self.store.tokenizer.spec),
                "schedule": [p.to_dict() for p in self.phases], "lm_config": cfg.to_dict()}

    def meta_json(self, complete: bool) -> dict:
        return {"stage": "lm", "lm_stage": self.stage, "direction": direction_name(self.backwards),
                "metrics": self.metrics, "best_epoch": self.best_epoch,
                "epochs_completed": len(self.metrics), "epochs_planned": sum(p.epochs for p in self.phases),
                "complete": complete,
                "data": {"source": self.corpus.name, "fingerprint": self.corpus.fingerprint,
                         "train_splits": list(self.train_splits), "valid_split": VALID_SPLIT,
                         "vocab_fingerprint": self.store.vocab.fingerprint},
                **({"pretrained": self.pretrained_info} if self.pretrained_info else {})}

    def write(self, name: str, complete: bool) -> Path:
        from ulmfit.lm.model import encoder_state

        model = self.learn.model
        return write_bundle(self.out / name, config=self.config_json(), meta=self.meta_json(complete),
                            vocab=self.store.vocab, tokenizer=self.store.tokenizer,
                            weights={"model": model.state_dict(), "encoder": encoder_state(model)})

    def save_checkpoint(self, phase_idx: int, epoch_in_phase: int) -> None:
        import torch

        with atomic_dir(self.out / CHECKPOINT) as tmp:
            torch.save({"model": {k: v.detach().cpu() for k, v in self.learn.model.state_dict().items()},
                        "opt": _plain(self.learn.opt.state_dict()), "rng": _rng_state()}, tmp / "state.pt")
            write_json(tmp / "progress.json", {
                "stage": self.stage, "lm_config": self.cfg.to_dict(), "seed": self.seed,
                "direction": direction_name(self.backwards), "data_fingerprint": self.corpus.fingerprint,
                "vocab_fingerprint": self.store.vocab.fingerprint, "phase": phase_idx,
                "epoch_in_phase": epoch_in_phase, "metrics": self.metrics, "best_epoch": self.best_epoch,
                "best_valid_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "best_written": self.best_written})
            self.store.vocab.save(tmp / "vocab.json")
            (tmp / "tokenizer").mkdir()
            self.store.tokenizer.save(tmp / "tokenizer")

    def end_epoch(self, phase_idx: int, epoch_in_phase: int, row: dict) -> None:
        self.metrics.append(row)
        if row["valid_loss"] is not None and row["valid_loss"] < self.best_loss:
            self.best_loss, self.best_epoch = row["valid_loss"], row["epoch"]
            self.write("model-best", complete=False)
            self.best_written = True
        self.save_checkpoint(phase_idx, epoch_in_phase)


def _epoch_callback(run: _Run, phase_idx: int, phase: Phase, epoch_offset: int, start_in_phase: int):
    """Per-epoch bookkeeping: RNG re-seed, mean train loss, the metrics table, checkpoint + model-best."""
    from fastai.callback.core import Callback
    from fastai.imports import noop  # the very object ProgressCallback compares with (not fastcore's)

    columns = ["epoch", "train_loss", "valid_loss", "accuracy", "perplexity", "time"]
    # without a bar (a log file, nohup, CI) an hour-long epoch would otherwise print nothing until its end
    plain_every = None if _show_bars() else _log_every()

    class EpochLog(Callback):
        order = 55  # after Recorder (50) has the validation metrics; before ProgressCallback (60)

        def _write(self, cells: list[str]) -> None:
            mbar = getattr(getattr(self.learn, "progress", None), "mbar", None)
            if mbar is not None:
                mbar.write(cells, table=True)
            else:
                run.log("  ".join(f"{c:>10}" for c in cells))

        def before_fit(self) -> None:
            self.learn.logger = noop  # our table replaces fastai's (whose train_loss is a smoothed value)
            self._write(columns)

        def before_epoch(self) -> None:
            self.global_epoch = epoch_offset + start_in_phase + self.epoch  # 0-based over all phases
            _seed_epoch(run.seed, self.global_epoch, self.dls)
            self.loss_sum, self.n_batches, self.t0 = 0.0, 0, time.perf_counter()
            self.n_tokens = 0
            self.last_line = self.t0

        def after_batch(self) -> None:
            if self.training:
                self.loss_sum += float(self.learn.loss.detach())
                self.n_batches += 1
                self.n_tokens += self.xb[0].numel()
                now = time.perf_counter()
                if plain_every is not None and now - self.last_line >= plain_every:
                    self.last_line = now
                    n, done, spent = len(self.dls.train), self.n_batches, now - self.t0
                    run.log(f"  epoch {self.global_epoch + 1}: {done:,}/{n:,} batches ({done / n:.0%}), "
                            f"train_loss {self.loss_sum / done:.4f}, {self.n_tokens / spent:,.0f} tokens/s, "
                            f"~{_minutes(spent / done * (n - done))} left in the epoch")

        def after_epoch(self) -> None:
            vals = dict(zip(self.recorder.metric_names[2:], self.recorder.final_record[1:]))
            train_time = time.perf_counter() - self.t0

            def num(v):
                return None if v is None else float(v)

            row = {"epoch": self.global_epoch + 1, "phase": phase.name,
                   "train_loss": self.loss_sum / max(self.n_batches, 1),
                   "valid_loss": num(vals.get("valid_loss")), "accuracy": num(vals.get("accuracy")),
                   "perplexity": num(vals.get("perplexity")), "seconds": round(train_time, 2),
                   "train_tokens_per_s": round(self.n_tokens / max(train_time, 1e-9), 1)}
            self._write([str(row["epoch"])] + [f"{row[k]:.6f}" if row[k] is not None else "-"
                                               for k in columns[1:5]] + [f"{train_time:.0f}s"])
            run.end_epoch(phase_idx, start_in_phase + self.epoch + 1, row)

    return EpochLog()


def make_learner(cfg: LMConfig, dls, vocab, device) -> tuple[Any, dict]:
    """The fastai Learner of `language_model_learner`, built from our config: AWD-LSTM LM, flattened cross
    entropy, Adam, `awd_lstm_lm_split` layer groups, ModelResetter + RNNRegularizer (AR/TAR) + GradientClip,
    accuracy and perplexity; freed memory handed back to the OS once a minute (`ulmfit._memory`); bf16 mixed
    precision where the device has it (`ulmfit._precision`). Returns (learner, arch)."""
    from fastai.callback.rnn import ModelResetter, RNNCallback, RNNRegularizer
    from fastai.callback.training import GradientClip
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import Perplexity, accuracy
    from fastai.optimizer import Adam
    from fastai.text.models.awdlstm import awd_lstm_lm_split

    from ulmfit._memory import trim_callback
    from ulmfit.lm.model import build_lm

    vocab_size = len(vocab.itos)
    arch = cfg.arch(vocab_size)
    arch["pad_token"] = int(vocab.pad_id)
    model = build_lm(arch, vocab_size)
    cbs = [ModelResetter(), RNNCallback(), trim_callback()]
    if cfg.alpha or cfg.beta:
        cbs.append(RNNRegularizer(alpha=cfg.alpha, beta=cfg.beta))
    if cfg.clip:
        cbs.append(GradientClip(cfg.clip))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), opt_func=Adam, splitter=awd_lstm_lm_split,
                    metrics=[accuracy, Perplexity()], wd=cfg.wd, moms=cfg.moms, cbs=cbs)
    if not _show_bars():
        from fastai.callback.progress import ProgressCallback

        learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)])
    return apply_precision(learn, cfg.precision, device), arch


def _run(*, stage: str, cfg: LMConfig, preset: str, phases: list[Phase], store, corpus, out: Path, seed: int,
         backwards: bool, device: str | None, init_state, pretrained_info, ckpt: Path | None,
         log: Callable[[str], None]) -> LMResult:
    import torch
    from fastai.torch_core import set_seed

    from ulmfit.lm.model import load_lm_state
    from ulmfit.loaders import lm_dataloaders

    _set_threads()
    dev = resolve_device(device)
    set_seed(seed, reproducible=True)
    train_splits = tuple(s for s in TRAIN_SPLITS if s in store.splits())
    # before the _Run exists: checkpoints record (and --resume compares) the batch size actually trained with
    cfg, bs_note = fit_min_steps(cfg, sum(store.n_tokens(s) for s in train_splits), sum(p.epochs for p in phases))
    dls = lm_dataloaders(store, train_splits=train_splits, valid_split=VALID_SPLIT, bs=cfg.bs, seq_len=cfg.seq_len,
                         backwards=backwards, seed=seed, device=dev)
    learn, arch = make_learner(cfg, dls, store.vocab, dev)
    model = learn.model
    vocab_size = arch["vocab_size"]
    if init_state is not None:
        load_lm_state(model, init_state, "the pretrained model")
    run = _Run(stage=stage, cfg=cfg, preset=preset, phases=phases, store=store, corpus=corpus, out=out, seed=seed,
               backwards=backwards, pretrained_info=pretrained_info, learn=learn, log=log,
               train_splits=train_splits)
    start_phase, start_epoch = 0, 0
    if ckpt is not None:
        start_phase, start_epoch = _restore(run, ckpt, dev)
    n_done = len(run.metrics)

    log(f"language model ({stage}, {direction_name(backwards)}, preset {preset}): vocab {vocab_size}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, device {dev}"
        + (f", {torch.get_num_threads()} threads" if dev.type == "cpu" else "")
        + f", {resolve_precision(cfg.precision, dev)}")
    if bs_note:
        log(bs_note)
    log("config:\n" + format_config(cfg))
    log("schedule:\n" + format_schedule(phases))
    if ckpt is not None:
        log(f"resuming from {ckpt.name}/ after epoch {n_done} (phase {start_phase + 1}, epoch {start_epoch})")

    if ckpt is None:  # a fresh run: an older run's checkpoint or model-best in OUT must not mix with this one
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
        shutil.rmtree(out / "model-best", ignore_errors=True)
    try:
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
            if ckpt is not None and i == start_phase and first > 0:
                # mid-phase: continue with the optimizer state (at a phase start freeze/unfreeze clears it, as
                # it did in the uninterrupted run)
                learn.opt.load_state_dict(_to_device(run.resume_opt, dev))
                _set_rng_state(run.resume_rng)
            log(f"phase {i + 1}/{len(phases)}: {phase.name}")
            _fit_one_cycle(learn, phase.epochs, first, phase,
                           cbs=[_epoch_callback(run, i, phase, offset, first)])
            offset += phase.epochs
        complete = True
    except BaseException:
        complete = False
        raise
    finally:
        last = run.write("model-last", complete=complete) if hasattr(run, "learn") else out / "model-last"
        if not complete:
            log(f"training stopped; {last} holds the weights so far"
                + (f", {out / CHECKPOINT} the last finished epoch (continue with --resume)"
                   if (out / CHECKPOINT).exists() else ""))
    if not run.best_written:  # every epoch had no validation loss: the last model is the best we have
        shutil.copytree(last, out / "model-best", dirs_exist_ok=True)
    else:  # refresh meta of model-best: the run is complete now
        meta = read_json(out / "model-best" / "meta.json")
        meta.update(complete=True, epochs_completed=len(run.metrics), metrics=run.metrics)
        write_json(out / "model-best" / "meta.json", meta)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    best = run.metrics[run.best_epoch - 1] if run.best_epoch else {}
    log(f"done: {out / 'model-best'} (epoch {run.best_epoch}: valid_loss {best.get('valid_loss', float('nan')):.4f}, "
        f"accuracy {best.get('accuracy') or 0:.4f}, perplexity {best.get('perplexity') or 0:.2f}); "
        f"{out / 'model-last'}")
    return LMResult(out=out, best=out / "model-best", last=out / "model-last", metrics=run.metrics,
                    best_epoch=run.best_epoch, config=cfg, resumed_from_epoch=n_done)


def _restore(run: _Run, ckpt: Path, dev) -> tuple[int, int]:
    """Load model weights, metrics and schedule position from OUT/checkpoint; the optimizer and RNG states are
    applied right before training continues."""
    import torch

    prog = read_json(ckpt / "progress.json")
    mismatch = [k for k, ours in (("stage", run.stage), ("lm_config", run.cfg.to_dict()), ("seed", run.seed),
                                  ("direction", direction_name(run.backwards)),
                                  ("data_fingerprint", run.corpus.fingerprint),
                                  ("vocab_fingerprint", run.store.vocab.fingerprint)) if prog.get(k) != ours]
    if mismatch:
        raise UlmfitError(f"the checkpoint in {ckpt} was made with a different {', '.join(mismatch)}",
                          hint="resume with the same data and options, or start again without --resume")
    try:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise UlmfitError(f"checkpoint corrupt: {ckpt / 'state.pt'} ({type(e).__name__})",
                          hint="start again without --resume") from None
    run.learn.model.load_state_dict(state["model"])
    run.learn.model.to(dev)
    run.learn.create_opt()
    from fastcore.foundation import L

    state["opt"]["hypers"] = L(state["opt"]["hypers"])
    run.resume_opt, run.resume_rng = state["opt"], state["rng"]
    run.metrics = list(prog["metrics"])
    run.best_epoch = prog["best_epoch"]
    run.best_loss = math.inf if prog["best_valid_loss"] is None else prog["best_valid_loss"]
    run.best_written = prog["best_written"]
    return prog["phase"], prog["epoch_in_phase"]


def _show_bars() -> bool:
    forced = os.environ.get("ULMFIT_PROGRESS")
    if forced is not None:
        return forced != "0"
    return sys.stderr.isatty()


def _log_every() -> float:
    """Seconds between plain progress lines when no bar is shown (ULMFIT_LOG_EVERY, default 300)."""
    value = os.environ.get("ULMFIT_LOG_EVERY", "300")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise UlmfitError(f"ULMFIT_LOG_EVERY={value!r} is not a number of seconds") from None


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
