"""Benchmark: ulmfit's tokenizer + token store + loaders against fastai's, on IMDb.

    .venv/bin/python scripts/bench_tokenize.py --tar /work/shared/data/aclImdb_v1.tar.gz [--n 10000]
        [--workers 2] [--rounds 2] [--full] [--sp] [--out docs/bench/tokenize.md]

Sections (each prints a line as it finishes; --out writes them as Markdown):
  rules-10k   rules tokenization + numericalization of --n shuffled IMDb training reviews: ulmfit's
              build_store vs fastai's tokenize_texts (parallel_tokenize) + make_vocab + Numericalize, same
              worker count, interleaved for --rounds rounds (the machine is shared, so the ratio per round is
              what counts); tokens checked identical (vocab, every id, and every token string).
  cached      the same build_store call again (cache hit).
  lm-loader   one epoch of LM batches (bs 64, seq_len 72) from the store vs fastai's LMDataLoader.
  sp          (--sp) sentencepiece unigram training at 15k pieces on the 25k training reviews; encoding docs/s.
  full-100k   (--full) all 100,000 IMDb texts to LM DataLoaders + first batch, each library in its own
              subprocess: wall time and peak RSS (main process; largest worker).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_imdb(tar: str, parts: tuple[str, ...]) -> dict[str, list[str]]:
    """{"train/pos": [...], ...} read straight from the archive (sorted by file name for determinism)."""
    out: dict[str, list[tuple[str, str]]] = {p: [] for p in parts}
    with tarfile.open(tar) as tf:
        for m in tf:
            if not m.isfile() or not m.name.endswith(".txt"):
                continue
            bits = m.name.split("/")  # aclImdb/train/pos/123_4.txt
            if len(bits) == 4 and f"{bits[1]}/{bits[2]}" in out:
                out[f"{bits[1]}/{bits[2]}"].append((bits[3], tf.extractfile(m).read().decode("utf-8")))
    return {p: [t for _, t in sorted(v)] for p, v in out.items()}


def peak_rss_mb() -> tuple[float, float]:
    """(this process' peak RSS, largest waited-for child's peak RSS) in MB."""
    hwm = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# --- one run of each library ----------------------------------------------------------------------------

def fastai_rules(texts: list[str], workers: int):
    from collections import Counter

    from fastai.text.core import SpacyTokenizer, tokenize_texts
    from fastai.text.data import Numericalize, make_vocab

    t0 = time.perf_counter()
    toks = tokenize_texts(texts, n_workers=workers, tok=SpacyTokenizer())
    count = Counter()
    for t in toks:
        count.update(t)
    vocab = make_vocab(count)
    num = Numericalize(vocab=vocab)
    ids = [num(t) for t in toks]
    return time.perf_counter() - t0, toks, vocab, ids


def ours_rules(texts: list[str], workers: int, cache: Path):
    from ulmfit.data.corpus import Corpus
    from ulmfit.store import build_store

    t0 = time.perf_counter()
    corpus = Corpus(texts, [None] * len(texts), ["train"] * len(texts), "imdb-bench")
    store = build_store(corpus, cache_dir=cache, workers=workers)
    return time.perf_counter() - t0, store, corpus


def lm_epoch_ours(store, bs=64, seq_len=72):
    from ulmfit.loaders import lm_dataloaders

    dl = lm_dataloaders(store, train_splits=("train",), valid_split="train", bs=bs, seq_len=seq_len,
                        device="cpu").train
    t0 = time.perf_counter()
    n = sum(1 for _ in dl)
    return n, time.perf_counter() - t0


def lm_epoch_fastai(docs, bs=64, seq_len=72):
    import torch
    from fastai.text.data import LMDataLoader

    tensors = [torch.from_numpy(d.astype("int64")) for d in docs]
    t0 = time.perf_counter()
    dl = LMDataLoader(tensors, bs=bs, seq_len=seq_len, shuffle=True)
    n = sum(1 for _ in dl)
    return n, time.perf_counter() - t0


# --- the full-corpus children ---------------------------------------------------------------------------

def child_full(which: str, tar: str, workers: int) -> None:
    parts = ("train/pos", "train/neg", "train/unsup", "test/pos", "test/neg")
    data = read_imdb(tar, parts)
    t0 = time.perf_counter()
    if which == "ours":
        from ulmfit.data.corpus import Corpus
        from ulmfit.loaders import lm_dataloaders
        from ulmfit.store import build_store

        texts, splits = [], []
        for p in parts:
            texts += data[p]
            splits += [{"train/unsup": "unsup", "test/pos": "test", "test/neg": "test"}.get(p, "train")] * len(data[p])
        del data
        corpus = Corpus(texts, [None] * len(texts), splits, "imdb-full")
        cache = Path(tempfile.mkdtemp(prefix="bench-full-"))
        try:
            store = build_store(corpus, cache_dir=cache, workers=workers)
            del corpus, texts
            gc.collect()
            dls = lm_dataloaders(store, train_splits=("train", "unsup"), valid_split="test", device="cpu")
            x, y = next(iter(dls.train))
            n_tok = sum(store.n_tokens(s) for s in store.splits())
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    else:
        import pandas as pd
        from fastai.data.block import DataBlock
        from fastai.data.transforms import ColReader, ColSplitter
        from fastai.text.data import TextBlock

        rows = [(t, p.startswith("test")) for p in parts for t in data[p]]
        del data
        df = pd.DataFrame(rows, columns=["text", "is_valid"])
        del rows
        block = DataBlock(blocks=TextBlock.from_df("text", is_lm=True, n_workers=workers), get_x=ColReader("text"),
                          splitter=ColSplitter("is_valid"))
        dls = block.dataloaders(df, bs=64, seq_len=72, device="cpu", num_workers=0)
        x, y = next(iter(dls.train))
        n_tok = int(sum(dls.train.lens.coll) + sum(dls.valid.lens.coll))
    wall = time.perf_counter() - t0
    main, kids = peak_rss_mb()
    print(json.dumps({"which": which, "wall_s": wall, "peak_rss_main_mb": main, "peak_rss_worker_mb": kids,
                      "tokens": n_tok, "batch": list(x.shape)}), flush=True)


def run_full(tar: str, workers: int, log) -> dict:
    res = {}
    for which in ("fastai", "ours"):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "--child", which, "--tar", tar, "--workers", str(workers)],
                           capture_output=True, text=True, cwd=ROOT)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode or not line:
            log(f"full-100k {which}: FAILED rc={p.returncode} {p.stderr[-2000:]}")
            continue
        res[which] = json.loads(line[-1])
        res[which]["subprocess_s"] = time.perf_counter() - t0
        log(f"full-100k {which}: {json.dumps(res[which])}")
    return res


# --- main -----------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tar", default="/work/shared/data/aclImdb_v1.tar.gz")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--only-full", action="store_true")
    ap.add_argument("--sp", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", choices=["ours", "fastai"])
    args = ap.parse_args()
    os.environ.setdefault("ULMFIT_PROGRESS", "0")
    if args.child:
        child_full(args.child, args.tar, args.workers)
        return

    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    results: dict = {"n": args.n, "workers": args.workers, "cpus": os.cpu_count(),
                     "date": time.strftime("%Y-%m-%d"), "command": " ".join([Path(sys.executable).name] + sys.argv)}
    if not args.only_full:
        data = read_imdb(args.tar, ("train/pos", "train/neg"))
        train = data["train/pos"] + data["train/neg"]
        sample = random.Random(0).sample(train, args.n)

        # rules-10k, interleaved rounds
        rounds = []
        store = fa = None
        for r in range(args.rounds):
            fa_s, fa_toks, fa_vocab, fa_ids = fastai_rules(sample, args.workers)
            cache = Path(tempfile.mkdtemp(prefix="bench-tok-"))
            ours_s, store, corpus = ours_rules(sample, args.workers, cache)
            rounds.append({"fastai_s": fa_s, "ours_s": ours_s, "speedup": fa_s / ours_s})
            log(f"rules-{args.n} round {r + 1}: fastai {args.n / fa_s:.0f} docs/s ({fa_s:.1f} s), "
                f"ours {args.n / ours_s:.0f} docs/s ({ours_s:.1f} s), speedup x{fa_s / ours_s:.2f}")
            if r < args.rounds - 1:
                shutil.rmtree(cache)
            fa = (fa_toks, fa_vocab, fa_ids)
        results["rules"] = rounds
        fa_toks, fa_vocab, fa_ids = fa
        same_vocab = store.vocab.itos == list(fa_vocab)
        same_ids = all((d.astype("int64") == t.numpy()).all() and len(d) == len(t)
                       for d, t in zip(store.docs("train"), fa_ids))
        t0 = time.perf_counter()
        ours_toks = list(store.tokenizer.tokenize(sample))
        single_s = time.perf_counter() - t0
        same_toks = ours_toks == [list(t) for t in fa_toks]
        results["identical"] = {"vocab": same_vocab, "ids": same_ids, "tokens": same_toks,
                                "n_tokens": int(store.n_tokens("train")), "vocab_size": len(store.vocab)}
        results["ours_single_process_docs_s"] = args.n / single_s
        log(f"identical: vocab {same_vocab}, ids {same_ids}, token strings {same_toks} "
            f"({store.n_tokens('train')} tokens, vocab {len(store.vocab)}); "
            f"ours single process (TextTokenizer.tokenize): {args.n / single_s:.0f} docs/s")
        del ours_toks

        # cached re-run: the same call with the same corpus
        from ulmfit.store import build_store

        t0 = time.perf_counter()
        again = build_store(corpus, cache_dir=cache, workers=args.workers)
        cached_s = time.perf_counter() - t0
        assert again.root == store.root
        results["cached_s"] = cached_s
        results["cached_speedup"] = rounds[-1]["ours_s"] / cached_s
        log(f"cached re-run: {cached_s * 1000:.1f} ms (x{rounds[-1]['ours_s'] / cached_s:.0f} faster than the build)")

        # LM loader
        n_o, s_o = lm_epoch_ours(store)
        n_f, s_f = lm_epoch_fastai(store.docs("train"))
        results["lm_loader"] = {"ours_batches_s": n_o / s_o, "fastai_batches_s": n_f / s_f, "batches": n_o}
        log(f"lm-loader (bs 64, seq_len 72, one shuffled epoch, {n_o} batches): ours {n_o / s_o:.0f} batches/s, "
            f"fastai LMDataLoader {n_f / s_f:.0f} batches/s (x{(n_o / s_o) / (n_f / s_f):.1f})")
        shutil.rmtree(cache, ignore_errors=True)
        del fa, fa_toks, fa_ids, store
        gc.collect()

        if args.sp:
            from ulmfit.data.corpus import Corpus
            from ulmfit.store import build_store
            from ulmfit.tokenize import TokenizerSpec, train_tokenizer

            spec = TokenizerSpec(kind="sentencepiece", sp_vocab_size=15000)
            t0 = time.perf_counter()
            tok = train_tokenizer(spec, train)
            sp_train = time.perf_counter() - t0
            t0 = time.perf_counter()
            n_pieces = sum(len(t) for t in tok.tokenize(sample))
            sp_enc = time.perf_counter() - t0
            cache = Path(tempfile.mkdtemp(prefix="bench-sp-"))
            corpus = Corpus(sample, [None] * len(sample), ["train"] * len(sample), "imdb-bench")
            t0 = time.perf_counter()
            build_store(corpus, tokenizer=tok, cache_dir=cache, workers=args.workers)
            sp_store = time.perf_counter() - t0
            shutil.rmtree(cache, ignore_errors=True)
            results["sp"] = {"train_s": sp_train, "pieces": tok.impl.size, "encode_docs_s": args.n / sp_enc,
                             "store_docs_s": args.n / sp_store, "pieces_per_doc": n_pieces / args.n}
            log(f"sentencepiece unigram {tok.impl.size} pieces trained on {len(train)} reviews in {sp_train:.0f} s; "
                f"encoding {args.n / sp_enc:.0f} docs/s (1 process), store build {args.n / sp_store:.0f} docs/s "
                f"({args.workers} workers); {n_pieces / args.n:.0f} pieces/doc")

    if args.full or args.only_full:
        results["full"] = run_full(args.tar, args.workers, log)

    print(json.dumps(results, indent=1))
    if args.out:
        write_markdown(Path(args.out), results, lines)


def write_markdown(path: Path, r: dict, lines: list[str]) -> None:
    md = [f"## Tokenization benchmark ({r['date']})", "",
          f"Machine: {r['cpus']}-core CPU, no GPU, shared with other jobs (timings are noisy; ulmfit and fastai "
          f"run interleaved in one process, so compare the ratio per round). Workers: {r['workers']} for both.", "",
          f"Command: `{r['command']}`", ""]
    if "rules" in r:
        md += [f"### Rules tokenization + numericalization, {r['n']:,} shuffled IMDb training reviews", "",
               "| round | fastai docs/s | ulmfit docs/s | speedup |", "|---|---|---|---|"]
        for i, x in enumerate(r["rules"]):
            md.append(f"| {i + 1} | {r['n'] / x['fastai_s']:.0f} | {r['n'] / x['ours_s']:.0f} | x{x['speedup']:.2f} |")
        ident = r["identical"]
        md += ["", f"Identical to fastai: vocab {ident['vocab']}, every id {ident['ids']}, every token string "
               f"{ident['tokens']} ({ident['n_tokens']:,} tokens, vocab {ident['vocab_size']:,}). "
               f"ulmfit in a single process (TextTokenizer.tokenize, no store): "
               f"{r['ours_single_process_docs_s']:.0f} docs/s.", "",
               f"Cached re-run of the same build_store call: {r['cached_s'] * 1000:.1f} ms, "
               f"x{r['cached_speedup']:.0f} faster than building.", ""]
        lm = r["lm_loader"]
        md += ["### LM loader", "", f"One shuffled epoch, bs 64, seq_len 72, {lm['batches']} batches: ulmfit "
               f"{lm['ours_batches_s']:.0f} batches/s, fastai LMDataLoader {lm['fastai_batches_s']:.0f} batches/s.", ""]
    if "sp" in r:
        sp = r["sp"]
        md += ["### SentencePiece", "", f"Unigram, {sp['pieces']:,} pieces, trained on the 25,000 IMDb training "
               f"reviews: {sp['train_s']:.0f} s. Encoding (rules + pieces): {sp['encode_docs_s']:.0f} docs/s in one "
               f"process; token store build {sp['store_docs_s']:.0f} docs/s with {r['workers']} workers; "
               f"{sp['pieces_per_doc']:.0f} pieces per review.", ""]
    if r.get("full"):
        md += ["### All 100,000 IMDb texts to LM DataLoaders (first batch), separate subprocesses", "",
               "| | wall s | peak RSS main MB | peak RSS largest worker MB | tokens |", "|---|---|---|---|---|"]
        for which, x in r["full"].items():
            md.append(f"| {which} | {x['wall_s']:.0f} | {x['peak_rss_main_mb']:.0f} | {x['peak_rss_worker_mb']:.0f} "
                      f"| {x['tokens']:,} |")
        md.append("")
    md += ["Raw log:", "", "```", *lines, "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(md))


if __name__ == "__main__":
    main()
