"""Where and how a stage runs: device, CPU threads, seeds and RNG state, training precision.

Every stage (pretrain, lm-finetune, classify, evaluate, predict, generate) and the scripts take these from here,
so `--device`, `ULMFIT_THREADS`, a seed and `precision` mean the same thing everywhere.

The config modules import PRECISIONS from here while `ulmfit --help` runs, so torch and fastai are imported inside
the functions that need them, never at the top of this module.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

from ulmfit import distributed
from ulmfit.errors import UlmfitError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ------------------------------------------------------------------------------------------- device, threads


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None → the CUDA GPU when there is one, else the CPU; a named device must exist on this machine.

    In a torchrun job of several processes, "cuda" (or None on a GPU machine) is the GPU of this process's
    LOCAL_RANK, and naming one GPU (cuda:N) is an error: every process would take the same one."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UlmfitError(f"unknown device {device!r}", hint="use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and distributed.world_size() > 1:
        if dev.index is not None:
            raise UlmfitError(f"--device {device} names one GPU, but this is one of {distributed.world_size()} "
                              f"processes", hint="pass --device cuda: each process takes the GPU of its LOCAL_RANK")
        dev = torch.device("cuda", distributed.local_rank())
        if torch.cuda.is_available() and dev.index >= torch.cuda.device_count():
            raise UlmfitError(f"LOCAL_RANK {dev.index} has no GPU: this machine has {torch.cuda.device_count()}",
                              hint="start at most that many processes per machine (torchrun --nproc-per-node)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UlmfitError(f"device {device} requested but no CUDA GPU is available", hint="use --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UlmfitError("device mps requested but it is not available", hint="use --device cpu")
    return dev


def set_threads() -> None:
    """Cap torch's CPU threads at ULMFIT_THREADS when it is set; otherwise torch's default stays."""
    import torch

    n = os.environ.get("ULMFIT_THREADS")
    if n:
        try:
            torch.set_num_threads(max(1, int(n)))
        except ValueError:
            raise UlmfitError(f"ULMFIT_THREADS={n!r} is not a number") from None


# ------------------------------------------------------------------------------------------- seeds, RNG state


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) and make cuDNN deterministic (fastai's `set_seed`)."""
    from fastai.torch_core import set_seed

    set_seed(seed, reproducible=True)


def seed_epoch(seed: int, epoch: int, dls) -> None:
    """Re-seed every RNG at each epoch start, so shuffling and dropout masks are the same after a resume. Under
    torchrun each rank draws its own dropout masks (`distributed.rank_seed`); the data order does not come from
    these RNGs (the loaders draw it from (seed, epoch)), so it stays the same on every rank."""
    import numpy as np
    import torch

    s = distributed.rank_seed((seed * 1_000_003 + epoch * 7919) % (2**31 - 1))
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


def capture_rng_state() -> dict:
    """The python, numpy and torch CPU RNG states, as tensors and plain lists (torch.load(weights_only=True)
    reads them back)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = random.getstate()
    return {"python": [st[0], list(st[1]), st[2]],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state()}


def restore_rng_state(state: dict) -> None:
    """Put back what `capture_rng_state` returned."""
    import numpy as np
    import torch

    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


# ------------------------------------------------------------------------------------------- precision
#
# "auto" (the default of every preset) means: on a CUDA GPU bf16 where it is supported (no loss scaling needed),
# else fp16 with fastai's gradient scaler; on a CPU bf16 where the CPU runs it natively (AVX512-BF16 or AMX), else
# fp32. bf16 on a CPU autocasts the matmuls and LSTM layers to bfloat16 through oneDNN. Weights, optimizer state
# and the loss stay fp32 either way, and saved models are fp32.


def cpu_has_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 on a CPU is emulated and slow."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device) -> str:
    """"auto" → what this device trains best in; an explicit choice the device cannot honour is an error."""
    import torch

    if precision not in PRECISIONS:
        raise UlmfitError(f"unknown precision {precision!r}", hint=f"choose one of: {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if kind == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "fp16" and kind != "cuda":
        raise UlmfitError("precision fp16 needs a CUDA GPU", hint="use precision=bf16 or fp32 on a CPU")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UlmfitError("this GPU has no bf16", hint="use precision=fp16 or auto")
    return precision


def apply_precision(learn, precision: str, device):
    """Add the callback that trains `learn` in `precision` on `device` (resolved as `resolve_precision`)."""
    import torch

    chosen = resolve_precision(precision, device)
    if chosen == "fp32":
        return learn
    if torch.device(device).type == "cuda":
        return learn.to_bf16() if chosen == "bf16" else learn.to_fp16()
    learn.add_cb(_cpu_bf16_callback())
    return learn


def _cpu_bf16_callback():
    """fastai's `MixedPrecision` builds `autocast("cuda")` only, hence this small CPU counterpart."""
    import torch
    from fastai.callback.core import Callback
    from fastai.torch_core import to_float

    class CpuBf16(Callback):
        """Autocast forward pass and loss to bfloat16 on the CPU; the backward pass follows the forward's dtypes."""

        order = 10  # where fastai's MixedPrecision sits: after RNNCallback has set up the batch

        def before_batch(self) -> None:
            self.ctx = torch.autocast("cpu", dtype=torch.bfloat16)
            self.ctx.__enter__()

        def after_pred(self) -> None:
            self.learn.pred = to_float(self.pred)

        def _leave(self) -> None:
            if getattr(self, "ctx", None) is not None:
                self.ctx.__exit__(None, None, None)
                self.ctx = None

        def after_loss(self) -> None:
            self._leave()

        def after_cancel_batch(self) -> None:  # a callback cancelled the batch before the loss: leave anyway
            self._leave()

        def after_fit(self) -> None:
            self._leave()

    return CpuBf16()
