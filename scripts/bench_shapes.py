"""Task-shape benchmark: GoEmotions (multi-label, 28 emotions) and SST sentence sentiment values (regression, and
SST-5 from the binned value), each against a TF-IDF baseline in the same run, with wall time.

    python scripts/bench_shapes.py --goemotions-lm runs/transfer/goemotions/lm/model-best \\
        --sst-lm runs/transfer/sst/lm/model-best
    python scripts/bench_shapes.py --tasks sst --sst-lm LM --set drop_mult=0.3
    python scripts/bench_shapes.py --quick        # smoke test of this script: a few minutes, numbers mean nothing

The data are read the way a user's files are, from `--data` (default ../shared/data), with no preparation:

- `goemotions`: the folder goemotions/ (train.tsv, dev.tsv, test.tsv without a header row; label ids, several per
  comment, named by emotions.txt). dev is the validation split; test is scored once, at the end.
- `sst`: the folder sst/ (train.csv, dev.csv, test.csv), target column `values` in [0, 1], bins 0.2/0.4/0.6/0.8
  for SST-5.

For each task, in one run:

1. The TF-IDF baseline, fitted on train: a logistic regression per label (C by 3-fold cross-validation) with one
   decision threshold for all labels tuned on dev (the baseline the issue measured, 0.4255 test macro-F1) and,
   as ulmfit decides, one threshold per label tuned on dev; ridge regression (alpha by 5-fold cross-validation)
   for SST, its SST-5 bins cut at points tuned on dev as ulmfit's are. It is `ulmfit.classify.ngram.fit_ngram`,
   the model every bundle carries.
2. ulmfit: `classify` on the language model given (--goemotions-lm / --sst-lm: the IMDb LM fine-tuned on the
   task's text with `ulmfit lm-finetune`, say), then `evaluate --split test`: what `predict` outputs (neural and
   n-gram mixed with the weight chosen on dev) and each part alone. The LMs' training time is read from their
   meta.json (the task LM's and --pretrained-lm's) so the table can state the end-to-end time.

Results go to WORK/<task>.json; the end prints markdown rows for BENCHMARKS.md with the command line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ulmfit.data import Corpus, load_corpus

TASKS = ("goemotions", "sst")
SST_BINS = [0.2, 0.4, 0.6, 0.8]


def lm_seconds(*bundles: Path | None) -> dict[str, float]:
    """Training seconds of each LM bundle: the sum of its epochs' seconds in meta.json."""
    out: dict[str, float] = {}
    for b in bundles:
        if b is not None:
            meta = json.loads((Path(b) / "meta.json").read_text())
            out[str(b)] = round(sum(float(m.get("seconds", 0)) for m in meta.get("metrics", [])), 1)
    return out


def tfidf(task_name: str, corpus: Corpus, shape, seed: int) -> dict:
    """The baseline on train, thresholds (multi-label) tuned on valid, scored on test."""
    from ulmfit.classify.ngram import fit_ngram

    t0 = time.time()
    part = {s: corpus.select(s) for s in ("train", "valid", "test")}
    model = fit_ngram(part["train"].texts, part["train"].labels, shape.labels, seed, shape)
    out = {s: model.predict_proba(part[s].texts) for s in ("valid", "test")}
    y = {s: shape.truth(part[s].labels, s) for s in ("valid", "test")}
    res = {"c": model.c, "cv": model.cv_accuracy, "cv_metric": model.cv_metric, "features": len(model.vocab)}
    if shape.kind == "multi-label":
        grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
        one = max(grid, key=lambda t: shape.report(y["valid"], out["valid"], [t] * len(shape.labels))["macro_f1"])
        per = shape.tune_thresholds(y["valid"], out["valid"])
        res["one_threshold"] = float(one)
        res["test_one_threshold"] = shape.report(y["test"], out["test"], [one] * len(shape.labels))
        res["test"] = shape.report(y["test"], out["test"], per)
    else:  # SST-5: the prediction cut at points tuned on dev, as ulmfit's bundle does
        cuts = shape.tune(y["valid"], out["valid"])
        res["cuts"] = cuts
        res["test"] = shape.report(y["test"], out["test"], cuts)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def run_task(name: str, args, lm: Path | None, log) -> dict:
    from ulmfit.classify.config import resolve_config
    from ulmfit.classify.evaluation import evaluate
    from ulmfit.classify.train import train_classifier

    data = Path(args.data)
    if name == "goemotions":
        corpus = load_corpus(data / "goemotions", seed=args.seed)
        sets = {"task": "multi-label"}
    else:
        corpus = load_corpus(data / "sst", label_col="values", seed=args.seed)
        sets = {"task": "regression", "bins": SST_BINS}
    if args.quick:  # a few hundred rows of each split: the script runs end to end, numbers mean nothing
        keep = [i for i, s in enumerate(corpus.splits) if corpus.splits[:i].count(s) < (400 if s == "train" else 150)]
        corpus = Corpus([corpus.texts[i] for i in keep], [corpus.labels[i] for i in keep],
                        [corpus.splits[i] for i in keep], corpus.name)
    cfg = resolve_config(args.preset, sets=args.set, overrides={**sets, "seed": args.seed,
                                                                "from_scratch": lm is None or None})
    work = Path(args.work) / name
    t0 = time.time()
    result = train_classifier(corpus, lm=lm, out=work / "clas", config=cfg, overwrite=True, log=log)
    train_s = time.time() - t0
    shape = result.task
    log(f"{name}: TF-IDF baseline")
    base = tfidf(name, corpus, shape, args.seed)
    t1 = time.time()
    report = evaluate([result.best], corpus, split="test", out=work / "test-report.json", overwrite=True)
    row = report.models[0]
    return {"task": name, "shape": shape.kind, "date": datetime.date.today().isoformat(), "preset": args.preset,
            "seed": args.seed, "sets": args.set or [], "lm": str(lm) if lm else None,
            "lm_seconds": lm_seconds(lm, args.pretrained_lm) if lm else {},
            "sizes": {s: corpus.splits.count(s) for s in ("train", "valid", "test")},
            "tfidf": base, "classify_seconds": round(train_s, 1), "evaluate_seconds": round(time.time() - t1, 1),
            "valid": result.valid, "ngram_weight": row["ngram_weight"],
            "test": {k: v for k, v in row.items() if k != "parts"}, "test_parts": row.get("parts")}


