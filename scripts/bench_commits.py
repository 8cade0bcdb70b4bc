"""Did a change make a command slower? Time one `ulmfit` command under two commits, taking turns.

    python scripts/bench_commits.py --refs a29fe85 HEAD --rounds 2 \\
        --metric model-best/meta.json:metrics.-1.accuracy -- \\
        classify imdb-sample --lm LM --preset small --seed 0 --out {out}

Each ref's files are exported once (under --work) and the command runs as `python -m ulmfit ARGS` from that
copy, so the two sides share this environment and differ only in the project's code. The refs take turns (A B A
B ...), so a change in the machine's load hits both alike; each run writes into a fresh `{out}` folder.
Reported: each side's median wall time, the ratio, and (--metric FILE:KEY, FILE relative to `{out}`) the figure
each run ended with, which must agree when the change was meant to leave results alone. A JSON line per run goes
to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import emit  # noqa: E402


# `python -m ulmfit` from the copy in argv[1]: an editable install's import hook would otherwise find this
# checkout's `ulmfit` before anything on sys.path, so it is taken out first.
BOOT = """import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv.pop(1))
runpy.run_module("ulmfit", run_name="__main__", alter_sys=True)"""


def checkout(ref: str, work: Path) -> tuple[str, Path]:
    """(full sha, that commit's files under `work`), exported on first use (`git archive`: nothing is added to the
    repository's own worktree list)."""
    sha = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                                  text=True).strip()
    tree = work / "trees" / sha[:12]
    if not (tree / "ulmfit").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return sha, tree


def run_once(tree: Path, args: list[str], out: Path, log: Path) -> float:
    """Seconds the command took; its output goes to `log`. A failed run stops the benchmark."""
    cmd = [sys.executable, "-c", BOOT, str(tree), *[a.replace("{out}", str(out)) for a in args]]
    t = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t
    if rc:
        sys.exit(f"bench_commits: `{' '.join(cmd)}` failed (exit {rc}) in {tree}; see {log}")
    return seconds


def read_metric(out: Path, spec: str | None):
    if not spec:
        return None
    file, key = spec.split(":", 1)
    value = json.loads((out / file).read_text())
    for k in key.split("."):
        value = value[int(k)] if isinstance(value, list) else value[k]
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refs", nargs=2, required=True, metavar=("BEFORE", "AFTER"), help="the two commits (any git ref)")
    p.add_argument("--rounds", type=int, default=3, help="runs per side, taking turns")
    p.add_argument("--metric", default=None, metavar="FILE:KEY",
                   help="a figure each run writes, e.g. model-best/meta.json:metrics.-1.accuracy (dotted key; integers index lists)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_commits"), help="the exported commits, run folders, logs")
    p.add_argument("--out", type=Path, default=Path("runs/bench_commits.jsonl"), help="one JSON line per run")
    p.add_argument("--report", type=Path, default=None, help="also append the markdown report here")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the ulmfit arguments; {out} is a fresh folder")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not any("{out}" in a for a in command):
        p.error("give the ulmfit arguments after --, with {out} where the run writes")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sides = [(ref, *checkout(ref, args.work)) for ref in args.refs]
    times: dict[str, list[float]] = {ref: [] for ref in args.refs}
    metrics: dict[str, list] = {ref: [] for ref in args.refs}
    for r in range(args.rounds):
        for ref, sha, tree in sides:
            out = args.work / "runs" / f"{sha[:12]}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            seconds = run_once(tree, command, out, args.work / f"{sha[:12]}-{r}.log")
            value = read_metric(out, args.metric)
            times[ref].append(seconds)
            metrics[ref].append(value)
            print(f"round {r + 1}/{args.rounds} {ref} ({sha[:12]}): {seconds:.1f} s"
                  + (f", {args.metric.split(':', 1)[1]} {value}" if args.metric else ""), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps({"ref": ref, "sha": sha, "round": r, "seconds": round(seconds, 2),
                                    "metric": value, "command": command}) + "\n")
    before, after = (statistics.median(times[ref]) for ref in args.refs)
    rows = [f"| {ref} | {statistics.median(times[ref]):.1f} | {', '.join(f'{t:.1f}' for t in times[ref])} | "
            f"{', '.join(map(str, metrics[ref])) if args.metric else '-'} |" for ref in args.refs]
    body = "\n".join([f"Timed: `ulmfit {' '.join(command)}`", "",
                      "| ref | median s | each run (s) | metric |", "|---|---:|---|---|", *rows, "",
                      f"{args.refs[1]} takes **{after / before:.3f}x** the time of {args.refs[0]}; "
                      f"metrics {'identical' if metrics[args.refs[0]] == metrics[args.refs[1]] else 'differ'}."])
    emit("One command under two commits", body, script="bench_commits.py", report=args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
