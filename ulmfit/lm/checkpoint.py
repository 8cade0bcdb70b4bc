"""OUT/checkpoint/: what a language-model run needs to continue after an interruption (`--resume`).

Written after every epoch, atomically: state.pt (model, optimizer, RNG states), progress.json (schedule position,
metrics, best epoch, and what the run was made with), the tokenizer and vocabulary. A resumed run checks that it
trains the same data with the same options, reloads all of it, and sets the same batches, learning rates and
dropout masks as the uninterrupted run would have. The checkpoint is removed once the run is complete.

Under torchrun rank 0 writes it (every rank holds the same weights and optimizer state) and every rank reads it
back, so OUT must be on a filesystem all ranks see; a run resumes with as many processes as it had.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from fastcore.foundation import L

from ulmfit import distributed
from ulmfit._io import atomic_dir, read_json, write_json
from ulmfit.bundle import direction_name
from ulmfit.data import Corpus
from ulmfit.errors import UlmfitError
from ulmfit.runtime import capture_rng_state, restore_rng_state
from ulmfit.store import TokenStore, build_store
from ulmfit.tokenize import TextTokenizer, Vocab

if TYPE_CHECKING:
    from ulmfit.lm.train import Run

CHECKPOINT = "checkpoint"


@dataclass
class Resumed:
    """Where a resumed run continues, and the states to load when it continues mid-phase."""

    phase: int            # index of the phase to continue
    epoch_in_phase: int   # epochs of that phase already trained
    opt: dict             # optimizer state at the end of the last finished epoch
    rng: dict             # RNG states at the end of the last finished epoch

    def continue_mid_phase(self, learn, device) -> None:
        # at a phase start freeze/unfreeze clears the optimizer, as it did in the uninterrupted run; mid-phase the
        # run continues with the optimizer state and the RNG states it had
        learn.opt.load_state_dict(_to_device(self.opt, device))
        restore_rng_state(self.rng)


def find(out: Path, resume: bool) -> Path | None:
    """OUT/checkpoint when resuming (an error when there is none), None for a fresh run."""
    ckpt = out / CHECKPOINT
    if resume:
        if not (ckpt / "progress.json").is_file():
            raise UlmfitError(f"nothing to resume: {ckpt} does not exist",
                              hint="the run finished (checkpoints are removed then) or never completed an epoch; "
                                   "run again without --resume")
        return ckpt
    return None


def rebuild_store(ckpt: Path, corpus: Corpus) -> TokenStore:
    """The token store numericalized exactly as before the interruption: the checkpoint's tokenizer and vocab."""
    tok, vocab = TextTokenizer.load(ckpt / "tokenizer"), Vocab.load(ckpt / "vocab.json")
    return build_store(corpus, tokenizer=tok, vocab=vocab)


def save(run: Run, phase_idx: int, epoch_in_phase: int) -> None:
    """Write OUT/checkpoint after an epoch: `epoch_in_phase` epochs of phase `phase_idx` are done (rank 0)."""
    if not distributed.is_main():
        return
    model = distributed.unwrap(run.learn.model)
    with atomic_dir(run.out / CHECKPOINT) as tmp:
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "opt": _plain(run.learn.opt.state_dict()), "rng": capture_rng_state()}, tmp / "state.pt")
        write_json(tmp / "progress.json", {
            "stage": run.stage, "lm_config": run.cfg.to_dict(), "seed": run.seed,
            "direction": direction_name(run.backwards), "data_fingerprint": run.corpus.fingerprint,
            "vocab_fingerprint": run.store.vocab.fingerprint, "phase": phase_idx,
            "epoch_in_phase": epoch_in_phase, "metrics": run.metrics, "best_epoch": run.best_epoch,
            "best_valid_loss": None if math.isinf(run.best_loss) else run.best_loss,
            "best_written": run.best_written, "processes": distributed.world_size()})
        run.store.vocab.save(tmp / "vocab.json")
        (tmp / "tokenizer").mkdir()
        run.store.tokenizer.save(tmp / "tokenizer")


def restore(run: Run, ckpt: Path, dev) -> Resumed:
    """Load model weights, metrics and best epoch from OUT/checkpoint into `run`; the optimizer and RNG states
    come back in the Resumed, applied right before training continues."""
    prog = read_json(ckpt / "progress.json")
    made_with = prog.get("processes", 1)  # checkpoints from before torchrun support: one process
    if made_with != distributed.world_size():
        # each rank's rows (and so every batch) depend on the number of processes
        raise UlmfitError(f"the checkpoint in {ckpt} was made by {made_with} process(es), this run has "
                          f"{distributed.world_size()}",
                          hint=f"resume with {made_with} processes (torchrun), as the run started" if made_with > 1
                               else "resume without torchrun, as the run started")
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
    state["opt"]["hypers"] = L(state["opt"]["hypers"])
    run.metrics = list(prog["metrics"])
    run.best_epoch = prog["best_epoch"]
    run.best_loss = math.inf if prog["best_valid_loss"] is None else prog["best_valid_loss"]
    run.best_written = prog["best_written"]
    return Resumed(prog["phase"], prog["epoch_in_phase"], state["opt"], state["rng"])


def remove(out: Path) -> None:
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)


def _plain(obj: Any) -> Any:
    """Optimizer state with numpy scalars → python numbers, so torch.load(weights_only=True) reads it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, L):  # fastai's hypers: a fastcore L, restored as L in `restore`
        return [_plain(v) for v in obj]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if isinstance(obj, list) else [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _to_device(obj: Any, device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj
