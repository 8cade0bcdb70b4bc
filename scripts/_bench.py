"""What the benchmark scripts share: one LM training step timed piece by piece, and the report's header
(what ran, on what machine, under what load) before its body.

    from _bench import emit, timed_step         # scripts put their own folder on sys.path
    emit("Training throughput", body, script="bench_lm.py", report=args.report)
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

STEP_PARTS = ("loader", "encoder fwd", "decoder+softmax fwd", "decoder+softmax bwd", "encoder bwd", "clip+optimizer")


def timed_step(model, opt, batches, cfg, bf16: bool = False) -> tuple[int, list[float]]:
    """One training step of an ulmfit LM (encoder, decoder + softmax with AR/TAR, clip, optimizer) with the seconds
    of each of STEP_PARTS; the encoder's output is detached so the two backwards are timed apart. Returns
    (tokens in the batch, seconds per part)."""
    import torch

    from ulmfit.lm.model import lm_loss

    enc, dec, loss_func = model[0], model[1], lm_loss(model)
    t0 = time.perf_counter()
    x, y = next(batches)
    t1 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        h = enc(x)                                               # (bs, sl, emb)
    t2 = time.perf_counter()
    h_d = h.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the loss too, as ulmfit.runtime's CpuBf16
        pred, raw, dropped = dec(h_d)        # logits (bs, sl, vocab); adaptive softmax: its input (bs, sl, emb)
        loss = loss_func(pred.float(), y)    # the learner's loss: cross entropy, or the adaptive softmax's NLL
    if cfg.alpha:
        loss = loss + cfg.alpha * dropped.float().pow(2).mean()
    if cfg.beta:
        loss = loss + cfg.beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    t3 = time.perf_counter()
    loss.backward()
    t4 = time.perf_counter()
    h.backward(h_d.grad)
    t5 = time.perf_counter()
    if cfg.clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    opt.zero_grad()
    t6 = time.perf_counter()
    return x.numel(), [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5]


def emit(title: str, body: str, *, script: str, report: Path | None, started: str | None = None) -> str:
    """Print (and append to `report`) the markdown report: title, date, machine, load, the exact command, body."""
    import torch

    started = started or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (f"## {title} — {started}\n\n"
            f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads, load average at the end {load:.1f}.\n"
            f"Command: `{' '.join(['.venv/bin/python', f'scripts/{script}', *sys.argv[1:]])}`\n\n{body}\n")
    print(text)
    if report:
        with open(report, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return text


def save_plot(fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str) -> None:
    """Label, title and legend `ax`, write `fig` to `path` as a PNG and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
