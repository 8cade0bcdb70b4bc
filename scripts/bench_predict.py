"""Benchmark: classify IMDb test reviews with ulmfit vs fastai, using the same trained model.

    .venv/bin/python scripts/bench_predict.py --model models/quickstart/classifier --n 5000
    .venv/bin/python scripts/bench_predict.py --model models/quickstart/classifier --n 200 --long 40000

Measures, on the same weights, tokenizer and vocab:
  throughput  reviews/s of `Classifier.predict_proba(texts)` vs fastai `learn.get_preds(dl=learn.dls.test_dl(texts))`
              (both from raw text: tokenization included), and their accuracy on those reviews;
  latency     one review at a time: `Classifier.predict([text])` vs fastai `learn.predict(text)` (median);
  int8        optionally (--int8) ulmfit with torch dynamic int8 quantization of the LSTMs and Linear layers:
              throughput, latency and the accuracy change.
  long        with --long CHARS, only this: the time of one document of CHARS characters and of one ten times
              as long (the reviews joined into one line), and their ratio, which should be about 10 (time per
              document is linear in its length). E.g. --long 40000.
Prints a JSON summary (and writes it to --json). The reviews are a seeded, label-balanced sample of the IMDb
test split (the `imdb` dataset of ulmfit.data; ULMFIT_MIRROR may point at a folder with aclImdb_v1.tar.gz).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def load_reviews(src: str, split: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    from ulmfit.data import load_corpus, subsample

    corpus = load_corpus(src, valid_pct=0, seed=seed).select(split)
    corpus = subsample(corpus, split, n, seed=seed, stratified=True)
    return corpus.texts, [str(y) for y in corpus.labels]


def map_labels(labels: list[str], names: list[str], spec: str | None) -> list[str]:
    """Data labels in the model's names: `spec` "neg=negative,pos=positive", else a unique prefix match
    (aclImdb's neg/pos vs imdb-sample's negative/positive)."""
    if spec:
        mapping = dict(kv.split("=", 1) for kv in spec.split(","))
    else:
        mapping = {}
        for y in sorted(set(labels)):
            hits = [n for n in names if n == y] or [n for n in names if n.startswith(y) or y.startswith(n)]
            if len(hits) != 1:
                sys.exit(f"cannot map data label {y!r} to one of the model's labels {names}; pass --label-map")
            mapping[y] = hits[0]
    return [mapping[y] for y in labels]


def fastai_learner(clf, texts: list[str], labels: list[str]):
    """A fastai Learner that holds exactly the ulmfit model's weights, vocab and label order."""
    import pandas as pd
    from fastai.text.all import AWD_LSTM, TextDataLoaders, text_classifier_learner

    from ulmfit.classify.model import encoder_config

    # A few labelled rows only to give fastai its DataLoaders (vocab and labels come from the ulmfit model).
    df = pd.DataFrame({"text": texts[:64], "label": labels[:64], "is_valid": [i % 2 == 0 for i in range(64)]})
    dls = TextDataLoaders.from_df(df, text_col="text", label_col="label", valid_col="is_valid",
                                  text_vocab=list(clf.vocab.itos), seq_len=clf.config.seq_len, bs=64)
    if list(dls.vocab[1]) != clf.labels:
        sys.exit(f"label order differs: fastai {list(dls.vocab[1])} vs ulmfit {clf.labels}")
    cfg = encoder_config(clf.arch, clf.vocab.pad_id)
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=clf.config.seq_len, config=cfg, pretrained=False,
                                    drop_mult=clf.config.drop_mult, lin_ftrs=list(clf.config.lin_ftrs),
                                    ps=list(clf.config.head_ps), max_len=clf.config.max_len)
    from ulmfit.bundle import read_bundle
    from ulmfit.classify.model import load_state

    load_state(learn.model, read_bundle(clf.path, stage="classifier").load_state("model"))
    learn.model.eval()
    return learn


