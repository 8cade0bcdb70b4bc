"""What makes a language model transfer at a fixed CPU budget: pretrain several LMs on the same budget of text,
then run the transfer benchmark (`bench_transfer.py`: lm-finetune -> classify -> evaluate, against TF-IDF + LR)
from each, on the same tasks and seeds.

    ULMFIT_MIRROR=../shared/data python scripts/bench_lm_transfer.py --docs 12000 --seeds 0 1 \\
        --arm imdb --arm mix corpus=mix --arm imdb-qrnn scale=1.45 preset=small-qrnn softmax=adaptive \\
        --arm route lm=runs/imdb-lm/model-best
    python scripts/bench_lm_transfer.py --quick        # smoke test: tiny preset, a few hundred texts
    python scripts/bench_lm_transfer.py --report       # every arm measured so far: one table, budget.png

An arm is a name, then `key=value` words:
- `corpus=imdb` (default) or `corpus=mix`: the text the LM pretrains on. `imdb`: IMDb train + unsup reviews.
  `mix`: every unlabeled text a user without WikiText-103 has here: GoEmotions' train comments (Reddit) and SST's
  train sentences (movie-review snippets), topped up with IMDb reviews to the same number of characters as
  `imdb`. No dev or test text of any task is read.
- `scale=F`: F times the budget's characters (for an arch that runs faster: the same wall time, more text).
- `lm=PATH`: no pretraining; transfer from this bundle (the route's existing LM, as a reference).
- `preset=NAME`: the arm's preset for pretraining, fine-tuning and the classifier (default: `--preset`).
- any other key=value: an LM config override of `--preset` (arch=qrnn, softmax=adaptive, epochs=2, ...).

The budget is the characters of `--docs` IMDb reviews (shuffled, seeded). Every arm validates on the same 1,500
held-out IMDb reviews (2% of train + unsup, as bench_imdb), reported as bits per character so that vocabularies
compare; its pretraining wall time and tokens/s are recorded. Then for each seed, `bench_transfer.main` on
`--tasks` from the arm's model-best: the seed draws the low-label cuts, the fine-tuning and the classifier.
Appends one JSON line per arm to `--out` and prints a markdown table of means over seeds; `--report` prints the
table of every arm in `--out` and plots bits/char against pretraining minutes (WORK/budget.png).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_transfer  # noqa: E402
from _bench import save_plot  # noqa: E402
from bench_imdb import lm_corpus  # noqa: E402
from bench_lm_quality import bits_per_char  # noqa: E402

from ulmfit.data import Corpus, load_corpus  # noqa: E402


def mix_texts(data: Path) -> list[str]:
    """The non-IMDb unlabeled text: GoEmotions train comments and SST train sentences (no dev/test)."""
    import csv

    lines = bench_transfer.need(data / "goemotions" / "train.tsv").read_text(encoding="utf-8").splitlines()
    go = [line.split("\t")[0] for line in lines if line.strip()]
    with open(bench_transfer.need(data / "sst" / "train.csv"), encoding="utf-8", newline="") as f:
        sst = [row["sentence"] for row in csv.DictReader(f)]
    return go + sst


def arm_corpus(imdb: Corpus, extra: list[str], budget: int, seed: int) -> Corpus:
    """Training texts of `budget` characters: `extra` first (all of it), then shuffled IMDb reviews; IMDb's
    held-out reviews as valid."""
    train = [t for t, s in zip(imdb.texts, imdb.splits) if s == "train"]
    random.Random(seed).shuffle(train)
    texts, used = list(extra), sum(map(len, extra))
    for t in train:
        if used >= budget:
            break
        texts.append(t)
        used += len(t)
    valid = [t for t, s in zip(imdb.texts, imdb.splits) if s == "valid"]
    return Corpus(texts + valid, [None] * (len(texts) + len(valid)),
                  ["train"] * len(texts) + ["valid"] * len(valid), "lm-transfer")


def parse_arm(words: list[str]) -> dict:
    name, *kv = words
    arm = {"name": name, "corpus": "imdb", "scale": 1.0, "lm": None, "preset": None, "sets": []}
    for w in kv:
        key, _, value = w.partition("=")
        if key == "corpus":
            if value not in ("imdb", "mix"):
                raise SystemExit(f"error: arm {name}: corpus={value}: use imdb or mix")
            arm["corpus"] = value
        elif key == "scale":
            arm["scale"] = float(value)
        elif key == "lm":
            arm["lm"] = Path(value)
        elif key == "preset":
            arm["preset"] = value
        else:
            arm["sets"].append(w)
    return arm


def pretrain_arm(arm: dict, imdb: Corpus, extra: list[str], args: argparse.Namespace) -> dict:
    from ulmfit.lm import pretrain, resolve_config

    valid = [t for t, s in zip(imdb.texts, imdb.splits) if s == "valid"]
    if arm["lm"] is not None:
        return {"lm": str(arm["lm"]), "pretrained_here": False}
    preset = arm["preset"] or args.preset
    cfg = resolve_config(preset, sets=["epochs=1", *arm["sets"]])
    budget = int(args.budget_chars * arm["scale"])
    corpus = arm_corpus(imdb, extra if arm["corpus"] == "mix" else [], budget, args.seed)
    n_train = corpus.splits.count("train")
    print(f"\n=== {arm['name']}: pretraining on {n_train:,} texts, "
          f"{sum(len(t) for t, s in zip(corpus.texts, corpus.splits) if s == 'train'):,} characters", flush=True)
    t = time.perf_counter()
    res = pretrain(corpus, args.work / arm["name"] / "lm", cfg, seed=args.seed, preset=preset,
                   overwrite=True)
    wall = time.perf_counter() - t
    best = next(m for m in res.metrics if m["epoch"] == res.best_epoch)
    bpc, _ = bits_per_char(res.best, valid, best["valid_loss"])
    return {"lm": str(res.best), "pretrained_here": True, "train_texts": n_train, "budget_chars": budget,
            "wall_s": round(wall, 1), "tokens_per_s": best.get("train_tokens_per_s"),
            "valid_perplexity": best["perplexity"], "valid_bits_per_char": round(bpc, 4)}


def transfer(arm: dict, lm: str, args: argparse.Namespace) -> dict:
    """bench_transfer on each seed; {task: {seed: row}}."""
    out: dict = {}
    for seed in args.seeds:
        work = args.work / arm["name"] / f"s{seed}"
        argv = ["--lm", lm, "--tasks", *args.tasks, "--seed", str(seed), "--work", str(work),
                "--data", str(args.data), "--preset", arm["preset"] or args.preset]
        if args.quick:
            argv.append("--quick")
        bench_transfer.main(argv)
        for task in args.tasks:
            row = json.loads((work / f"{task}.json").read_text(encoding="utf-8"))
            out.setdefault(task, {})[seed] = {"tfidf": row["tfidf"]["accuracy"], **row["ulmfit"]["test"],
                                              "seconds": row["ulmfit"]["seconds"]}
    return out


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def table(rows: list[dict], tasks: list[str], caption: str) -> str:
    head = "| arm | LM minutes | tokens/s | IMDb bits/char | " + " | ".join(
        f"{t}: neural / shipped (TF-IDF)" for t in tasks) + " | mean neural − TF-IDF |"
    lines = [caption, "", head, "|---|---:|---:|---:|" + "---:|" * (len(tasks) + 1)]
    for r in rows:
        lm = r["pretrain"]
        cells, gains = [], []
        for t in tasks:
            seeds = r["transfer"][t].values()
            neural, shipped, tfidf = (mean([s[k] for s in seeds]) for k in ("neural", "shipped", "tfidf"))
            gains.append(neural - tfidf)
            cells.append(f"{100 * neural:.1f} / {100 * shipped:.1f} ({100 * tfidf:.1f})")
        minutes = f"{lm['wall_s'] / 60:.1f}" if lm.get("pretrained_here") else "(given)"
        lines.append(f"| {r['arm']['name']} | {minutes} | {round(lm['tokens_per_s']) if lm.get('tokens_per_s') else '-'} | "
                     f"{lm.get('valid_bits_per_char', '-')} | " + " | ".join(cells) + f" | {100 * mean(gains):+.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """IMDb bits/char against pretraining minutes, one point per arm pretrained here, by encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        lm = r["pretrain"]
        if not lm.get("pretrained_here"):
            continue
        qrnn = "qrnn" in (r["arm"].get("preset") or "") or "arch=qrnn" in r["arm"]["sets"]
        ax.plot(lm["wall_s"] / 60, lm["valid_bits_per_char"], "o", color="tab:blue" if qrnn else "tab:red")
        ax.annotate(r["arm"]["name"], (lm["wall_s"] / 60, lm["valid_bits_per_char"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.plot([], [], "o", color="tab:red", label="AWD-LSTM, full softmax")
    ax.plot([], [], "o", color="tab:blue", label="QRNN, adaptive softmax")
    save_plot(fig, ax, path, xlabel="pretraining wall time (minutes, 2 CPU cores)",
              ylabel="bits per character, 1,500 held-out IMDb reviews", title=title)


def report(args: argparse.Namespace, command: str) -> int:
    """--report: every arm in --out (the latest line per arm name), one table and budget.png."""
    rows: dict[str, dict] = {}
    for line in args.out.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["arm"]["name"]] = row
    tasks = [t for t in args.tasks if all(t in r["transfer"] for r in rows.values())]
    print(table(list(rows.values()), tasks, f"LM transfer at a fixed budget: every arm of {args.out} (`{command}`)"))
    args.work.mkdir(parents=True, exist_ok=True)
    plot(list(rows.values()), args.work / "budget.png", "IMDb LM quality per CPU minute")
    print(f"wrote {args.work / 'budget.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", nargs="+", action="append", metavar="NAME [KEY=VALUE ...]",
                   help="an LM to compare (repeatable; see above)")
    p.add_argument("--docs", type=int, default=12000, help="the budget: this many IMDb reviews' characters")
    p.add_argument("--tasks", nargs="+", default=["sst-100", "sst-1k", "goemotions-2k"],
                   choices=bench_transfer.TASKS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--seed", type=int, default=0, help="seed of the pretraining (text order, weights)")
    p.add_argument("--preset", default="small-lstm", help="the arms' LM preset unless an arm sets preset= (default "
                   "small-lstm, the AWD-LSTM the recorded rows used)")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=Path("runs/lm-transfer"))
    p.add_argument("--out", type=Path, default=None, help="JSON lines (default: WORK/results.jsonl)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny preset, 300 reviews, one seed")
    p.add_argument("--report", action="store_true",
                   help="train nothing: the table of every arm in --out and WORK/budget.png (bits/char by minutes)")
    args = p.parse_args(argv)
    command = shlex.join(["python", "scripts/bench_lm_transfer.py", *(sys.argv[1:] if argv is None else argv)])
    args.out = args.out or args.work / "results.jsonl"
    if args.report:
        return report(args, command)
    if args.quick:
        args.preset, args.docs, args.seeds = "tiny", 300, args.seeds[:1]
        args.arm = args.arm or [["imdb"], ["mix", "corpus=mix"]]
    if not args.arm:
        p.error("give at least one --arm")
    arms = [parse_arm(a) for a in args.arm]

    imdb = load_corpus("imdb-sample" if args.quick else "imdb", valid_pct=0)
    imdb = lm_corpus(imdb.select(["train", "unsup"]) if not args.quick else imdb, args.seed)
    train = [t for t, s in zip(imdb.texts, imdb.splits) if s == "train"]
    random.Random(args.seed).shuffle(train)
    args.budget_chars = sum(len(t) for t in train[:args.docs])
    extra = mix_texts(args.data)
    if args.quick:
        extra = extra[:200]
    print(f"budget: {args.budget_chars:,} characters ({args.docs:,} IMDb reviews); the mix's non-IMDb text: "
          f"{sum(map(len, extra)):,} characters in {len(extra):,} texts", flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for arm in arms:
        lm = pretrain_arm(arm, imdb, extra, args)
        row = {"arm": {**arm, "lm": str(arm["lm"]) if arm["lm"] else None}, "pretrain": lm,
               "transfer": transfer(arm, lm["lm"], args), "seeds": args.seeds, "command": command,
               "date": time.strftime("%Y-%m-%d")}
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        print("\n" + table(rows, args.tasks, f"so far ({len(rows)} of {len(arms)} arms)"), flush=True)
    print("\n" + table(rows, args.tasks, f"LM transfer at a fixed budget, {time.strftime('%Y-%m-%d')}, "
                                          f"seeds {args.seeds}: `{command}`"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
