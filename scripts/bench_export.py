"""Benchmark: a classifier exported to ONNX (`ulmfit export`) against the same bundle in torch, on IMDb test reviews.

    python scripts/bench_export.py --model runs/transfer/sst/clas/model-best --n 500
    python scripts/bench_export.py --model MODEL --n 200 --rounds 3 --json runs/bench-export.json

Exports MODEL into a temporary folder (the export's own parity check runs), then times, on the same seeded sample
of IMDb test reviews (ULMFIT_MIRROR may point at a folder with aclImdb_v1.tar.gz), each side's
`predict_proba(texts)` from raw text (tokenization included) and its two parts: tokenizing + numericalizing, and
the network (`predict_ids` for torch). Best of --rounds. Reports
the largest probability difference between the two. Both run on one CPU thread (ULMFIT_THREADS=1, ONNX Runtime's
intra-op threads too) unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def best_of(rounds: int, f) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a classifier bundle (or run folder)")
    p.add_argument("--n", type=int, default=500, help="IMDb test reviews")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    os.environ["ULMFIT_THREADS"] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_predict import load_reviews

    from ulmfit.classify.classifier import Classifier
    from ulmfit.classify.model import predict_ids
    from ulmfit.export import export_classifier
    from ulmfit.onnx_runtime import OnnxClassifier

    texts, _ = load_reviews("imdb", "test", args.n, args.seed)
    clf = Classifier.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        export_classifier(args.model, Path(tmp) / "export")
        export_s = time.perf_counter() - t0
        onnx = OnnxClassifier.load(Path(tmp) / "export")
        res = {"model": str(args.model), "n": len(texts), "threads": args.threads, "export_seconds": round(export_s, 1)}
        for name, m in (("torch", clf), ("onnx", onnx)):
            total, probs = best_of(args.rounds, lambda m=m: m.predict_proba(texts))
            tok, docs = best_of(args.rounds, lambda m=m: m.numericalize(texts))
            res[name] = {"total_s": round(total, 3), "tokenize_s": round(tok, 3), "texts_per_s": round(len(texts) / total, 1)}
            res[name + "_probs"] = probs
        net, _ = best_of(args.rounds, lambda: predict_ids(
            clf.model, clf.numericalize(texts), bs=max(clf.config.bs, 64), pad_idx=clf.vocab.pad_id,
            seq_len=clf.config.seq_len, backwards=clf.backwards, bos_idx=clf.vocab.bos_id))
        res["torch"]["network_s"] = round(net - res["torch"]["tokenize_s"], 3)
        res["max_abs_diff"] = float(abs(res.pop("torch_probs") - res.pop("onnx_probs")).max())
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