def table(results: list[dict], command: str) -> str:
    lines = [f"Command: `{command}` ({results[0]['date']}, seed {results[0]['seed']})", ""]
    for r in results:
        lm_min = sum(r["lm_seconds"].values()) / 60
        total = lm_min + (r["classify_seconds"] + r["evaluate_seconds"] + r["tfidf"]["seconds"]) / 60
        parts = r["test_parts"] or {}
        if r["shape"] == "multi-label":
            b = r["tfidf"]
            lines.append(f"| GoEmotions test macro-F1 (28 labels) | TF-IDF one threshold "
                         f"{b['test_one_threshold']['macro_f1']:.4f} / per-label thresholds {b['test']['macro_f1']:.4f}"
                         f" | neural {parts.get('neural', r['test'])['macro_f1']:.4f} | shipped "
                         f"{r['test']['macro_f1']:.4f} (w {r['ngram_weight']:g}), micro-F1 {r['test']['micro_f1']:.4f}"
                         f" | {total:.0f} min end to end ({lm_min:.0f} of them LM) |")
        else:
            b = r["tfidf"]["test"]
            n = parts.get("neural", r["test"])
            lines.append(f"| SST test Pearson r / SST-5 binned accuracy | TF-IDF ridge {b['pearson']:.4f} / "
                         f"{b['binned_accuracy']:.4f} | neural {n['pearson']:.4f} / {n['binned_accuracy']:.4f} | "
                         f"shipped {r['test']['pearson']:.4f} / {r['test']['binned_accuracy']:.4f} "
                         f"(w {r['ngram_weight']:g}) | {total:.0f} min end to end ({lm_min:.0f} of them LM) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--goemotions-lm", type=Path, help="LM bundle for GoEmotions (none: --from-scratch)")
    p.add_argument("--sst-lm", type=Path, help="LM bundle for SST (none: --from-scratch)")
    p.add_argument("--pretrained-lm", type=Path, help="the LM the task LMs were fine-tuned from: its training time "
                   "counts in the end-to-end time")
    p.add_argument("--data", default="../shared/data", help="folder holding goemotions/ and sst/")
    p.add_argument("--work", default="runs/shapes", help="models and JSON results go here")
    p.add_argument("--preset", default="small")
    p.add_argument("--set", action="append", help="classifier config override, as classify --set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few hundred rows, tiny preset: checks the script only")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.work = "tiny", str(Path(args.work) / "quick")
    command = "python scripts/bench_shapes.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    results = []
    for name in args.tasks:
        lm = args.goemotions_lm if name == "goemotions" else args.sst_lm
        res = run_task(name, args, lm, log=lambda m: print(m, file=sys.stderr, flush=True))
        res["command"] = command
        Path(args.work).mkdir(parents=True, exist_ok=True)
        (Path(args.work) / f"{name}.json").write_text(json.dumps(res, indent=1))
        results.append(res)
    print(table(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
