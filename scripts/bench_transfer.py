"""Transfer benchmark: the README's small-corpus route from an IMDb language model to public corpora of other
domains, each against TF-IDF + logistic regression in the same run, with wall time.

    ULMFIT_MIRROR=../shared/data python scripts/bench_transfer.py --lm runs/imdb-lm/model-best
    python scripts/bench_transfer.py --lm runs/imdb-lm/model-best --tasks sst-100 sst-1k --seed 1
    python scripts/bench_transfer.py --lm runs/imdb-lm/model-best --ft-epochs 4 --lm-set ft_extend_vocab=2000 \\
        --set drop_mult=0.3 --work runs/transfer-ft4
    python scripts/bench_transfer.py --quick          # smoke test of this script: a few minutes, numbers mean nothing

Tasks (read from --data, default ../shared/data; written as text,label,split tables into --work):

- `sst`: SST binary. A sentence with sentiment value <= 0.4 is "negative", > 0.6 "positive", those in between
  are dropped. sst/train.csv is the train split, sst/dev.csv valid, sst/test.csv test (6,920 / 872 / 1,821).
- `sst-1k`, `sst-100`: SST's train split cut to 1,000 and to 100 labels (stratified, seeded by --seed). A user
  with 100 labels has no 872-sentence dev set, so valid is 10% of those labels (stratified, seeded) and train
  the rest (900 / 100 and 90 / 10); dev.csv is not read. Test is SST's full test split.
- `goemotions`: GoEmotions (Reddit comments), binary: the emotion most frequent in train.tsv (computed; in the
  released data it is "neutral") against "other". A comment is that emotion when its label list holds that
  emotion's id. train.tsv / dev.tsv / test.tsv are train / valid / test.
- `goemotions-2k`: that task with its train split cut to 2,000 labels, 10% of them valid, as `sst-1k` (1,800 /
  200); test is GoEmotions' full test split: a user's 2,000-document corpus from a domain IMDb is not.

For each task, in one run:

1. TF-IDF + LR: `ulmfit.classify.ngram.fit_ngram` (words and word pairs; C by stratified cross-validation) on
   every label the user has, train and valid together (it needs no separate validation split); test accuracy.
2. ulmfit, the README's route: `lm-finetune` the IMDb LM (--lm) on the task's train + valid texts (train
   trains, valid validates; test is never read), `classify` on the fine-tuned LM (model-best, temperature and
   ensemble weight chosen on valid; the bundle's n-gram model fitted on train), `evaluate --split test`.
   Reported: the neural model alone, the bundle's n-gram model alone, and what `predict` outputs (the
   shipped default: the two mixed with the weight chosen on valid). Where a task's text is too short for one
   LM batch of the preset (sst-100), LM fine-tuning runs at the largest bs that fits, as lm-finetune's error
   hint says, and the task's JSON records it.

Nothing that picks a setting sees a test label; the test split is scored once, at the end. Results go to
WORK/<task>.json (sizes, accuracies, the chosen weight, validation metrics, wall time of each step, the
command); the end prints a markdown table whose caption holds the command line, ready for BENCHMARKS.md.
Models go to WORK/<task>/lm and WORK/<task>/clas and are replaced by the next run in the same WORK.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from ulmfit.data import Corpus, load_corpus, subsample
from ulmfit.data.splits import carve_valid
from ulmfit.errors import UlmfitError

if TYPE_CHECKING:
    pass

TASKS = ("sst", "sst-1k", "sst-100", "goemotions", "goemotions-2k")
SST_NEGATIVE, SST_POSITIVE = 0.4, 0.6  # value <= 0.4: negative; > 0.6: positive; in between: dropped
LOW_LABELS = {"sst-1k": 1000, "sst-100": 100, "goemotions-2k": 2000}
LOW_VALID_PCT = 0.1  # the low-label tasks' valid split: this share of their own labels
QUICK_CAPS = {"train": 200, "valid": 50, "test": 200}  # --quick: documents kept per split (stratified)
QUICK_LM_DOCS = 150  # --quick: IMDb-sample reviews (train and valid each) the tiny LM is pretrained on
OTHER = "other"


# ------------------------------------------------------------------------------------------------ the corpora


def need(path: Path) -> Path:
    if not path.is_file():
        raise UlmfitError(f"no such file: {path}", hint="point --data at the folder holding sst/ and goemotions/")
    return path


def read_sst(data: Path) -> Corpus:
    """SST binary with its official splits: train, valid (dev.csv), test."""
    texts, labels, splits = [], [], []
    for split, name in (("train", "train.csv"), ("valid", "dev.csv"), ("test", "test.csv")):
        with open(need(data / "sst" / name), encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                value = float(row["values"])
                if SST_NEGATIVE < value <= SST_POSITIVE:
                    continue
                texts.append(row["sentence"])
                labels.append("negative" if value <= SST_NEGATIVE else "positive")
                splits.append(split)
    return Corpus(texts, labels, splits, "sst")


def cut_labels(corpus: Corpus, n: int, seed: int) -> Corpus:
    """`corpus`'s train split cut to n labels (stratified), 10% of them carved out as valid; its test kept."""
    cut = subsample(corpus.select(["train", "test"]), "train", n, seed=seed, stratified=True)
    return carve_valid(cut, LOW_VALID_PCT, seed)


