"""LM quality per CPU minute on IMDb: the same held-out reviews, scored in bits per character.

    ULMFIT_MIRROR=../shared/data python scripts/bench_lm_quality.py --docs 4000 \
        --variant sp8k-dm0.5 tokenizer=sentencepiece sp_vocab_size=8000 emb_sz=200 n_hid=512 \
        --variant sp8k-dm0.2 tokenizer=sentencepiece sp_vocab_size=8000 emb_sz=200 n_hid=512 drop_mult=0.2

Each variant is the `--preset` (default `small`) plus its key=value overrides, pretrained for its epochs on the
same `--docs` train + unsup reviews (bench_imdb's LM corpus and split, seeded), and validated on the same
1,500 held-out reviews. Perplexity depends on the tokenizer (a word and a subword are different units), so the
table also reports bits per character: the validation loss (nats per token) x tokens / characters / ln 2, which
compares a 16k-word model with an 8k-piece one. Appends one JSON line per variant to `--out`.

A variant's `train_docs=N` trains on N of the `--docs` training reviews (validation unchanged), so that epochs
can be traded against coverage at the same compute: `--variant once epochs=1 --variant twice-half epochs=2
train_docs=1500` with `--docs 3000`.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_imdb import lm_corpus  # noqa: E402  (one definition of the LM corpus for both studies)


def bits_per_char(bundle: Path, texts: list[str], valid_loss: float) -> tuple[float, float]:
    """(bits per character, tokens per character) of `texts` under the bundle's tokenizer."""
    from ulmfit.tokenize.tokenizer import TextTokenizer

    tok = TextTokenizer.load(bundle / "tokenizer")
    n_tokens = sum(len(t) for t in tok.tokenize(texts))
    n_chars = sum(len(t) for t in texts)
    return valid_loss * n_tokens / n_chars / math.log(2), n_tokens / n_chars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]",
                   help="a name, then LM config overrides (repeatable)")
    p.add_argument("--preset", default="small-lstm", help="LM preset every variant starts from (default small-lstm, "
                   "the AWD-LSTM the recorded rows used)")
    p.add_argument("--docs", type=int, default=4000, help="train + unsup reviews each variant trains on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("runs/bench_lm_quality"), help="where models are written")
    p.add_argument("--out", type=Path, default=Path("runs/bench_lm_quality.jsonl"), help="JSON-lines results")
    args = p.parse_args(argv)
    command = "python scripts/bench_lm_quality.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    from ulmfit.data import load_corpus
    from ulmfit.lm import pretrain, resolve_config

    from ulmfit.lm.train import read_corpus

    imdb = load_corpus("imdb", valid_pct=0)
    # pretrain()'s own reader and cap, once: every variant trains and validates on exactly these documents, and
    # the characters counted for bits/char are those of the validation documents it scored (capped too when
    # --docs is below the 1,500 held out)
    corpus = read_corpus(lm_corpus(imdb.select(["train", "unsup"]), args.seed), None, None, args.docs, args.seed,
                          print)
    valid = [t for t, s in zip(corpus.texts, corpus.splits) if s == "valid"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, *sets in args.variant:
        train_docs = [int(s.split("=", 1)[1]) for s in sets if s.startswith("train_docs=")]
        cfg = resolve_config(args.preset, sets=[s for s in sets if not s.startswith("train_docs=")])
        docs = corpus
        if train_docs:  # fewer training reviews, the same validation reviews
            from ulmfit.data import subsample

            docs = subsample(corpus, "train", train_docs[-1], seed=args.seed, stratified=False)
        t = time.perf_counter()
        res = pretrain(docs, args.work / name, cfg, seed=args.seed, preset=args.preset)
        wall = time.perf_counter() - t
        best = next(m for m in res.metrics if m["epoch"] == res.best_epoch)  # the epoch model-best holds
        bpc, tpc = bits_per_char(res.best, valid, best["valid_loss"])
        row = {"variant": name, "sets": sets, "docs": args.docs, "seed": args.seed, "wall_s": round(wall, 1),
               "train_s": round(sum(m["seconds"] for m in res.metrics), 1),
               "tokens_per_s": best.get("train_tokens_per_s"), "perplexity": best["perplexity"],
               "accuracy": best["accuracy"], "bits_per_char": round(bpc, 4), "tokens_per_char": round(tpc, 4),
               "command": command}
        print(json.dumps(row), flush=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
