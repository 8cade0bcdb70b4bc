#!/usr/bin/env python
"""Generation speed: `ulmfit generate` (prompt fed once, LSTM state carried) vs fastai's `LMLearner.predict`.

    .venv/bin/python scripts/bench_generate.py --src /work/shared/data/imdb_sample.tgz --presets small-lstm paper \
        --words 200 --prompt-words 20

Both sides use the same weights and vocabulary: fastai builds its DataLoaders (tokenizer + vocab) from the
corpus, `language_model_learner(pretrained=False)` makes the model, and the very same state dict and vocab are
written into an ulmfit bundle (ulmfit's rules tokenizer is fastai's). fastai's predict(n_words=N) produces N
tokens and re-runs the whole text through the model for each; ulmfit produces N words (markers such as xxmaj
are extra tokens), one LSTM step each. Words/s = N / wall time; the ratio is reported per preset.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import emit  # noqa: E402


def run(args) -> str:
    import pandas as pd
    import torch
    from fastai.text.data import TextDataLoaders
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM

    from ulmfit.bundle import write_bundle
    from ulmfit.data import load_corpus
    from ulmfit.lm import LanguageModel
    from ulmfit.lm.config import resolve_config
    from ulmfit.lm.model import encoder_state, fastai_config
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab

    corpus = load_corpus(args.src, seed=0)
    train = corpus.select("train").texts[: args.docs]
    prompt = " ".join(corpus.select("valid").texts[0].split()[: args.prompt_words])
    df = pd.DataFrame({"text": train})
    t = time.perf_counter()
    dls = TextDataLoaders.from_df(df, text_col="text", is_lm=True, valid_pct=0.1, bs=16, seq_len=72, seed=0)
    print(f"fastai tokenized {len(train)} docs in {time.perf_counter() - t:.0f}s; vocab {len(dls.vocab)}",
          file=sys.stderr, flush=True)
    lines = [f"Prompt ({args.prompt_words} words): \"{prompt}\"", ""]
    lines += ["| preset | model | vocab | fastai predict: words/s | ulmfit generate: words/s | speed-up |",
              "|---|---|---:|---:|---:|---:|"]
    for preset in args.presets:
        cfg = resolve_config(preset)
        arch = cfg.arch_dict(len(dls.vocab))
        torch.manual_seed(0)
        learn = language_model_learner(dls, AWD_LSTM, config=fastai_config(arch), drop_mult=cfg.drop_mult,
                                       pretrained=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lm"
            tok = TextTokenizer(TokenizerSpec(kind="rules"))
            write_bundle(path, config={"stage": "lm", "arch": arch, "direction": "forward",
                                       "tokenizer": tok.spec.to_dict()},
                         meta={"stage": "lm"}, vocab=Vocab(list(dls.vocab)), tokenizer=tok,
                         weights={"model": learn.model.state_dict(), "encoder": encoder_state(learn.model)})
            lm = LanguageModel.load(path, device="cpu")
            ours = []
            for r in range(args.rounds):
                t = time.perf_counter()
                text = lm.generate(prompt, words=args.words, seed=r)[0]
                ours.append(time.perf_counter() - t)
            n_words = len(text.split()) - len(prompt.split())
        theirs = []
        for r in range(args.fastai_rounds):
            torch.manual_seed(r)
            t = time.perf_counter()
            learn.predict(prompt, n_words=args.words, no_bar=True)
            theirs.append(time.perf_counter() - t)
        o, f = args.words / statistics.median(ours), args.words / statistics.median(theirs)
        print(f"[{preset}] ulmfit {o:.1f} words/s ({n_words} words in the text), fastai {f:.2f} words/s",
              file=sys.stderr, flush=True)
        lines.append(f"| {preset} | {cfg.emb_sz}/{cfg.n_hid}/{cfg.n_layers} | {len(dls.vocab)} | {f:,.2f} | "
                     f"{o:,.1f} | **{o / f:,.0f}x** |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="/work/shared/data/imdb_sample.tgz")
    ap.add_argument("--presets", nargs="+", default=["small-lstm", "paper"],
                    help="AWD-LSTM presets: fastai generates with its AWD_LSTM (default: small-lstm paper)")
    ap.add_argument("--words", type=int, default=200)
    ap.add_argument("--prompt-words", type=int, default=20)
    ap.add_argument("--docs", type=int, default=300, help="documents fastai tokenizes for its vocab")
    ap.add_argument("--rounds", type=int, default=3, help="ulmfit runs (median)")
    ap.add_argument("--fastai-rounds", type=int, default=1, help="fastai runs (median)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--report", type=Path, help="append the markdown report to this file")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = run(args)
    emit("Generation speed", body, script="bench_generate.py", report=args.report, started=started)


if __name__ == "__main__":
    main()