def read_goemotions(data: Path) -> Corpus:
    """GoEmotions as a binary task: train's most frequent emotion against the rest."""
    folder = data / "goemotions"
    names = need(folder / "emotions.txt").read_text(encoding="utf-8").split()
    rows = {}
    for split, name in (("train", "train.tsv"), ("valid", "dev.tsv"), ("test", "test.tsv")):
        with open(need(folder / name), encoding="utf-8") as f:
            rows[split] = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    ids = Counter(int(i) for _, label_ids, _ in rows["train"] for i in label_ids.split(","))
    top = ids.most_common(1)[0][0]
    texts, labels, splits = [], [], []
    for split, split_rows in rows.items():
        for text, label_ids, _ in split_rows:
            texts.append(text)
            labels.append(names[top] if top in {int(i) for i in label_ids.split(",")} else OTHER)
            splits.append(split)
    return Corpus(texts, labels, splits, "goemotions")


def make_task(name: str, data: Path, seed: int, quick: bool) -> Corpus:
    corpus = read_goemotions(data) if name.startswith("goemotions") else read_sst(data)
    if name in LOW_LABELS:
        corpus = cut_labels(corpus, LOW_LABELS[name], seed)
    if quick:
        for split, cap in QUICK_CAPS.items():
            if corpus.splits.count(split) > cap:
                corpus = subsample(corpus, split, cap, seed=seed, stratified=True)
    return Corpus(corpus.texts, corpus.labels, corpus.splits, name)


