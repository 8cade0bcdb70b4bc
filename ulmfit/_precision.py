"""Training precision: fp32, or bf16/fp16 autocast, chosen per device.

`precision="auto"` (the default of every preset) means: on a CUDA GPU bf16 where it is supported (no loss scaling
needed), else fp16 with fastai's gradient scaler; on a CPU, bf16 where the CPU runs it natively (AVX512-BF16 or
AMX), else fp32. `"bf16"` on a CPU autocasts the matmuls and the LSTM layers to bfloat16 through oneDNN: on the
2-core development machine (AMD EPYC, AVX512-BF16) a `small` LM epoch trains 1.89x as many tokens a second for
0.002 bits/char, and a classifier epoch takes 21 s instead of 31 s with the same losses (docs/bench/imdb.md,
sixth pass). fastai's `MixedPrecision` callback is CUDA-only (it builds `autocast("cuda")`), hence the small
callback below. Weights, optimizer state and the loss stay fp32 either way, and saved models are fp32.
"""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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

    from ulmfit.errors import UlmfitError

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
