#!/usr/bin/env python
"""LM training throughput: ulmfit's pipeline vs fastai's own `language_model_learner`, and where time goes.

    .venv/bin/python scripts/bench_lm.py --src /work/shared/data/imdb_sample.tgz --presets small-lstm paper \
        --batches 30

For each preset, the same corpus is tokenized once (ulmfit's rules tokenizer = fastai's) and both learners train
on the same token ids with the same config (sizes, dropouts, AR/TAR, clip, wd, moms, one-cycle):

    ulmfit   ulmfit.loaders.lm_dataloaders (memory-mapped token store) + ulmfit.lm.learner.make_learner
    fastai   fastai.text.data.LMDataLoader over the same documents + language_model_learner(pretrained=False)

The two fits run in two threads that take turns batch by batch, so both see the same machine load (this CPU is
shared); a batch is timed from the moment its side gets the turn (its loader fetches the batch) to its
`after_batch`. The breakdown then times plain training steps of the ulmfit model piece by piece (loader,
encoder forward, decoder + softmax/loss forward, their backwards, optimizer step). `--sizes` instead sweeps model
sizes on random ids (forward + backward + Adam): the measurement behind the `small-lstm` sizes. `--softmax full
adaptive` instead times the same breakdown for each output layer (`--set softmax=`), the models stepping in turns
on the same batches. Prints a markdown report (and appends it to --report if given).
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


class _Turns:
    """Two fits in two threads that take turns, one batch each."""

    def __init__(self, n_timed: int, warmup: int) -> None:
        import threading

        self.cond = threading.Condition()
        self.turn = "ulmfit"
        self.n_timed, self.warmup = n_timed, warmup
        self.times: dict[str, list[tuple[float, int]]] = {"ulmfit": [], "fastai": []}
        self.done: set[str] = set()

    def callback(self, name: str):
        from fastai.callback.core import Callback, CancelFitException

        turns, other = self, ("fastai" if name == "ulmfit" else "ulmfit")

        class Turn(Callback):
            order = 99  # after every other callback of the batch

            def before_fit(self):
                self.i = 0
                turns.wait(name)
                self.t0 = time.perf_counter()

            def after_batch(self):
                if not self.training:
                    return
                self.i += 1
                if self.i > turns.warmup:
                    turns.times[name].append((time.perf_counter() - self.t0, self.xb[0].numel()))
                if self.i >= turns.warmup + turns.n_timed:
                    turns.finish(name)
                    raise CancelFitException
                turns.give(other)
                turns.wait(name)
                self.t0 = time.perf_counter()

        return Turn()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)

    def give(self, other: str) -> None:
        with self.cond:
            if other not in self.done:
                self.turn = other
            self.cond.notify_all()

    def finish(self, name: str) -> None:
        with self.cond:
            self.done.add(name)
            self.turn = "fastai" if name == "ulmfit" else "ulmfit"
            self.cond.notify_all()


def _ours_fit(cfg, store, seed):
    from ulmfit.lm.config import schedule
    from ulmfit.lm.learner import fit_one_cycle, make_learner
    from ulmfit.loaders import lm_dataloaders

    dls = lm_dataloaders(store, train_splits=("train",), valid_split="valid", bs=cfg.bs, seq_len=cfg.seq_len,
                         seed=seed, device="cpu")
    learn, _ = make_learner(cfg, dls, store.vocab, "cpu")
    learn.create_opt()
    return lambda cb: fit_one_cycle(learn, 1, 0, schedule(cfg, "pretrain")[0], cbs=[cb])


def _fastai_dls(cfg, store):
    import numpy as np
    import torch
    from fastai.data.core import DataLoaders
    from fastai.text.data import LMDataLoader

    def docs(split):
        return [torch.from_numpy(np.asarray(d, dtype=np.int64)) for d in store.docs(split)]

    dls = DataLoaders(LMDataLoader(docs("train"), bs=cfg.bs, seq_len=cfg.seq_len, shuffle=True),
                      LMDataLoader(docs("valid"), bs=cfg.bs, seq_len=cfg.seq_len), device="cpu")
    dls.vocab = list(store.vocab.itos)
    return dls


def _fastai_fit(cfg, store, seed):
    import fastai.callback.schedule  # noqa: F401 - patches Learner.fit_one_cycle (before the threads start)
    from fastai.callback.training import GradientClip
    from fastai.metrics import Perplexity, accuracy
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM

    from ulmfit.lm.model import fastai_config

    arch = cfg.arch_dict(len(store.vocab.itos))
    learn = language_model_learner(_fastai_dls(cfg, store), AWD_LSTM, config=fastai_config(arch),
                                   drop_mult=cfg.drop_mult, pretrained=False, metrics=[accuracy, Perplexity()],
                                   wd=cfg.wd, moms=cfg.moms, alpha=cfg.alpha, beta=cfg.beta,
                                   cbs=[GradientClip(cfg.clip)] if cfg.clip else None)
    if hasattr(learn, "progress"):  # no progress bar on either side
        learn.remove_cb(learn.progress)
    return lambda cb: learn.fit_one_cycle(1, cfg.lr, pct_start=cfg.pct_start, cbs=[cb])


def _interleaved(cfg, store, seed, n, warmup):
    """Train both learners in turns, one batch each; returns {side: [(seconds, tokens), ...]}."""
    import threading

    import torch

    torch.manual_seed(seed)
    fits = {"ulmfit": _ours_fit(cfg, store, seed)}
    torch.manual_seed(seed)
    fits["fastai"] = _fastai_fit(cfg, store, seed)
    turns = _Turns(n, warmup)
    errors: list[BaseException] = []

    def run(name):
        try:
            fits[name](turns.callback(name))
        except BaseException as e:  # surface a failure instead of leaving the other thread waiting
            errors.append(e)
            turns.finish(name)

    threads = [threading.Thread(target=run, args=(name,)) for name in fits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return turns.times


def _stepper(cfg, store, seed):
    """The ulmfit model (fastai's Adam, clip, AR/TAR) in training mode and its batches, for `timed_step`."""
    from ulmfit.lm.learner import make_learner
    from ulmfit.loaders import lm_dataloaders

    dls = lm_dataloaders(store, train_splits=("train",), valid_split="valid", bs=cfg.bs, seq_len=cfg.seq_len,
                         seed=seed, device="cpu")
    learn, _ = make_learner(cfg, dls, store.vocab, "cpu")
    learn.create_opt()
    learn.opt.set_hyper("lr", cfg.lr / 25)
    learn.model.train()
    learn.model.reset()
    return learn.model, learn.opt, iter(dls.train)


def _breakdown(cfg, store, seed, n, warmup):
    """Mean seconds per training step, piece by piece, for the ulmfit model (fastai's Adam, clip, AR/TAR)."""
    model, opt, it = _stepper(cfg, store, seed)
    parts = dict.fromkeys(STEP_PARTS, 0.0)
    for i in range(warmup + n):
        _, seconds = timed_step(model, opt, it, cfg)
        if i >= warmup:
            for k, dt in zip(parts, seconds):
                parts[k] += dt / n
    return parts


def softmaxes(args) -> str:
    """Each preset with each output layer (`--softmax full adaptive`): the same batches, the models stepping in
    turns (one step each, so all see the same machine load), each step timed piece by piece (`timed_step`)."""
    from ulmfit.data import load_corpus
    from ulmfit.lm.config import replace, resolve_config
    from ulmfit.store import build_store
    from ulmfit.tokenize import TokenizerSpec

    corpus = load_corpus(args.src, seed=args.seed).select(["train", "valid"])
    lines = []
    for preset in args.presets:
        base = resolve_config(preset, sets=list(args.set or []))
        store = build_store(corpus, spec=TokenizerSpec(**base.tokenizer_spec()))
        cfgs = {sm: replace(base, softmax=sm) for sm in args.softmax}
        arch = {sm: c.arch_dict(len(store.vocab.itos)) for sm, c in cfgs.items()}
        steppers = {sm: _stepper(c, store, args.seed) for sm, c in cfgs.items()}
        n_params = {sm: sum(p.numel() for p in st[0].parameters()) for sm, st in steppers.items()}
        times = {sm: [] for sm in cfgs}                              # per step: seconds of each part
        tokens = 0
        for i in range(args.warmup + args.batches):
            for sm, (model, opt, it) in steppers.items():
                n_tok, seconds = timed_step(model, opt, it, cfgs[sm])
                if i >= args.warmup:
                    times[sm].append(seconds)
            tokens += n_tok if i >= args.warmup else 0
        print(f"[{preset}] vocab {len(store.vocab.itos)}: " + ", ".join(
            f"{sm} {statistics.median(sum(t) for t in times[sm]) * 1000:.0f} ms/step (median)" for sm in times),
            file=sys.stderr, flush=True)
        means = {sm: [sum(t[j] for t in v) / len(v) for j in range(len(STEP_PARTS))] for sm, v in times.items()}
        medians = {sm: statistics.median(sum(t) for t in v) for sm, v in times.items()}
        first = args.softmax[0]
        cut = {sm: a.get("adaptive_cutoffs") for sm, a in arch.items()}
        lines += [f"### `{preset}` preset: {base.arch} {base.emb_sz}/{base.n_hid}/{base.n_layers}, vocab "
                  f"{len(store.vocab.itos)}, batch {base.bs} x {base.seq_len}; "
                  + "; ".join(f"{sm}: {n_params[sm] / 1e6:.2f}M parameters"
                              + (f", cutoffs {cut[sm]}, div {cfgs[sm].adaptive_div:g}" if cut[sm] else "")
                              for sm in cfgs), "",
                  f"The models step in turns on the same batches ({args.batches} timed steps each after "
                  f"{args.warmup} untimed ones). Mean ms per step:", "",
                  "| part | " + " | ".join(args.softmax) + " |", "|---|" + "---:|" * len(args.softmax)]
        lines += [f"| {part} | " + " | ".join(f"{means[sm][j] * 1000:,.1f}" for sm in args.softmax) + " |"
                  for j, part in enumerate(STEP_PARTS)]
        lines += ["| **step (mean)** | " + " | ".join(f"**{sum(means[sm]) * 1000:,.1f}**" for sm in args.softmax)
                  + " |",
                  "| step (median) | " + " | ".join(f"{medians[sm] * 1000:,.1f}" for sm in args.softmax) + " |",
                  "| tokens/s (median step) | " + " | ".join(
                      f"{tokens / args.batches / medians[sm]:,.0f}" for sm in args.softmax) + " |", ""]
        for sm in args.softmax[1:]:
            ratio = [sum(a) / sum(b) for a, b in zip(times[first], times[sm])]  # steps adjacent in time
            q = statistics.quantiles(ratio, n=4) if len(ratio) > 1 else ratio * 3
            lines.append(f"Step time {first} / {sm}, neighbouring steps: median **{statistics.median(ratio):.2f}x**, "
                         f"quartiles {q[0]:.2f}x–{q[2]:.2f}x.")
        lines.append("")
    return "\n".join(lines)


def _fastai_loader_time(cfg, store, n):
    dl = _fastai_dls(cfg, store).train
    it = iter(dl)
    next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return (time.perf_counter() - t) / n


def compare(args) -> str:
    from ulmfit.data import load_corpus
    from ulmfit.lm.config import resolve_config
    from ulmfit.store import build_store
    from ulmfit.tokenize import TokenizerSpec

    corpus = load_corpus(args.src, seed=args.seed)
    corpus = corpus.select(["train", "valid"])
    lines = []
    for preset in args.presets:
        cfg = resolve_config(preset, sets=list(args.set or []))
        store = build_store(corpus, spec=TokenizerSpec(**cfg.tokenizer_spec()))
        tok_batch = cfg.bs * cfg.seq_len
        print(f"[{preset}] vocab {len(store.vocab.itos)}, train tokens {store.n_tokens('train')}, batch "
              f"{cfg.bs}x{cfg.seq_len}", file=sys.stderr, flush=True)
        times = _interleaved(cfg, store, args.seed, args.batches, args.warmup)
        rate = {k: [n / t for t, n in v] for k, v in times.items()}
        for k in rate:
            print(f"  {k}: median {statistics.median(rate[k]):.0f} tok/s, best {max(rate[k]):.0f}",
                  file=sys.stderr, flush=True)
        pair = [o / f for o, f in zip(rate["ulmfit"], rate["fastai"])]  # batches adjacent in time
        q = statistics.quantiles(pair, n=4) if len(pair) > 1 else [pair[0]] * 3
        row = {k: (sum(n for _, n in v) / sum(t for t, _ in v), statistics.median(rate[k]), max(rate[k]))
               for k, v in times.items()}
        parts = _breakdown(cfg, store, args.seed, max(3, args.batches // 3), 1)
        step = sum(parts.values())
        f_loader = _fastai_loader_time(cfg, store, 50)
        lines += [f"### `{preset}` preset: emb {cfg.emb_sz}, hidden {cfg.n_hid}, {cfg.n_layers} layers, "
                  f"vocab {len(store.vocab.itos)}, batch {cfg.bs} x {cfg.seq_len} ({tok_batch} tokens)", "",
                  f"The two learners train in turns, one batch each ({args.batches} timed batches per side after "
                  f"{args.warmup} untimed ones), so both see the same machine load. Tokens/s:", "",
                  "| pipeline | all timed batches | median batch | best batch |", "|---|---:|---:|---:|",
                  "| ulmfit (`ulmfit pretrain`) | " + " | ".join(f"{v:,.0f}" for v in row["ulmfit"]) + " |",
                  "| fastai `language_model_learner` | " + " | ".join(f"{v:,.0f}" for v in row["fastai"]) + " |",
                  "| **ratio ulmfit / fastai** | " + " | ".join(
                      f"**{a / b:.2f}x**" for a, b in zip(row["ulmfit"], row["fastai"])) + " |", "",
                  f"Ratio of neighbouring batches (ulmfit batch i / fastai batch i): median "
                  f"**{statistics.median(pair):.2f}x**, quartiles {q[0]:.2f}x–{q[2]:.2f}x.", "",
                  f"Where one training step goes (ulmfit, mean of {max(3, args.batches // 3)} steps, "
                  f"{step * 1000:,.0f} ms/step):", "", "| part | ms/step | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {v * 1000:,.1f} | {v / step:.0%} |" for k, v in parts.items()]
        lines += ["", f"fastai's LMDataLoader for the same batch: {f_loader * 1000:.2f} ms "
                  f"(ulmfit's: {parts['loader'] * 1000:.2f} ms).", ""]
    return "\n".join(lines)


def sizes(args) -> str:
    """Forward + backward + Adam on random ids for candidate sizes: the measurement behind the presets."""
    import torch
    import torch.nn.functional as F
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.text.models.core import get_language_model

    grid = [(60000, 400, 1152, 3, 32), (16000, 400, 1152, 3, 32), (16000, 400, 1152, 2, 32),
            (16000, 300, 1024, 2, 32), (16000, 256, 768, 2, 32), (16000, 200, 512, 2, 32), (8000, 256, 768, 2, 32),
            (30000, 256, 768, 2, 32)]
    if args.grid:  # vocab:emb:hidden:layers:bs entries
        grid = [tuple(int(x) for x in g.split(":")) for g in args.grid]
    sl = 64
    lines = [f"Model sizes, random ids, sequence length {sl}, forward + backward + Adam (best of "
             f"{args.batches} steps):", "",
             "| vocab | emb | hidden | layers | bs | params | ms/step | tokens/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, e, h, n, bs in grid:
        torch.manual_seed(0)
        m = get_language_model(AWD_LSTM, v, config={**awd_lstm_lm_config, "emb_sz": e, "n_hid": h, "n_layers": n},
                               drop_mult=0.5)
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        x, y = torch.randint(0, v, (bs, sl)), torch.randint(0, v, (bs, sl))
        m.train()
        m.reset()
        ts = []
        for _ in range(args.batches + 1):
            t = time.perf_counter()
            loss = F.cross_entropy(m(x)[0].view(-1, v), y.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ts.append(time.perf_counter() - t)
        t = min(ts[1:])  # best of: the least disturbed by other load on a shared machine
        p = sum(q.numel() for q in m.parameters()) / 1e6
        lines.append(f"| {v} | {e} | {h} | {n} | {bs} | {p:.1f}M | {t * 1000:,.0f} | {bs * sl / t:,.0f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="/work/shared/data/imdb_sample.tgz", help="corpus (load_corpus source)")
    ap.add_argument("--presets", nargs="+", default=["small-lstm", "paper"],
                    help="presets to time (default: small-lstm paper: the AWD-LSTMs fastai also trains)")
    ap.add_argument("--set", action="append", help="config override for every preset, e.g. bs=32")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--sizes", action="store_true", help="sweep model sizes instead (random ids)")
    ap.add_argument("--softmax", nargs="+", choices=["full", "adaptive"],
                    help="instead: step time of each preset with each of these output layers (e.g. full adaptive)")
    ap.add_argument("--grid", nargs="+", help="with --sizes: entries vocab:emb:hidden:layers:bs to time")
    ap.add_argument("--report", type=Path, help="append the markdown report to this file")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("ULMFIT_PROGRESS", "0")
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    if args.softmax:
        title, body = "Output layer: full vs adaptive softmax", softmaxes(args)
    elif args.sizes:
        title, body = "Model-size sweep", sizes(args)
    else:
        title, body = "Training throughput", compare(args)
    emit(title, body, script="bench_lm.py", report=args.report, started=started)


if __name__ == "__main__":
    main()
