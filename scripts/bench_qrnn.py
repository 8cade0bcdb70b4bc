#!/usr/bin/env python
"""QRNN benchmarks: the forget-mult variants, and LM training tokens/s of an AWD-LSTM vs a QRNN.

    .venv/bin/python scripts/bench_qrnn.py forget-mult --reps 10
    .venv/bin/python scripts/bench_qrnn.py lm --src /work/shared/data/imdb_sample.tgz --batches 30 --warmup 3

forget-mult: c[t] = f[t] z[t] + (1 - f[t]) c[t-1] forward + backward (random z, f, c0; seq_len 70), for each way of
computing it. Every variant is first checked against the plain loop differentiated by autograd (values and
gradients, float64); then the variants take turns, one call each, for --reps rounds, and the table gives the median
and the best call in ms.

    autograd loop        the recurrence step by step, autograd records and replays every step (the reference)
    TorchScript loop     the same loop compiled by torch.jit.script, autograd through the scripted graph
    Function, Python     ulmfit.lm.forget_mult: hand-written backward (the recurrence run backwards), Python loops
    Function, TorchScript  the same Function with both loops in TorchScript
    log-depth scan       Hillis-Steele scan: log2(seq_len) passes over the whole tensor, autograd
    chunked scan (8)     8-step chunks as a masked (8 x 8) decay matrix, chunk to chunk sequentially, autograd

lm: two learners built by `ulmfit.lm.learner.make_learner` (the same Adam, weight decay, clipping, AR/TAR, dropouts)
from two presets that share embedding size, vocabulary, batch and BPTT (`small-lstm` and `small-qrnn` by default) train
on the same token stream, taking turns batch by batch so that both see the same machine load. Each step is timed
piece by piece: loader, encoder forward, decoder + softmax + loss (+ AR/TAR) forward, its backward, the encoder's
backward, clipping + optimizer; forward passes under bf16 autocast when the presets' precision resolves to bf16 on
this CPU (as training runs), else fp32 (--set precision=fp32). Prints a markdown report (appended to --report).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import STEP_PARTS, emit, timed_step  # noqa: E402

import torch

from ulmfit.lm.forget_mult import forget_mult, forget_mult_reference

SIZES = [(32, 512), (64, 512), (32, 1152), (64, 1152)]   # (bs, hidden) at seq_len 70


# ------------------------------------------------------------------------------------------- forget-mult variants


@torch.jit.script
def _loop_script(z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    c = c0
    out = []
    for t in range(z.shape[0]):
        c = f[t] * z[t] + (1 - f[t]) * c
        out.append(c)
    return torch.stack(out)


@torch.jit.script
def _scan_script(z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(z)
    c = c0
    for t in range(z.shape[0]):
        torch.lerp(c, z[t], f[t], out=out[t])
        c = out[t]
    return out


@torch.jit.script
def _back_script(grad_out: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    g = torch.empty_like(grad_out)
    g[-1] = grad_out[-1]
    for t in range(grad_out.shape[0] - 2, -1, -1):
        torch.addcmul(grad_out[t], keep[t + 1], g[t + 1], out=g[t])
    return g


class _ScriptedFunction(torch.autograd.Function):
    """ulmfit.lm.forget_mult's Function with both loops in TorchScript."""

    @staticmethod
    def forward(ctx, z, f, c0):
        z, f, c0 = z.contiguous(), f.contiguous(), c0.contiguous()
        out = _scan_script(z, f, c0)
        ctx.save_for_backward(z, f, c0, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        z, f, c0, out = ctx.saved_tensors
        keep = 1 - f
        g = _back_script(grad_out.contiguous(), keep)
        c_prev = torch.cat([c0.unsqueeze(0), out[:-1]])
        return f * g, (z - c_prev) * g, keep[0] * g[0]


def log_depth_scan(z, f, c0):
    """Hillis-Steele inclusive scan of c[t] = a[t] c[t-1] + b[t]: log2(T) passes, T log T work."""
    a = torch.cat([torch.zeros_like(c0).unsqueeze(0), 1 - f])   # step 0 carries c0 (a = 0, b = c0)
    b = torch.cat([c0.unsqueeze(0), f * z])
    d = 1
    while d < b.shape[0]:
        b = torch.cat([b[:d], b[d:] + a[d:] * b[:-d]])
        a = torch.cat([a[:d], a[d:] * a[:-d]])
        d *= 2
    return b[1:]


def chunked_scan(z, f, c0, k: int = 8):
    """Within a chunk, c = L b + (cumulative decay) c_in with L[t, s] = prod(a[s+1..t]) from log-space differences
    (masked before exp, so never above 1); chunks run one after another."""
    a, b = 1 - f, f * z
    log_a = torch.log(a.clamp_min(1e-30))
    out, c = [], c0
    for s in range(0, z.shape[0], k):
        cl = log_a[s:s + k].cumsum(0)                                   # (k, bs, h)
        n = cl.shape[0]
        diff = cl.unsqueeze(1) - cl.unsqueeze(0)                        # [t, s]: sum of log a over (s, t]
        mask = torch.ones(n, n, dtype=torch.bool, device=z.device).tril()
        L = diff.masked_fill(~mask[:, :, None, None], float("-inf")).exp()
        chunk = (L * b[s:s + k].unsqueeze(0)).sum(1) + cl.exp() * c.unsqueeze(0)
        out.append(chunk)
        c = chunk[-1]
    return torch.cat(out)


VARIANTS = {
    "autograd loop": forget_mult_reference,
    "TorchScript loop": _loop_script,
    "Function, Python (ulmfit)": forget_mult,
    "Function, TorchScript": _ScriptedFunction.apply,
    "log-depth scan": log_depth_scan,
    "chunked scan (8)": chunked_scan,
}


def _inputs(bs, h, sl=70, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(sl, bs, h, generator=g, dtype=dtype).tanh()
    f = torch.randn(sl, bs, h, generator=g, dtype=dtype).sigmoid()
    c0 = torch.randn(bs, h, generator=g, dtype=dtype).tanh()
    return z, f, c0


def _fwd_bwd(fn, z, f, c0, grad):
    args = [t.detach().requires_grad_() for t in (z, f, c0)]
    out = fn(*args)
    out.backward(grad)
    return out.detach(), [a.grad for a in args]


def check_variants() -> list[str]:
    z, f, c0 = _inputs(3, 5, sl=9, dtype=torch.float64)
    grad = torch.randn_like(z)
    ref_out, ref_grads = _fwd_bwd(forget_mult_reference, z, f, c0, grad)
    bad = []
    for name, fn in VARIANTS.items():
        out, grads = _fwd_bwd(fn, z, f, c0, grad)
        if not (torch.allclose(out, ref_out) and all(torch.allclose(a, b) for a, b in zip(grads, ref_grads))):
            bad.append(name)
    return bad


def forget_mult_bench(args) -> str:
    bad = check_variants()
    if bad:
        raise SystemExit(f"variants disagree with the reference: {bad}")
    names = list(VARIANTS)
    lines = ["Every variant matches the autograd loop in values and gradients (float64, 9 x 3 x 5).", "",
             f"Forward + backward, seq_len 70, float32, ms per call: median (best) of {args.reps} rounds, the "
             "variants taking turns within a round.", "",
             "| bs | hidden | " + " | ".join(names) + " |", "|---:|---:|" + "---:|" * len(names)]
    for bs, h in SIZES:
        z, f, c0 = _inputs(bs, h)
        grad = torch.randn_like(z)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.reps + 1):
            for name in names:
                t = time.perf_counter()
                _fwd_bwd(VARIANTS[name], z, f, c0, grad)
                if r:  # round 0 warms up (TorchScript compiles on its first calls)
                    times[name].append((time.perf_counter() - t) * 1000)
        lines.append(f"| {bs} | {h} | " + " | ".join(
            f"{statistics.median(times[n]):.1f} ({min(times[n]):.1f})" for n in names) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- LM tokens/s

PARTS = STEP_PARTS


class _Stepper:
    """One learner's training steps, timed piece by piece (as bench_lm.py's breakdown)."""

    def __init__(self, cfg, store, seed):
        from ulmfit.lm.learner import make_learner
        from ulmfit.loaders import lm_dataloaders
        from ulmfit.runtime import resolve_precision

        torch.manual_seed(seed)
        dls = lm_dataloaders(store, train_splits=("train",), valid_split="valid", bs=cfg.bs, seq_len=cfg.seq_len,
                             seed=seed, device="cpu")
        self.learn, _ = make_learner(cfg, dls, store.vocab, "cpu")
        self.learn.create_opt()
        self.learn.opt.set_hyper("lr", cfg.lr / 25)
        self.cfg, self.it = cfg, iter(dls.train)
        # the precision training would use (bf16 autocast on a CPU that has it, as ulmfit.runtime's callback)
        self.bf16 = resolve_precision(cfg.precision, "cpu") == "bf16"
        self.model = self.learn.model
        self.model.train()
        self.model.reset()
        self.steps: list[tuple[int, list[float]]] = []   # (tokens, seconds per part)

    def step(self, keep: bool) -> None:
        tokens, seconds = timed_step(self.model, self.learn.opt, self.it, self.cfg, bf16=self.bf16)
        if keep:
            self.steps.append((tokens, seconds))


def lm_bench(args) -> str:
    from ulmfit.data import load_corpus
    from ulmfit.lm.config import resolve_config
    from ulmfit.lm.model import arch_label
    from ulmfit.store import build_store
    from ulmfit.tokenize import TokenizerSpec

    cfgs = {p: resolve_config(p, sets=args.set) for p in args.presets}
    first = cfgs[args.presets[0]]
    for p, c in cfgs.items():
        if (c.emb_sz, c.bs, c.seq_len, c.tokenizer_spec()) != (first.emb_sz, first.bs, first.seq_len,
                                                                first.tokenizer_spec()):
            raise SystemExit(f"{p} differs from {args.presets[0]} in emb_sz, bs, seq_len or tokenizer")
    corpus = load_corpus(args.src, seed=args.seed).select(["train", "valid"])
    store = build_store(corpus, spec=TokenizerSpec(**first.tokenizer_spec()))
    steppers = {p: _Stepper(c, store, args.seed) for p, c in cfgs.items()}
    for i in range(args.warmup + args.batches):
        for s in steppers.values():  # batch by batch, in turns: both see the same machine load
            s.step(keep=i >= args.warmup)
    rows, lines, base = {}, [], args.presets[0]
    for p, s in steppers.items():
        tokens = sum(n for n, _ in s.steps)
        total = sum(sum(parts) for _, parts in s.steps)
        per_batch = [n / sum(parts) for n, parts in s.steps]
        mean_parts = [sum(parts[k] for _, parts in s.steps) / len(s.steps) for k in range(len(PARTS))]
        rows[p] = (tokens / total, statistics.median(per_batch), max(per_batch), mean_parts)
    precision = "bf16 autocast" if steppers[base].bf16 else "fp32"
    lines += [f"Vocab {len(store.vocab.itos)}, batch {first.bs} x {first.seq_len}, {precision}, {args.batches} timed "
              f"batches per model after {args.warmup} untimed ones, the models taking turns batch by batch.", "",
              "| preset | model | params | tokens/s (all) | median batch | best batch | vs " + base + " |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for p, (rate, med, best, _) in rows.items():
        n_par = sum(q.numel() for q in steppers[p].model.parameters())
        lines.append(f"| {p} | {arch_label(cfgs[p].arch_dict())} | {n_par / 1e6:.2f}M | {rate:,.0f} | {med:,.0f} | "
                     f"{best:,.0f} | {rate / rows[base][0]:.2f}x |")
    lines += ["", "Mean ms per step, piece by piece:", "",
              "| part | " + " | ".join(args.presets) + " |", "|---|" + "---:|" * len(args.presets)]
    for k, part in enumerate(PARTS):
        lines.append(f"| {part} | " + " | ".join(
            f"{rows[p][3][k] * 1000:,.1f} ({rows[p][3][k] / sum(rows[p][3]):.0%})" for p in args.presets) + " |")
    lines.append("| **step** | " + " | ".join(f"**{sum(rows[p][3]) * 1000:,.1f}**" for p in args.presets) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    fm = sub.add_parser("forget-mult", help="time the forget-mult variants")
    fm.add_argument("--reps", type=int, default=10)
    lm = sub.add_parser("lm", help="LM training tokens/s, AWD-LSTM vs QRNN, interleaved")
    lm.add_argument("--src", default="/work/shared/data/imdb_sample.tgz", help="corpus (load_corpus source)")
    lm.add_argument("--presets", nargs="+", default=["small-lstm", "small-qrnn"], help="the first is the baseline")
    lm.add_argument("--set", action="append", help="config override for every preset, e.g. bs=64")
    lm.add_argument("--batches", type=int, default=30, help="timed batches per model")
    lm.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    lm.add_argument("--seed", type=int, default=42)
    for p in (fm, lm):
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
        p.add_argument("--report", type=Path, help="append the markdown report to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("ULMFIT_PROGRESS", "0")
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = forget_mult_bench(args) if args.mode == "forget-mult" else lm_bench(args)
    emit("Forget-mult variants" if args.mode == "forget-mult" else "LM training tokens/s", body,
         script="bench_qrnn.py", report=args.report, started=started)


if __name__ == "__main__":
    main()
