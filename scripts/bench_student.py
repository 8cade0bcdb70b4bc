r"""Self-training's student on its own: pseudo-labels from a classifier already trained, a student with a changed
classifier config, test accuracy on bench_imdb.py's 5k IMDb test sample. One student costs ~10 minutes on 2 cores,
against ~13 for `bench_imdb.py --self-train` (which trains the teacher again first).

    # the student's settings (here: label smoothing), the teacher of a bench_imdb.py --self-train run
    python scripts/bench_student.py --teacher runs/self1000_10k/ulmfit-1000-s0/clas-self/teacher/model-best \
        --lm runs/bench_imdb_bf16_all/ulmfit-1000-s0/lm/model-best --set label_smoothing=0.1 --out runs/student_ls
    # a second round: that run's student labels the pool for a new student
    python scripts/bench_student.py --teacher runs/self1000_10k/ulmfit-1000-s0/clas-self/model-best ...
    # three teachers' probabilities averaged: two more are trained here on the same labels (eleventh pass)
    python scripts/bench_student.py --teacher .../clas-self/teacher/model-best --extra-teachers 2 ...

The pool, its draw and the kept fraction are `ulmfit classify --self-train`'s (same seed: the same texts), so with
the run's own teacher and config this reproduces its student. One JSON line per run goes to --jsonl.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_imdb import imdb_splits, labeled_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="classifier bundle that labels the pool")
    p.add_argument("--lm", type=Path, required=True, help="LM bundle the student starts from")
    p.add_argument("--out", type=Path, required=True, help="where the student is written")
    p.add_argument("--labels", type=int, default=1000, help="labeled training reviews (as bench_imdb.py)")
    p.add_argument("--seed", type=int, default=0, help="as bench_imdb.py --seed (classifier seed 42 + SEED)")
    p.add_argument("--pool", type=int, default=10000, help="unlabeled reviews the teacher labels (--self-train)")
    p.add_argument("--keep", type=float, default=0.5, help="fraction kept (--self-train-keep)")
    p.add_argument("--epochs", type=int, default=None, help="student epochs (as ulmfit classify --epochs)")
    p.add_argument("--extra-teachers", type=int, default=0, metavar="K",
                   help="train K more teachers on the same labels (small's config, seeds 42+SEED+1000k) and "
                        "average all teachers' probabilities before the confident half is kept")
    p.add_argument("--set", dest="sets", action="append", default=[], help="student config key=value (repeatable)")
    p.add_argument("--jsonl", type=Path, default=Path("runs/bench_student.jsonl"), help="results file")
    args = p.parse_args(argv)

    from ulmfit.classify import Classifier, evaluate
    from ulmfit.classify.config import resolve_config
    from ulmfit.classify.self_train import draw_texts, select_confident, student_corpus, unlabeled_pool
    from ulmfit.classify.train import train_classifier

    t0 = time.perf_counter()
    train, test, lm_texts = imdb_splits(5000, args.labels, args.seed)
    data = labeled_corpus(train, test, args.seed)
    cfg = resolve_config("small", sets=args.sets, epochs=args.epochs, overrides={"seed": 42 + args.seed})
    pool = unlabeled_pool(data, lm_texts.select("unsup"), text_col=None)
    texts = draw_texts(pool, args.pool, cfg.seed)  # self_train's draw: the same texts for the same seed
    teacher = Classifier.load(args.teacher)
    probs = teacher.predict_proba(texts, progress=True)
    extra = []
    for k in range(1, args.extra_teachers + 1):  # the same labelled data, another classifier seed
        tcfg = resolve_config("small", overrides={"seed": 42 + args.seed + 1000 * k})
        t = train_classifier(data, lm=args.lm, out=args.out.with_name(f"{args.out.name}-teacher{k}"), config=tcfg)
        extra.append(evaluate([t.best], data, split="test").headline["accuracy"])
        probs = probs + Classifier.load(t.best).predict_proba(texts, progress=True)
    probs = probs / (1 + args.extra_teachers)
    keep = select_confident(probs, args.keep)
    pseudo = [teacher.labels[k] for k in probs[keep].argmax(1)]
    student_data = student_corpus(data, [texts[i] for i in keep], pseudo)
    res = train_classifier(student_data, lm=args.lm, out=args.out, config=cfg)
    row = {"teacher": str(args.teacher), "lm": str(args.lm), "labels": args.labels, "seed": args.seed,
           "pool": len(texts), "kept": len(keep), "min_conf": round(float(probs[keep].max(1).min()), 4),
           "epochs": cfg.total_epochs(), "sets": args.sets, "extra_teachers": args.extra_teachers,
           "extra_teacher_accuracy": extra,
           "accuracy": evaluate([res.best], data, split="test").headline["accuracy"],
           "wall_s": round(time.perf_counter() - t0, 1),
           "command": "python scripts/bench_student.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    print(json.dumps(row))
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(args.jsonl, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