def write_table(corpus: Corpus, path: Path) -> None:
    """text,label,split: what `ulmfit` reads with --text-col text --label-col label (the split column is found
    by its name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        w.writerows(zip(corpus.texts, corpus.labels, corpus.splits))


# ------------------------------------------------------------------------------------------------ the methods


def run_tfidf(corpus: Corpus, seed: int) -> dict:
    """TF-IDF + LR on train + valid (C by cross-validation on those labels), scored on test."""
    import numpy as np

    from ulmfit.classify.ngram import fit_ngram

    t = time.perf_counter()
    known = corpus.select(["train", "valid"])
    classes = sorted(set(known.labels))
    model = fit_ngram(known.texts, known.labels, classes, seed)
    test = corpus.select("test")
    predicted = np.array(classes)[model.predict_proba(test.texts).argmax(1)]
    accuracy = float((predicted == np.array(test.labels)).mean())
    return {"accuracy": accuracy, "c": model.c, "cv_accuracy": model.cv_accuracy, "fitted_on": len(known),
            "seconds": round(time.perf_counter() - t, 1)}


def run_ulmfit(corpus: Corpus, table: Path, task_dir: Path, lm: Path, args: argparse.Namespace, lm_cfg, explicit,
               clas_cfg) -> dict:
    """lm-finetune -> classify -> evaluate --split test, as the README's route; each step timed."""
    from ulmfit.classify import train_classifier
    from ulmfit.classify.evaluation import evaluate
    from ulmfit.lm import finetune

    cols = {"text_col": "text", "label_col": "label"}
    result = {"pretrained": str(lm)}
    t = time.perf_counter()
    if not args.skip_finetune:
        # a split too short for one batch trains at the bs it holds (ulmfit.lm.config.fit_min_steps)
        ft = finetune(str(table), lm, task_dir / "lm", lm_cfg, preset=args.preset, explicit=explicit,
                      seed=args.seed, device=args.device, overwrite=True, **cols)
        best = ft.metrics[ft.best_epoch - 1] if ft.best_epoch else {}
        result["finetune"] = {"bundle": str(ft.best), "bs": ft.config.bs,
                              "epochs": len(ft.metrics), "best_epoch": ft.best_epoch,
                              "valid_perplexity": best.get("perplexity"), "valid_accuracy": best.get("accuracy"),
                              "notes": ft.notes, "seconds": round(time.perf_counter() - t, 1)}
        lm = ft.best
    t = time.perf_counter()
    clas = train_classifier(str(table), lm=lm, out=task_dir / "clas", config=clas_cfg, device=args.device,
                            overwrite=True, **cols)
    result["classify"] = {"bundle": str(clas.best), "best_epoch": clas.best_epoch,
                          "valid": {k: clas.valid[k] for k in ("accuracy", "macro_f1", "nll")},
                          "ngram": clas.ngram, "seconds": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    report = evaluate([clas.best], str(table), split="test", device=args.device, **cols)
    shipped = report.models[0]
    parts = shipped.get("parts")  # absent when the bundle has no n-gram model (--set ngram=false)
    result["test"] = {"shipped": shipped["accuracy"], "ngram_weight": shipped["ngram_weight"],
                      "neural": parts["neural"]["accuracy"] if parts else shipped["accuracy"],
                      "ngram": parts["ngram"]["accuracy"] if parts else None}
    result["evaluate"] = report.to_dict()
    result["evaluate_seconds"] = round(time.perf_counter() - t, 1)
    result["seconds"] = round(sum(result[k]["seconds"] for k in ("finetune", "classify") if k in result)
                              + result["evaluate_seconds"], 1)
    return result


def pretrain_quick_lm(args: argparse.Namespace, out: Path) -> Path:
    """--quick: a tiny LM on IMDb-sample reviews (the file in --data when there is one, else the registry)."""
    from ulmfit.lm import pretrain
    from ulmfit.lm.config import resolve_config

    src = args.data / "imdb_sample.tgz"
    cfg = resolve_config("tiny", sets=["epochs=1", "bs=32"])
    res = pretrain(str(src) if src.is_file() else "imdb-sample", out, cfg, preset="tiny", seed=args.seed,
                   device=args.device, max_docs=QUICK_LM_DOCS, overwrite=True)
    return res.best


# ------------------------------------------------------------------------------------------------ the table


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown_table(rows: list[dict], caption: str) -> str:
    lines = [caption, "",
             "| task | train / valid / test | TF-IDF + LR | neural | n-gram (bundle) | shipped | shipped − TF-IDF "
             "(points) | n-gram weight | minutes (TF-IDF + LR / ulmfit) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        s, tfidf, test = r["sizes"], r["tfidf"], r["ulmfit"]["test"]
        lines.append(f"| {r['task']} | {s['train']:,} / {s['valid']:,} / {s['test']:,} | {pct(tfidf['accuracy'])} "
                     f"| {pct(test['neural'])} | {pct(test['ngram'])} | **{pct(test['shipped'])}** "
                     f"| {100 * (test['shipped'] - tfidf['accuracy']):+.1f} | {test['ngram_weight']:g} "
                     f"| {tfidf['seconds'] / 60:.1f} / {r['ulmfit']['seconds'] / 60:.1f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm", type=Path, default=None,
                   help="the IMDb LM bundle to start from (the --out of `ulmfit pretrain`, or its model-best); "
                        "required unless --quick")
    p.add_argument("--data", type=Path, default=None,
                   help="folder holding sst/{train,dev,test}.csv and goemotions/{train,dev,test}.tsv + emotions.txt "
                        "(default: ../shared/data next to the repository)")
    p.add_argument("--work", type=Path, default=None,
                   help="where task tables, models and per-task JSON go (default: runs/transfer; runs/transfer-quick "
                        "with --quick)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="which tasks to run (default: all)")
    p.add_argument("--preset", default="small", help="preset of the LM fine-tuning and of the classifier")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the low-label cuts, their valid splits, LM fine-tuning, the classifier and the "
                        "n-gram model's cross-validation folds")
    p.add_argument("--ft-epochs", type=int, default=None,
                   help="LM fine-tuning epochs with all layers, after the frozen one(s) (default: the preset's)")
    p.add_argument("--set", dest="clas_set", action="append", default=[], metavar="K=V",
                   help="classifier config override, as `ulmfit classify --set` (repeatable)")
    p.add_argument("--lm-set", action="append", default=[], metavar="K=V",
                   help="LM fine-tuning config override, as `ulmfit lm-finetune --set` (repeatable)")
    p.add_argument("--skip-finetune", action="store_true",
                   help="train the classifier on --lm directly, without fine-tuning it on the task's texts")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: a GPU when there is one)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test of this script: tiny preset, each split cut to a few hundred documents, and "
                        "(without --lm) a tiny LM pretrained here on 150 IMDb-sample reviews; numbers mean nothing")
    args = p.parse_args(argv)
    if args.lm is None and not args.quick:
        p.error("--lm is required (an IMDb LM bundle), unless --quick")
    if args.lm is not None and not args.lm.exists():
        p.error(f"--lm {args.lm}: no such bundle")
    repo = Path(__file__).resolve().parent.parent
    args.data = args.data or repo.parent / "shared" / "data"
    args.work = args.work or Path("runs/transfer-quick" if args.quick else "runs/transfer")
    if args.quick:
        args.preset = "tiny"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "scripts/bench_transfer.py", *(sys.argv[1:] if argv is None else argv)])
    from ulmfit.classify import resolve_config as clas_config
    from ulmfit.lm.config import explicit_keys
    from ulmfit.lm.config import resolve_config as lm_config

    # every config is checked before any data is read or any model trained
    lm_overrides = {"epochs": args.ft_epochs}
    lm_cfg = lm_config(args.preset, sets=args.lm_set, overrides=lm_overrides)
    explicit = explicit_keys(None, args.lm_set, lm_overrides)
    clas_cfg = clas_config(args.preset, sets=args.clas_set, overrides={"seed": args.seed})
    tasks = {name: make_task(name, args.data, args.seed, args.quick) for name in args.tasks}

    lm = args.lm or pretrain_quick_lm(args, args.work / "quick-lm")
    rows = []
    for name, corpus in tasks.items():
        print(f"\n=== {name}: " + ", ".join(f"{s} {corpus.splits.count(s):,}" for s in ("train", "valid", "test"))
              + f"; labels {dict(sorted(Counter(corpus.labels).items()))}", flush=True)
        table = args.work / f"{name}.csv"
        write_table(corpus, table)
        corpus = load_corpus(table, text_col="text", label_col="label", valid_pct=0)  # as ulmfit reads it
        tfidf = run_tfidf(corpus, args.seed)
        print(f"{name}: TF-IDF + LR test accuracy {tfidf['accuracy']:.4f} (C {tfidf['c']:g}, {tfidf['seconds']}s)",
              flush=True)
        ulmfit = run_ulmfit(corpus, table, args.work / name, lm, args, lm_cfg, explicit, clas_cfg)
        row = {"task": name, "date": datetime.date.today().isoformat(), "command": command, "preset": args.preset,
               "seed": args.seed, "lm": str(args.lm) if args.lm else f"{lm} (--quick)", "table": str(table),
               "sizes": {s: corpus.splits.count(s) for s in ("train", "valid", "test")},
               "classes": sorted(set(corpus.labels)), "tfidf": tfidf, "ulmfit": ulmfit}
        (args.work / f"{name}.json").write_text(json.dumps(row, indent=1, default=str) + "\n", encoding="utf-8")
        test = ulmfit["test"]
        print(f"{name}: test accuracy: shipped {test['shipped']:.4f} (n-gram weight {test['ngram_weight']:g}), "
              f"neural {test['neural']:.4f}, TF-IDF + LR {tfidf['accuracy']:.4f}; {ulmfit['seconds']}s", flush=True)
        rows.append(row)

    caption = (f"Transfer benchmark, {datetime.date.today().isoformat()}, preset `{args.preset}`, seed {args.seed}"
               + (" (--quick: a smoke test, numbers mean nothing)" if args.quick else "")
               + f": `{command}`")
    print("\n" + markdown_table(rows, caption))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UlmfitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
