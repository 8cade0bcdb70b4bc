"""Active-learning benchmark: do the labels `ulmfit suggest` picks teach a classifier more than random ones?

    python scripts/bench_suggest.py --lm runs/imdb-lm/model-best --pool 5000 --test 2000 --seeds 0 1 2
    python scripts/bench_suggest.py --lm runs/imdb-lm/model-best --estimate   # the full run's compute, from a
                                                                              # minute of measured steps
    python scripts/bench_suggest.py --quick     # smoke test of this script (a couple of minutes; numbers mean nothing)

IMDb through the project's registry (ULMFIT_MIRROR as everywhere). For each seed:

    pool      --pool reviews of IMDb's train split (a stratified draw seeded by the seed), labels hidden: the
              oracle reveals a review's label when it is picked
    start     --start reviews of the pool at random (seeded), the same for both arms
    rounds    --rounds times: train a classifier on the labels so far (`train_classifier`, --preset, the LM --lm,
              the seed; its valid split is 10% of those labels, as `classify` carves it), score it on the test
              set, then pick --step more reviews of the rest of the pool: at random (the "random" arm), or the
              top of `ulmfit.suggest.rank_texts` with that classifier (a "kcenter" or "kmeans" arm: margin
              uncertainty, the picks spread over the 5 x --step most uncertain by that `--spread`); then the last
              classifier is scored too (--arms chooses the arms)
    test      --test reviews of IMDb's test split: one stratified draw (seed 0) for every seed, so seeds and arms
              are scored on the same reviews; never seen by any choice

`--combine A/results.json B/results.json` trains nothing: it merges earlier runs (other seeds, other arms of the
same seeds) into one report, so that a new arm is measured without re-running the others.

The goal (issue #25): a suggest arm reaches the random arm's accuracy at the last round (500 labels with the
defaults; mean over seeds) with no more than 300 labels. "Reaches" is read off each arm's mean curve; the report
also gives the labels each arm needs by linear interpolation between rounds.

Writes WORK/results.json (per seed and arm: labels, test accuracy of what `predict` outputs and of the neural
model alone, n-gram weight, the chosen texts' pool indices, seconds; the means and the goal) and WORK/curves.png
(accuracy against labels, both arms, each seed faint and the mean bold). Classifier bundles go to
WORK/seed<S>/<arm>/ and are replaced round after round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _bench import save_plot  # noqa: E402

from ulmfit.data import Corpus, load_corpus, subsample
from ulmfit.data.splits import carve_valid
from ulmfit.errors import UlmfitError

ARMS = ("random", "kcenter", "kmeans")  # random picks, or suggest's ranking with that --spread
OLD_NAMES = {"suggest": "kcenter"}
COLORS = {"random": "tab:gray", "kcenter": "tab:red", "kmeans": "tab:blue"}  # results files written before --spread existed
VALID_PCT = 0.1  # as `classify` carves it from a source without a valid split
QUICK = dict(pool=300, test=200, start=20, step=20, rounds=4, seeds=[0], preset="tiny")
QUICK_LM_DOCS = 150  # --quick without --lm: a tiny LM pretrained here on this many IMDb-sample reviews
QUICK_CHARS = 1000  # --quick: each review cut to its first this many characters (the tiny model reads 16-token chunks)


# ------------------------------------------------------------------------------------------------ the data


def read_data(args: argparse.Namespace) -> tuple[Corpus, Corpus]:
    """(IMDb's train split, the test draw). --quick: IMDb-sample's train and valid splits instead."""
    if args.quick:
        sample = load_corpus("imdb-sample", valid_pct=0)
        train, test = sample.select("train"), sample.select("valid")
        test = Corpus(test.texts, test.labels, ["test"] * len(test), "imdb-sample")
        train, test = (Corpus([t[:QUICK_CHARS] for t in c.texts], c.labels, c.splits, c.name) for c in (train, test))
    else:
        imdb = load_corpus("imdb", valid_pct=0)
        train, test = imdb.select("train"), imdb.select("test")
    if args.test < len(test):
        test = subsample(test, "test", args.test, seed=0, stratified=True)
    return train, test


def draw_pool(train: Corpus, n: int, seed: int) -> Corpus:
    return subsample(train, "train", n, seed=seed, stratified=True) if n < len(train) else train


# ------------------------------------------------------------------------------------------------ one round


def train_and_score(pool: Corpus, labelled: list[int], test: Corpus, lm: Path, out: Path, cfg, device):
    """A classifier on the pool reviews `labelled` (10% of them carved as valid), scored on `test`. Returns (its
    bundle, loaded; a dict of what was measured)."""
    from ulmfit.classify import Classifier, train_classifier
    from ulmfit.classify.ngram import mix

    t0 = time.time()
    corpus = carve_valid(Corpus([pool.texts[i] for i in labelled], [pool.labels[i] for i in labelled],
                                ["train"] * len(labelled), "imdb-pool"), VALID_PCT, cfg.seed)
    result = train_classifier(corpus, lm=lm, out=out, config=cfg, device=device, overwrite=True, log=lambda s: None)
    trained = time.time() - t0
    clf = Classifier.load(result.best, device=device)
    neural, ngram = clf.predict_parts(test.texts)
    truth = np.array([clf.labels.index(y) for y in test.labels])
    shipped = mix(neural, ngram, clf.ngram_weight)  # what predict outputs

    def accuracy(p):
        return round(float((p.argmax(1) == truth).mean()), 4)

    return clf, {"labels": len(labelled), "accuracy": accuracy(shipped), "neural": accuracy(neural),
                 "ngram_weight": clf.ngram_weight, "valid_accuracy": round(float(result.accuracy), 4),
                 "train_seconds": round(trained, 1), "seconds": round(time.time() - t0, 1)}


def pick(arm: str, clf, pool: Corpus, labelled: list[int], step: int, rng: np.random.Generator) -> list[int]:
    """`step` more pool indices for `arm` (random, or suggest spreading its picks by `arm`), from the pool
    reviews not labelled yet."""
    from ulmfit.suggest import rank_texts

    rest = np.array(sorted(set(range(len(pool))) - set(labelled)))
    if arm == "random":
        return sorted(int(i) for i in rng.choice(rest, size=step, replace=False))
    ranking = rank_texts([clf], [pool.texts[i] for i in rest], step, spread=arm)
    return [int(rest[i]) for i in ranking.order]


def run_seed(seed: int, train: Corpus, test: Corpus, lm: Path, args: argparse.Namespace) -> dict:
    from ulmfit.classify import resolve_config

    cfg = resolve_config(args.preset, sets=args.clas_set, overrides={"seed": seed})
    pool = draw_pool(train, args.pool, seed)
    rng = np.random.default_rng(seed)
    start = sorted(int(i) for i in rng.choice(len(pool), size=args.start, replace=False))
    arm_rng = {arm: np.random.default_rng([seed, k]) for k, arm in enumerate(ARMS)}
    labelled = {arm: list(start) for arm in args.arms}
    curves: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    picks: dict[str, list[list[int]]] = {arm: [] for arm in args.arms}
    for r in range(args.rounds + 1):
        shared = None
        for arm in args.arms:
            if r == 0 and shared is not None:  # round 0 is the same labels for both arms: trained once
                clf, row = shared[0], dict(shared[1])
            else:
                clf, row = train_and_score(pool, labelled[arm], test, lm, args.work / f"seed{seed}" / arm, cfg,
                                           args.device)
                shared = (clf, row)
            curves[arm].append(row)
            print(f"seed {seed} {arm:>7} {row['labels']:>5} labels: test accuracy {row['accuracy']:.4f} (neural "
                  f"{row['neural']:.4f}, n-gram weight {row['ngram_weight']:g}); {row['seconds']:.0f}s", flush=True)
            if r < args.rounds:
                t0 = time.time()
                new = pick(arm, clf, pool, labelled[arm], args.step, arm_rng[arm])
                labelled[arm] += new
                picks[arm].append(new)
                row["pick_seconds"] = round(time.time() - t0, 1)
    shutil.rmtree(args.work / f"seed{seed}", ignore_errors=True)  # bundles of 3 x 9 runs would fill a disk
    return {"seed": seed, "pool": len(pool), "start": start, "curves": curves, "picks": picks}


# ------------------------------------------------------------------------------------------------ the report


def labels_needed(labels: list[int], acc: list[float], target: float) -> float | None:
    """The labels at which a curve first reaches `target`, interpolated linearly between rounds (None: never)."""
    for i, (n, a) in enumerate(zip(labels, acc)):
        if a >= target:
            if i == 0:
                return float(n)
            n0, a0 = labels[i - 1], acc[i - 1]
            return float(n0 + (n - n0) * (target - a0) / (a - a0))
    return None


def summarize(runs: list[dict], goal_labels: int) -> dict:
    """Each arm's mean curve over the runs (seeds) that have it, and the labels each suggest arm needs to reach
    random's last-round mean."""
    labels = [row["labels"] for row in next(iter(runs[0]["curves"].values()))]
    arms = [arm for arm in ARMS if any(arm in run["curves"] for run in runs)]
    seeds = {arm: [run["seed"] for run in runs if arm in run["curves"]] for arm in arms}
    mean = {arm: [round(float(np.mean([run["curves"][arm][i]["accuracy"] for run in runs if arm in run["curves"]])),
                        4) for i in range(len(labels))] for arm in arms}
    target = mean["random"][-1] if "random" in mean else None  # without random: curves only (see --combine)
    need = {arm: labels_needed(labels, mean[arm], target) for arm in arms if arm != "random" and target is not None}
    return {"labels": labels, "seeds": seeds, "mean_accuracy": mean, "target": target,
            "suggest_labels_to_target": need, "random_labels_to_target": labels[-1],
            "goal": f"suggest reaches random's {labels[-1]}-label accuracy with <= {goal_labels} labels",
            "goal_met": {arm: n is not None and n <= goal_labels for arm, n in need.items()}}


def plot(runs: list[dict], summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = summary["labels"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for arm in summary["mean_accuracy"]:
        color = COLORS[arm]
        for run in runs:
            if arm in run["curves"]:
                ax.plot(labels, [row["accuracy"] for row in run["curves"][arm]], color=color, alpha=0.25, lw=1)
        name = arm if arm == "random" else f"suggest --spread {arm}"
        ax.plot(labels, summary["mean_accuracy"][arm], "o-", color=color, lw=2,
                label=f"{name} (mean of {len(summary['seeds'][arm])})")
    if summary["target"] is not None:
        ax.axhline(summary["target"], color="tab:gray", ls=":", lw=1)
    save_plot(fig, ax, path, xlabel="labelled reviews", ylabel="test accuracy (what predict outputs)", title=title)


# ------------------------------------------------------------------------------------------------ compute


def plan(args: argparse.Namespace) -> dict:
    """What the run does, counted: classifier trainings (with their label counts) and documents predicted."""
    counts = [args.start + r * args.step for r in range(args.rounds + 1)]
    trainings = counts + counts[1:] * (len(args.arms) - 1)  # round 0 is shared by the arms
    ranked = len([a for a in args.arms if a != "random"])
    rest = [args.pool - n for n in counts[:-1]] * ranked
    predicted = sum(rest) + ranked * args.rounds * 5 * args.step + len(trainings) * args.test * 2  # pool, spread, test
    return {"seeds": len(args.seeds), "trainings": trainings, "predicted_per_seed": predicted}


def estimate(args: argparse.Namespace, train: Corpus, lm: Path) -> str:
    """The full run's compute: a classifier's optimizer step and predict's documents/s measured on this machine
    with --lm and --preset, times the steps of every training (`fit_min_steps`, as classify counts them) and the
    documents every round predicts. Training's per-epoch validation, the n-gram model and calibration are left
    out (small next to the steps at these label counts)."""
    import torch

    from ulmfit.classify import resolve_config
    from ulmfit.classify.config import fit_min_steps
    from ulmfit.classify.fit import _build, _setup
    from ulmfit.classify.model import predict_ids
    from ulmfit.lr_find import sweep
    from ulmfit.runtime import set_threads

    set_threads()  # ULMFIT_THREADS, as every training and predict of the run itself
    cfg = resolve_config(args.preset, sets=args.clas_set, overrides={"seed": 0})
    pool = draw_pool(train, max(args.pool, 400), 0)
    corpus = carve_valid(Corpus(pool.texts[:400], pool.labels[:400], ["train"] * 400, "imdb-pool"), VALID_PCT, 0)
    s = _setup(corpus, lm, cfg, None, None, args.device, lambda line: None)
    learn, model = _build(s, lambda line: None)
    steps = 8
    t0 = time.time()
    sweep(learn, start_lr=1e-7, end_lr=1e-6, steps=steps)  # one-batch steps at harmless lrs, weights restored
    per_step = (time.time() - t0) / steps
    docs = s.store.docs("train")[:256]
    model.eval()
    t0 = time.time()
    predict_ids(model, docs, bs=64, pad_idx=s.store.vocab.pad_id, seq_len=cfg.seq_len, device=s.device)
    per_doc = (time.time() - t0) / len(docs)
    p = plan(args)
    total_steps = 0
    for n in p["trainings"]:
        n_train = n - max(1, round(n * VALID_PCT))
        c, _ = fit_min_steps(cfg, n_train)
        total_steps += (n_train // c.bs if n_train > c.bs else 1) * c.total_epochs() * c.bs / s.cfg.bs
    seconds = p["seeds"] * (total_steps * per_step + p["predicted_per_seed"] * per_doc)
    return (f"measured on this machine ({torch.get_num_threads()} torch thread(s), preset {args.preset}): "
            f"{per_step:.2f}s per optimizer step at bs {s.cfg.bs}, {1 / per_doc:.0f} documents/s predicted\n"
            f"the run: {p['seeds']} seeds x {len(p['trainings'])} trainings ({', '.join(map(str, p['trainings']))} "
            f"labels; {total_steps:.0f} steps at bs {s.cfg.bs} per seed) + {p['predicted_per_seed']:,} documents "
            f"predicted per seed (pool ranking, k-center vectors, test scoring)\n"
            f"estimated compute: {seconds / 3600:.1f} hours ({seconds / 60:.0f} minutes)")


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm", type=Path, default=None, help="the IMDb LM bundle (e.g. runs/imdb-lm/model-best); "
                   "required unless --quick")
    p.add_argument("--pool", type=int, default=5000, help="unlabeled pool: reviews of IMDb's train split")
    p.add_argument("--test", type=int, default=2000, help="test reviews (one stratified draw of IMDb's test split)")
    p.add_argument("--start", type=int, default=100, help="labels at round 0 (random, shared by the arms)")
    p.add_argument("--step", type=int, default=100, help="labels added per round")
    p.add_argument("--rounds", type=int, default=4, help="rounds of picking")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds: pool, start, training, picks")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=["random", "kcenter", "kmeans"],
                   help="random picks, and suggest with each --spread (kcenter, kmeans) named")
    p.add_argument("--combine", nargs="+", type=Path, metavar="RESULTS",
                   help="train nothing: merge these results.json files (seeds and arms of earlier runs) into one "
                        "WORK/results.json, curves.png and table")
    p.add_argument("--goal", type=int, default=None,
                   help="the goal: suggest reaches random's last-round accuracy with at most this many labels "
                        "(default: --start + 2 x --step, 300 with the defaults)")
    p.add_argument("--preset", default="small", help="the classifier preset")
    p.add_argument("--set", dest="clas_set", action="append", default=[], metavar="K=V",
                   help="classifier config override, as `ulmfit classify --set` (repeatable)")
    p.add_argument("--work", type=Path, default=None,
                   help="results, plot and classifier bundles (default runs/suggest; runs/suggest-quick)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: a GPU when there is one)")
    p.add_argument("--estimate", action="store_true",
                   help="measure a few training steps and predictions, print the full run's estimated compute, stop")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test of this script: IMDb-sample, pool {QUICK['pool']}, test {QUICK['test']}, "
                        f"{QUICK['start']} + {QUICK['rounds']} x {QUICK['step']} labels, one seed, the tiny preset "
                        "(and, without --lm, a tiny LM pretrained here); numbers mean nothing")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        # a smoke test usually shares its machine: one torch thread does not wait on busy cores (ULMFIT_THREADS
        # given by the user wins)
        os.environ.setdefault("ULMFIT_THREADS", "1")
    if args.lm is None and not args.quick and not args.combine:
        p.error("--lm is required (an IMDb LM bundle), unless --quick")
    if args.lm is not None and not args.lm.exists():
        p.error(f"--lm {args.lm}: no such bundle")
    if args.start < 2 or args.step < 1 or args.rounds < 1 or args.start + args.rounds * args.step > args.pool:
        p.error("need --start >= 2, --step >= 1, --rounds >= 1 and --start + --rounds x --step <= --pool")
    args.goal = args.goal if args.goal is not None else args.start + 2 * args.step
    args.work = args.work or Path("runs/suggest-quick" if args.quick else "runs/suggest")
    return args


def quick_lm(args: argparse.Namespace) -> Path:
    from ulmfit.lm import pretrain
    from ulmfit.lm.config import resolve_config

    cfg = resolve_config("tiny", sets=["epochs=1", "bs=32"])
    return pretrain("imdb-sample", args.work / "quick-lm", cfg, preset="tiny", seed=0, device=args.device,
                    max_docs=QUICK_LM_DOCS, overwrite=True, log=lambda s: None).best


def report_runs(runs: list[dict], args: argparse.Namespace, title: str, about: dict, command: str, t0: float) -> None:
    """WORK/results.json, WORK/curves.png and the table of mean curves."""
    summary = summarize(runs, args.goal)
    args.work.mkdir(parents=True, exist_ok=True)
    plot(runs, summary, args.work / "curves.png", title)
    report = {"date": datetime.date.today().isoformat(), "command": command, **about,
              "seconds": round(time.time() - t0), "summary": summary, "runs": runs}
    (args.work / "results.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print("\n| labels (seeds) | " + " | ".join(map(str, summary["labels"])) + " |\n|---|"
          + "---:|" * len(summary["labels"]))
    for arm, mean in summary["mean_accuracy"].items():
        print(f"| {arm} ({' '.join(map(str, summary['seeds'][arm]))}) | "
              + " | ".join(f"{100 * a:.1f}%" for a in mean) + " |")
    for arm, need in summary["suggest_labels_to_target"].items():
        print(f"random's {summary['labels'][-1]}-label accuracy {100 * summary['target']:.1f}%: suggest --spread {arm} "
              "reaches it with " + (f"{need:.0f} labels" if need is not None else "none of its label counts")
              + f"; goal (<= {args.goal}) {'met' if summary['goal_met'][arm] else 'not met'}"
              + (" (--quick: numbers mean nothing)" if args.quick else ""))
    print(f"wrote {args.work / 'results.json'} and {args.work / 'curves.png'} ({report['seconds'] / 60:.1f} min)")


def combine(paths: list[Path]) -> tuple[list[dict], dict]:
    """The runs of several results.json files, one per seed (arms of the same seed merged), and what they share."""
    by_seed: dict[int, dict] = {}
    about = None
    for path in paths:
        report = json.loads(path.read_text(encoding="utf-8"))
        shared = {k: report[k] for k in ("lm", "preset", "pool", "test")}
        if about is not None and shared != about:
            raise UlmfitError(f"{path} measured another setup ({shared}) than the first file ({about})",
                              hint="combine only runs of the same LM, preset, pool and test sizes")
        about = shared
        for run in report["runs"]:
            curves = {OLD_NAMES.get(arm, arm): c for arm, c in run["curves"].items()}
            picks = {OLD_NAMES.get(arm, arm): c for arm, c in run["picks"].items()}
            seen = by_seed.setdefault(run["seed"], {**run, "curves": {}, "picks": {}})
            seen["curves"].update(curves)
            seen["picks"].update(picks)
    runs = [by_seed[s] for s in sorted(by_seed)]
    if not all("random" in run["curves"] for run in runs):
        raise UlmfitError("every seed needs its random arm", hint="run the missing seeds with --arms random ...")
    return runs, about


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "scripts/bench_suggest.py", *(sys.argv[1:] if argv is None else argv)])
    if args.combine:
        t0 = time.time()
        runs, about = combine(args.combine)
        report_runs(runs, args, f"IMDb, pool {about['pool']:,}, test {about['test']:,}, preset {about['preset']}, "
                    f"seeds {' '.join(str(r['seed']) for r in runs)}", about, command, t0)
        return 0
    from ulmfit.classify import resolve_config

    resolve_config(args.preset, sets=args.clas_set)  # a bad --set fails before any data is read
    t0 = time.time()
    train, test = read_data(args)
    if args.estimate:
        print(estimate(args, train, args.lm or quick_lm(args)))
        return 0
    p = plan(args)
    print(f"plan: {p['seeds']} seed(s) x {len(p['trainings'])} classifier trainings ({p['trainings']} labels) + "
          f"{p['predicted_per_seed']:,} documents predicted per seed; --estimate says how long", flush=True)
    lm = args.lm or quick_lm(args)
    runs = [run_seed(seed, train, test, lm, args) for seed in args.seeds]
    title = (f"{'--quick: ' if args.quick else ''}IMDb, pool {args.pool:,}, test {len(test):,}, preset "
             f"{args.preset}, seeds {' '.join(map(str, args.seeds))}")
    report_runs(runs, args, title, {"lm": str(lm), "preset": args.preset, "pool": args.pool, "test": len(test)},
                command, t0)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UlmfitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