def accuracy(probs, labels: list[str], names: list[str]) -> float:
    import numpy as np

    pred = np.asarray(probs).argmax(1)
    return float(np.mean([names[p] == y for p, y in zip(pred, labels)]))


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def long_documents(clf, texts: list[str], chars: int, repeats: int) -> dict:
    """Seconds (best of `repeats`) for one document of `chars` characters and one of 10 x `chars`, and the ratio."""
    joined = " ".join(t.replace("\n", " ") for t in texts)
    joined = joined * (10 * chars // max(len(joined), 1) + 1)
    clf.predict_proba([joined[:chars]], max_chars=0)  # warm-up: tokenizer caches, kernels
    res: dict = {"chars": [chars, 10 * chars], "seconds": []}
    for n in res["chars"]:
        res["seconds"].append(min(timed(clf.predict_proba, [joined[:n]], max_chars=0)[1] for _ in range(repeats)))
        print(f"{n:,} characters: {res['seconds'][-1]:.2f} s", file=sys.stderr, flush=True)
    res["ratio"] = res["seconds"][1] / res["seconds"][0]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="classifier bundle or run dir")
    ap.add_argument("--n", type=int, default=5000, help="IMDb test reviews to classify")
    ap.add_argument("--src", default="imdb", help="labelled source (a registered dataset or a path)")
    ap.add_argument("--split", default="test", help="split of --src to sample the reviews from")
    ap.add_argument("--latency-n", type=int, default=30, help="single reviews timed for latency")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bs", type=int, default=64, help="ulmfit inference batch size")
    ap.add_argument("--block", type=int, default=500, help="reviews per interleaved block")
    ap.add_argument("--int8", action="store_true", help="also measure the int8 dynamic-quantized path")
    ap.add_argument("--skip-fastai", action="store_true", help="only time ulmfit")
    ap.add_argument("--label-map", help="data label -> model label, e.g. neg=negative,pos=positive "
                    "(default: unique prefix match)")
    ap.add_argument("--long", type=int, metavar="CHARS", help="only time one document of CHARS characters and one "
                    "of 10 x CHARS (the time-vs-length ratio)")
    ap.add_argument("--repeats", type=int, default=3, help="--long: runs per length (the best is kept)")
    ap.add_argument("--json", type=Path, help="write the summary here too")
    args = ap.parse_args()

    import torch

    from ulmfit.classify import Classifier

    texts, labels = load_reviews(args.src, args.split, args.n, args.seed)
    lat_texts = texts[: args.latency_n]
    clf = Classifier.load(args.model, device="cpu")  # applies ULMFIT_THREADS (to fastai as well: same process)
    res: dict = {"n": len(texts), "source": f"{args.src}/{args.split}", "model": str(args.model),
                 "threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()[0],
                 "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__}
    if args.long:
        res["long"] = long_documents(clf, texts, args.long, args.repeats)
        print(json.dumps(res, indent=2))
        if args.json:
            args.json.write_text(json.dumps(res, indent=2) + "\n")
        return
    labels = map_labels(labels, clf.labels, args.label_map)
    clf.predict(texts[:8])  # warm-up: spaCy and torch kernels
    runners = {"ulmfit": lambda ts: clf.predict_proba(ts, bs=args.bs)}
    singles = {"ulmfit": lambda t: clf.predict([t])}
    if args.int8:
        q = Classifier.load(args.model, device="cpu", quantize=True)
        q.predict(texts[:8])
        runners["ulmfit_int8"] = lambda ts: q.predict_proba(ts, bs=args.bs)
        singles["ulmfit_int8"] = lambda t: q.predict([t])
    if not args.skip_fastai:
        learn = fastai_learner(clf, texts, labels)
        learn.predict(texts[0])  # warm-up

        def fastai_batch(ts):
            with learn.no_bar():
                return learn.get_preds(dl=learn.dls.test_dl(ts))[0].numpy()

        def fastai_one(t):
            with learn.no_bar():
                return learn.predict(t)

        runners["fastai"], singles["fastai"] = fastai_batch, fastai_one

    # Interleaved: block k of the reviews goes through every implementation before block k+1, and single
    # reviews alternate too, so that a shared machine's changing load hits all of them alike.
    blocks = [texts[i:i + args.block] for i in range(0, len(texts), args.block)]
    secs = {k: 0.0 for k in runners}
    probs: dict[str, list] = {k: [] for k in runners}
    for i, block in enumerate(blocks):
        for name, run in runners.items():
            p, dt = timed(run, block)
            secs[name] += dt
            probs[name].append(p)
        print(f"block {i + 1}/{len(blocks)}: " + ", ".join(f"{k} {len(texts[:(i + 1) * args.block]) / v:.1f}/s"
                                                         for k, v in secs.items()), file=sys.stderr, flush=True)
    lat: dict[str, list[float]] = {k: [] for k in singles}
    for t in lat_texts:
        for name, one in singles.items():
            lat[name].append(timed(one, t)[1])
    import numpy as np

    for name in runners:
        res[name] = {"seconds": secs[name], "reviews_per_s": len(texts) / secs[name],
                     "accuracy": accuracy(np.concatenate(probs[name]), labels, clf.labels),
                     "latency_ms_median": 1000 * statistics.median(lat[name])}
    if "ulmfit_int8" in res:
        res["ulmfit_int8"]["accuracy_drop_points"] = 100 * (res["ulmfit"]["accuracy"] - res["ulmfit_int8"]["accuracy"])
    if "fastai" in res:
        for name in [k for k in res if k.startswith("ulmfit") and isinstance(res[k], dict) and "seconds" in res[k]]:
            suffix = name[len("ulmfit"):]
            res[f"speedup_throughput{suffix}"] = res[name]["reviews_per_s"] / res["fastai"]["reviews_per_s"]
            res[f"speedup_latency{suffix}"] = res["fastai"]["latency_ms_median"] / res[name]["latency_ms_median"]
    res["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
