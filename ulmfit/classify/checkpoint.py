"""OUT/checkpoint/ of a classifier run: what `classify --resume` needs to continue after an interruption.

Written after every epoch, atomically: state.pt (the current weights, the best epoch's weights, the optimizer, the
RNG states) and progress.json (the schedule position, the epochs' metrics, the best epoch, early stopping's count,
and what the run was made with). A resumed run checks that it trains the same data with the same options on the
same LM, reloads all of it, and continues the schedule stage where it stopped with fastai's `start_epoch`: the same
batches (the loader's order is a function of (seed, epoch)), learning rates and dropout masks as the
uninterrupted run, so it ends at the same weights and metrics on CPU. The checkpoint is removed once the run is
complete, and kept when it is interrupted (with model-best and model-last of the epochs that finished).

The LM's checkpoint (`ulmfit.lm.checkpoint`) works the same way; its optimizer-state helpers are shared.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastcore.foundation import L

from ulmfit import distributed
from ulmfit._io import atomic_dir, read_json, write_json
from ulmfit.errors import UlmfitError
from ulmfit.lm.checkpoint import _plain, _to_device
from ulmfit.runtime import capture_rng_state, restore_rng_state

CHECKPOINT = "checkpoint"
VERSION = 1


@dataclass
class Resumed:
    """Where a resumed classifier run continues."""

    stage: int                 # 1-based schedule stage to continue
    epoch_in_stage: int        # epochs of that stage already trained
    history: list[dict[str, Any]]
    best: dict[str, Any]       # {"score", "epoch", "state"} as fit's loop keeps it
    last_state: dict[str, Any]  # the weights after the last finished epoch
    patience: dict[str, Any]   # early stopping's counters
    opt: dict
    rng: dict
    loader_epoch: int          # the training loader's epoch counter (its shuffling is a function of it)
    smooth_loss: dict          # fastai's smoothed train loss, which runs on across a stage's epochs

    def continue_mid_stage(self, learn, device) -> None:
        """Mid-stage the optimizer and RNG states come back; at a stage start freeze_to clears the optimizer, as it
        did in the uninterrupted run, and only the RNG states do."""
        from ulmfit.classify.learner import restore_smooth_loss

        if self.epoch_in_stage > 0:
            state = dict(self.opt)
            state["hypers"] = L(state["hypers"])
            learn.opt.load_state_dict(_to_device(state, device))
            learn.add_cb(restore_smooth_loss(self.smooth_loss))
        restore_rng_state(self.rng)


def fingerprint(made_with: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(made_with, sort_keys=True, default=str).encode()).hexdigest()


def save(out: Path, *, made_with: dict[str, Any], stage: int, epoch_in_stage: int, history: list[dict[str, Any]],
         best: dict[str, Any], learn, patience: dict[str, Any], loader_epoch: int) -> None:
    from ulmfit.classify.learner import smooth_loss_state

    """OUT/checkpoint after an epoch: `epoch_in_stage` epochs of schedule stage `stage` (1-based) are done."""
    if not distributed.is_main():  # under torchrun rank 0 writes it: every rank holds the same weights
        return
    with atomic_dir(out / CHECKPOINT) as tmp:
        model = {k: v.detach().cpu() for k, v in distributed.unwrap(learn.model).state_dict().items()}
        torch.save({"model": model, "best": best["state"] if best["epoch"] != len(history) else None,
                    "opt": _plain(learn.opt.state_dict()), "rng": capture_rng_state()}, tmp / "state.pt")
        write_json(tmp / "progress.json", {
            "version": VERSION, "made_with": fingerprint(made_with), "stage": stage,
            "epoch_in_stage": epoch_in_stage, "history": history,
            "best": {"score": list(best["score"]) if best["score"] is not None else None, "epoch": best["epoch"]},
            "patience": patience, "loader_epoch": loader_epoch, "smooth_loss": smooth_loss_state(learn)})


def find(out: Path, resume: bool) -> Path | None:
    """OUT/checkpoint when resuming (an error when there is none), None for a fresh run."""
    ckpt = Path(out) / CHECKPOINT
    if not resume:
        return None
    if not (ckpt / "progress.json").is_file():
        raise UlmfitError(f"nothing to resume: {ckpt} does not exist",
                          hint="the run finished (its checkpoint is removed then) or never completed an epoch; "
                               "run again without --resume")
    return ckpt


def load(ckpt: Path, made_with: dict[str, Any]) -> Resumed:
    """The checkpoint's states, after checking it was made by a run with the same data, LM and options."""
    prog = read_json(ckpt / "progress.json")
    if prog.get("version") != VERSION or "made_with" not in prog:
        raise UlmfitError(f"{ckpt} is not a classifier checkpoint of this version",
                          hint="start again without --resume (with --overwrite)")
    if prog["made_with"] != fingerprint(made_with):
        raise UlmfitError(f"the checkpoint in {ckpt} was made with other data, another LM or other options",
                          hint="resume with the same SRC, --lm and options, or start again with --overwrite")
    try:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise UlmfitError(f"checkpoint corrupt: {ckpt / 'state.pt'} ({type(e).__name__})",
                          hint="start again with --overwrite") from None
    history = list(prog["history"])
    b = prog["best"]
    best_state = state["best"] if state["best"] is not None else state["model"]
    best = {"score": tuple(b["score"]) if b["score"] is not None else None, "epoch": b["epoch"],
            "state": best_state if b["epoch"] else None}
    return Resumed(stage=prog["stage"], epoch_in_stage=prog["epoch_in_stage"], history=history, best=best,
                   last_state=state["model"], patience=prog["patience"], opt=state["opt"], rng=state["rng"],
                   loader_epoch=prog["loader_epoch"], smooth_loss=prog["smooth_loss"])
