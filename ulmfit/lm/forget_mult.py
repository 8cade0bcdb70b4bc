"""The QRNN's "forget-mult": the only part of a QRNN layer that runs step by step over time.

For candidate values z and forget gates f, both (seq_len, bs, hidden), and the carried cell state c0 (bs, hidden)::

    c[t] = f[t] * z[t] + (1 - f[t]) * c[t-1]          (c[-1] = c0)

Everything else in a QRNN layer (the gate convolution, the output gate) is computed for all time steps at once.

`forget_mult` is a custom autograd function with a hand-written backward: the forward is one fused `lerp` per time
step, and the backward is the same linear recurrence run backwards in time (one `addcmul` per step) followed by a few
element-wise ops over the whole sequence. Letting autograd record the step-by-step forward instead builds a graph of
several small ops per step and walks it back one node at a time. How this compares with a TorchScript loop and a
log-depth scan: `scripts/bench_qrnn.py forget-mult` and docs/bench/journal/2026-12-02-qrnn-forget-mult.md. Tensors
are time-major so that every step reads and writes one contiguous (bs, hidden) block.

`forget_mult_reference` is the plain definition above, kept for the tests.
"""

from __future__ import annotations

import torch


def forget_mult(z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """c (seq_len, bs, hidden) for z, f (seq_len, bs, hidden) and c0 (bs, hidden); differentiable in all three."""
    return _ForgetMult.apply(z, f, c0)


def forget_mult_reference(z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """The recurrence written out step by step, differentiated by autograd (slow; the tests' reference)."""
    c, out = c0, []
    for t in range(z.shape[0]):
        c = f[t] * z[t] + (1 - f[t]) * c
        out.append(c)
    return torch.stack(out)


def _scan(z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    # lerp(c, z, f) = c + f * (z - c) = f * z + (1 - f) * c: one op per step, written in place into the output
    out = torch.empty_like(z)
    c = c0
    for t in range(z.shape[0]):
        torch.lerp(c, z[t], f[t], out=out[t])
        c = out[t]
    return out


class _ForgetMult(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        z, f, c0 = z.contiguous(), f.contiguous(), c0.contiguous()
        out = _scan(z, f, c0)
        ctx.save_for_backward(z, f, c0, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z, f, c0, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        keep = 1 - f  # how much of c[t-1] survives into c[t]
        # dL/dc[t] collects its own output gradient and what flows back from c[t+1]:
        #   g[t] = grad_out[t] + keep[t+1] * g[t+1]
        g = torch.empty_like(grad_out)
        g[-1] = grad_out[-1]
        for t in range(z.shape[0] - 2, -1, -1):
            torch.addcmul(grad_out[t], keep[t + 1], g[t + 1], out=g[t])
        grad_z = f * g if ctx.needs_input_grad[0] else None
        grad_f = None
        if ctx.needs_input_grad[1]:  # (z[t] - c[t-1]) * g[t], without concatenating c0 and c into a copy
            grad_f = torch.empty_like(z)
            torch.sub(z[0], c0, out=grad_f[0])
            torch.sub(z[1:], out[:-1], out=grad_f[1:])
            grad_f.mul_(g)
        grad_c0 = keep[0] * g[0] if ctx.needs_input_grad[2] else None
        return grad_z, grad_f, grad_c0
