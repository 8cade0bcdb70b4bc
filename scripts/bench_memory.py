"""Resident memory of LM pretraining over time, with and without handing freed memory back to the OS.

    ULMFIT_MIRROR=../shared/data python scripts/bench_memory.py --docs 3000

Runs `pretrain` (preset `small-lstm`, one epoch, bench_imdb's LM corpus and split) in a fresh process per mode:
`untrimmed` (`ulmfit._memory.TRIM_EVERY_S = None`: what the pipeline did before, and what fastai's own
Learner does) and `trimmed` (the default, `malloc_trim` once a minute). A thread samples the resident size of
the process and its children every `--every` seconds. Reports peak RSS, the growth rate over the training
epoch (least squares over the samples after the first minute), training seconds, and the ratios
trimmed/untrimmed. Both modes train the same model from the same seed, so their losses must be equal.
Appends one JSON line per mode to `--out`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

MODES = ("untrimmed", "trimmed")


def _child(mode: str, docs: int, every: float, work: Path) -> dict:
    import psutil

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_imdb import imdb_splits, lm_corpus

    import ulmfit._memory
    from ulmfit.lm import pretrain, resolve_config

    if mode == "untrimmed":
        ulmfit._memory.TRIM_EVERY_S = None
    proc, t0, samples = psutil.Process(), time.monotonic(), []

    def sample() -> None:
        while True:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            samples.append((time.monotonic() - t0, rss / 2**30))
            time.sleep(every)

    threading.Thread(target=sample, daemon=True).start()
    _train, _test, lm = imdb_splits(5000, 1000, 0)
    t_train = time.monotonic() - t0
    res = pretrain(lm_corpus(lm, 0), work / mode, resolve_config("small-lstm", sets=["epochs=1"]), seed=0,
                   preset="small-lstm", max_docs=docs)
    t_end = time.monotonic() - t0
    # growth during training only: from a minute in (tokenizing and warm-up done) to the end
    pts = [(t, r) for t, r in samples if t_train + 60 <= t <= t_end]
    slope = None
    if len(pts) >= 3:
        mt, mr = sum(t for t, _ in pts) / len(pts), sum(r for _, r in pts) / len(pts)
        slope = sum((t - mt) * (r - mr) for t, r in pts) / sum((t - mt) ** 2 for t, _ in pts) * 60
    return {"mode": mode, "docs": docs, "peak_rss_gb": round(max(r for _, r in samples), 2),
            "end_rss_gb": round(samples[-1][1], 2), "growth_gb_per_min": None if slope is None else round(slope, 3),
            "train_seconds": res.final["seconds"], "valid_loss": res.final["valid_loss"],
            "samples": [(round(t, 1), round(r, 3)) for t, r in samples]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=3000, help="LM training reviews (one epoch)")
    p.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="which modes to run, in order")
    p.add_argument("--work", type=Path, default=Path("runs/bench_memory"), help="where the LMs are written")
    p.add_argument("--out", type=Path, default=Path("runs/bench_memory.jsonl"), help="JSON-lines results file")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.docs, args.every, args.work)))
        return 0
    rows = {}
    for mode in args.modes:  # one process each: a heap that one mode fragmented must not carry into the other
        cmd = [sys.executable, __file__, "--child", mode, "--docs", str(args.docs), "--every", str(args.every),
               "--work", str(args.work)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
        row = {k: v for k, v in rows[mode].items() if k != "samples"}
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps({**rows[mode], "command": "python scripts/bench_memory.py "
                                + " ".join(argv or sys.argv[1:])}) + "\n")
    if len(rows) == 2:
        a, b = rows["untrimmed"], rows["trimmed"]
        print(f"peak RSS trimmed/untrimmed {b['peak_rss_gb'] / a['peak_rss_gb']:.2f}  "
              f"end RSS trimmed/untrimmed {b['end_rss_gb'] / a['end_rss_gb']:.2f}  "
              f"train time trimmed/untrimmed {b['train_seconds'] / a['train_seconds']:.3f}  "
              f"same valid loss: {a['valid_loss'] == b['valid_loss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
