"""The token store: a corpus tokenized and numericalized once, on disk, memory-mapped by every later stage.

Layout of a store directory (written atomically, found again by its cache key):

    meta.json               splits, documents and tokens per split, OOV rate, tokenizer spec, vocab fingerprint
    vocab.json              the Vocab
    tokenizer/              tokenizer.json (+ spm.model)
    <split>.ids.npy         all token ids of the split, one flat array (uint16 if the vocab fits, else int32)
    <split>.offsets.npy     int64, n_docs + 1: document d is ids[offsets[d]:offsets[d+1]]
    <split>.rows.npy        int64, n_docs: the document's row in the split of the source corpus
    <split>.labels.json     one label (or null) per document

How it is built (build_store). Pass 1 tokenizes chunks of documents in worker processes; each worker
numbers the tokens it meets in its own string table and sends back flat id arrays plus the strings it has
not sent before, so no token strings cross processes twice and the parent never holds the corpus' tokens.
The parent maps them to one global table, counts them for the vocab (in corpus order, for fastai's
tie-breaking) and appends the ids to per-chunk files. Pass 2 maps global ids to vocab ids straight into the
final memory-mapped arrays. Memory is bounded by the string table and one chunk, not by the corpus.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import multiprocessing as mp
import sys
import time
from array import array
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ulmfit import distributed
from ulmfit._io import atomic_dir, progress, read_json, versions, write_json
from ulmfit._rundir import clean_stale_staging, file_lock
from ulmfit.errors import UlmfitError
from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab, build_vocab, train_tokenizer
from ulmfit.tokenize.vocab import make_itos

if TYPE_CHECKING:
    from ulmfit.data.corpus import Corpus

STORE_FORMAT = 1
CHUNK_DOCS = 256  # documents per task: small enough to balance workers, large enough to amortise IPC


def default_cache_dir() -> Path:
    """$ULMFIT_CACHE, else ~/.cache/ulmfit/tokens."""
    env = os.environ.get("ULMFIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ulmfit" / "tokens"


class TokenStore:
    """A built store, opened read-only. Arrays are memory-mapped: opening a store reads almost nothing."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise UlmfitError(f"{self.root} is not a token store (no meta.json)", hint="build it with build_store()")
        self.meta: dict = read_json(meta_path)
        if self.meta.get("format") != STORE_FORMAT:
            raise UlmfitError(f"token store {self.root} has format {self.meta.get('format')}, "
                              f"this ulmfit reads format {STORE_FORMAT}", hint="delete it and build it again")
        self.tokenizer = TextTokenizer.load(self.root / "tokenizer")
        self.vocab = Vocab.load(self.root / "vocab.json")
        self._ids: dict[str, np.ndarray] = {}
        self._offsets: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}: {d['n_docs']} docs" for s, d in self.meta["splits"].items())
        return f"TokenStore({self.tokenizer.spec.describe()}, vocab {len(self.vocab)}, {parts})"

    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def _check(self, split: str) -> None:
        if split not in self.meta["splits"]:
            raise UlmfitError(f"the token store has no split {split!r}",
                              hint=f"it has: {', '.join(self.splits()) or 'none'}")

    def ids(self, split: str) -> np.ndarray:
        """All token ids of `split`, flat, memory-mapped (uint16 or int32)."""
        self._check(split)
        if split not in self._ids:
            self._ids[split] = np.load(self.root / f"{split}.ids.npy", mmap_mode="r")
        return self._ids[split]

    def offsets(self, split: str) -> np.ndarray:
        """int64, n_docs + 1."""
        self._check(split)
        if split not in self._offsets:
            self._offsets[split] = np.load(self.root / f"{split}.offsets.npy")
        return self._offsets[split]

    def lengths(self, split: str) -> np.ndarray:
        return np.diff(self.offsets(split))

    def docs(self, split: str) -> list[np.ndarray]:
        """One view into ids() per document (each starts with xxbos)."""
        ids, off = self.ids(split), self.offsets(split)
        return [ids[off[i]:off[i + 1]] for i in range(len(off) - 1)]

    def labels(self, split: str) -> list[str | None]:
        self._check(split)
        return read_json(self.root / f"{split}.labels.json")

    def rows(self, split: str) -> np.ndarray:
        """For each document, its row within `split` of the source corpus (empty documents are skipped)."""
        self._check(split)
        return np.load(self.root / f"{split}.rows.npy")

    def n_docs(self, split: str) -> int:
        self._check(split)
        return int(self.meta["splits"][split]["n_docs"])

    def n_tokens(self, split: str) -> int:
        self._check(split)
        return int(self.meta["splits"][split]["n_tokens"])

    def oov_rate(self, split: str) -> float:
        self._check(split)
        return float(self.meta["splits"][split]["oov_rate"])


# --- building ---------------------------------------------------------------------------------------------

def store_key(fingerprint: str, spec: TokenizerSpec, vocab: Vocab | None, tokenizer: TextTokenizer | None) -> str:
    """The cache key: corpus, tokenizer spec (and model), vocab (when given), library versions."""
    libs = {}
    for pkg in ("spacy", "sentencepiece", "fastai"):  # their versions decide the tokens
        try:
            libs[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            libs[pkg] = None
    blob = json.dumps({"format": STORE_FORMAT, "corpus": fingerprint, "spec": spec.to_dict(),
                       "vocab": vocab.fingerprint if vocab is not None else None,
                       "sp_model": tokenizer.sp_fingerprint if tokenizer is not None else None,
                       "libs": libs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def build_store(corpus: Corpus, *, tokenizer: TextTokenizer | None = None, vocab: Vocab | None = None,
                spec: TokenizerSpec | None = None, cache_dir: Path | None = None,
                workers: int | None = None, show_progress: bool | None = None) -> TokenStore:
    """Tokenize and numericalize `corpus` into a cached TokenStore.

    With `tokenizer` and `vocab` (from an LM bundle) the corpus is numericalized with them. Otherwise the
    tokenizer is made from `spec` (default: rules) — a sentencepiece model is trained on the "train" and
    "unsup" texts — and the vocab is built on the non-test splits (fastai's make_vocab). A second call with
    the same corpus, spec and vocab returns the cached store at once.
    """
    if tokenizer is not None and spec is not None and tokenizer.spec != spec:
        raise UlmfitError(f"the tokenizer given is {tokenizer.spec.describe()} but the spec asks for "
                          f"{spec.describe()}", hint="pass only one of them")
    spec = tokenizer.spec if tokenizer is not None else (spec or TokenizerSpec())
    if vocab is not None and tokenizer is None and spec.kind == "sentencepiece":
        raise UlmfitError("a vocab from a sentencepiece model needs that model as well",
                          hint="pass the bundle's tokenizer together with its vocab")
    if len(corpus) == 0:
        raise UlmfitError(f"the corpus {corpus.name!r} has no documents", hint="check the data source")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = store_key(corpus.fingerprint, spec, vocab, tokenizer)
    # Under torchrun rank 0 builds (or finds) the store while the other ranks wait; they then find it in the
    # cache (or, on a machine that does not share it, build the same store themselves).
    with distributed.main_first("building the token store"):
        return _open_or_build(corpus, tokenizer, vocab, spec, cache_dir, key, workers, show_progress)


def _open_or_build(corpus: Corpus, tokenizer: TextTokenizer | None, vocab: Vocab | None, spec: TokenizerSpec,
                   cache_dir: Path, key: str, workers: int | None, show_progress: bool | None) -> TokenStore:
    root = cache_dir / key
    if not distributed.is_main() and (root / "meta.json").exists():
        # the other ranks of a torchrun job read the store rank 0 has just finished: no lock file of theirs in the
        # cache (a store is complete once meta.json is there: atomic_dir)
        with contextlib.suppress(UlmfitError):
            return TokenStore(root)
    (cache_dir / LOCKS).mkdir(parents=True, exist_ok=True)
    # One builder per key: a second process with the same corpus waits, then reads the finished store.
    with file_lock(cache_dir / LOCKS / f"{key}.lock", wait=True, what=f"the token store {key}", log=_log):
        if (root / "meta.json").exists():
            try:
                return TokenStore(root)
            except UlmfitError:
                pass  # an old or damaged entry: build it again in its place
        clean_stale_staging(cache_dir, _log)  # a build killed with -9 left its staging folder behind
        if tokenizer is None:
            train_texts = [t for t, s in zip(corpus.texts, corpus.splits) if s in ("train", "unsup")]
            if spec.kind == "sentencepiece" and not train_texts:
                raise UlmfitError("no training texts to train the sentencepiece model on",
                                  hint="the corpus needs a 'train' (or 'unsup') split")
            tokenizer = train_tokenizer(spec, train_texts)
        with atomic_dir(root) as tmp:
            _build(corpus, tokenizer, vocab, tmp, workers, show_progress)
    return TokenStore(root)


LOCKS = ".locks"  # one empty lock file per store key, inside the cache folder


def _log(line: str) -> None:
    print(line, file=sys.stderr)


# Worker side: one engine per process, numbering tokens in its own string table.
_worker: dict = {}


def _worker_init(state: dict | None) -> None:
    """Forked workers inherit the parent's engine (spaCy, fastai already imported); spawned ones build it."""
    if state is not None or "engine" not in _worker:
        tok = TextTokenizer.__new__(TextTokenizer)
        tok.__setstate__(state)
        _worker["engine"] = tok.impl
    _worker["sent"] = 0


def _worker_run(task: tuple[int, list[str]]) -> tuple:
    idx, texts = task
    engine = _worker["engine"]
    flat_arr, lens = array("I"), array("q")
    for ids in engine.ids(texts):
        flat_arr.extend(ids)
        lens.append(len(ids))
    lengths = np.frombuffer(lens, dtype=np.int64) if lens else np.zeros(0, np.int64)
    flat = np.frombuffer(flat_arr, dtype=np.uint32) if flat_arr else np.zeros(0, np.uint32)
    strings = engine.strings
    new = strings[_worker["sent"]:]
    _worker["sent"] = len(strings)
    return idx, os.getpid(), new, lengths, flat


def _tasks(texts: list[str], chunk: int) -> Iterator[tuple[int, list[str]]]:
    for k, start in enumerate(range(0, len(texts), chunk)):
        yield k, texts[start:start + chunk]


def _build(corpus: Corpus, tokenizer: TextTokenizer, vocab: Vocab | None, out: Path,
           workers: int | None, show_progress: bool | None) -> None:
    t_start = time.perf_counter()
    # Documents grouped by split (corpus order within a split); empty texts skipped with a count.
    # "test" last, so the documents the vocab is counted on (all but test) come first.
    present = set(corpus.splits)
    order = [s for s in ("train", "valid", "unsup") if s in present]
    order += sorted(present - {"train", "valid", "unsup", "test"}) + (["test"] if "test" in present else [])
    plan = []  # (split, texts, labels, rows, n_empty)
    for split in order:
        rows_all = [i for i, s in enumerate(corpus.splits) if s == split]
        keep = [j for j, i in enumerate(rows_all) if corpus.texts[i].strip()]
        plan.append((split, [corpus.texts[rows_all[j]] for j in keep], [corpus.labels[rows_all[j]] for j in keep],
                     np.asarray(keep, dtype=np.int64), len(rows_all) - len(keep)))
    texts = [t for p in plan for t in p[1]]
    bounds = np.cumsum([0] + [len(p[1]) for p in plan])  # document range of each split in `texts`
    n_docs = len(texts)
    counted_docs = sum(len(p[1]) for p in plan if p[0] != "test")  # the vocab is built on non-test splits

    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    chunk = max(16, min(CHUNK_DOCS, -(-n_docs // (workers * 4))))
    tmp_chunks = out / "_chunks"
    tmp_chunks.mkdir()

    # Pass 1: tokenize; map worker ids to a global table; count; spill ids per chunk.
    table: dict[str, int] = {}
    strings: list[str] = []
    remap: dict[int, np.ndarray] = {}
    counts = np.zeros(1 << 16, dtype=np.int64)
    first_seen = np.full(1 << 16, -1, dtype=np.int64)
    seen_tokens = 0
    doc_lengths = np.zeros(n_docs, dtype=np.int64)

    # Load spaCy/fastai/sentencepiece once, here; forked workers share it.
    _worker["engine"] = tokenizer.impl
    t_ready = time.perf_counter()

    def results() -> Iterator[tuple]:
        if workers == 1 or n_docs <= chunk:
            _worker_init(None)
            yield from map(_worker_run, _tasks(texts, chunk))
            return
        pool = None
        if "fork" in mp.get_all_start_methods():
            try:
                pool = mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=(None,))
            except OSError:
                # ENOMEM: after an hour of training in this process, glibc's heap spans tens of GB of address
                # space (malloc_trim gives the pages back, not the addresses), and the kernel's overcommit check
                # refuses to fork it. Spawned workers start from a fresh interpreter and load the tokenizer again.
                pass
        if pool is None:
            pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init,
                                                initargs=(tokenizer.__getstate__(),))
        with pool:
            yield from pool.imap(_worker_run, _tasks(texts, chunk))

    bar = progress(range(n_docs), total=n_docs, desc="tokenizing", unit="doc",
                   disable=None if show_progress is None else not show_progress)
    for idx, pid, new, lengths, flat in results():
        local = remap.get(pid)
        if new:
            for s in new:
                g = table.get(s)
                if g is None:
                    g = table[s] = len(strings)
                    strings.append(s)
            add = np.fromiter((table[s] for s in new), dtype=np.int64, count=len(new))
            local = add if local is None else np.concatenate([local, add])
            remap[pid] = local
            if len(strings) > len(counts):
                grow = max(len(strings), 2 * len(counts))
                counts = np.concatenate([counts, np.zeros(grow - len(counts), dtype=np.int64)])
                first_seen = np.concatenate([first_seen, np.full(grow - len(first_seen), -1, dtype=np.int64)])
        gids = local[flat] if len(flat) else np.zeros(0, dtype=np.int64)
        d0 = idx * chunk
        doc_lengths[d0:d0 + len(lengths)] = lengths
        if vocab is None and tokenizer.spec.kind == "rules" and d0 < counted_docs:
            counted = gids[: int(lengths[: max(0, counted_docs - d0)].sum())]
            counts[: len(strings)] += np.bincount(counted, minlength=len(strings))
            u, first = np.unique(counted, return_index=True)
            fresh = first_seen[u] < 0
            first_seen[u[fresh]] = seen_tokens + first[fresh]
            seen_tokens += len(counted)
        gids.astype(np.uint32).tofile(tmp_chunks / f"{idx}.bin")
        for _ in range(len(lengths)):
            next(bar, None)
    for _ in bar:  # close the bar
        pass

    t_pass1 = time.perf_counter()
    # The vocab: fastai's make_vocab over counts in first-occurrence order.
    if vocab is None:
        if tokenizer.spec.kind == "sentencepiece":
            vocab = build_vocab(tokenizer)
        else:
            used = np.flatnonzero(counts[: len(strings)] > 0)
            used = used[np.argsort(first_seen[used], kind="stable")]
            vocab = Vocab(make_itos(((strings[g], int(counts[g])) for g in used),
                                    max_vocab=tokenizer.spec.max_vocab, min_freq=tokenizer.spec.min_freq))
    stoi, unk = vocab.stoi, vocab.unk_id
    to_vocab = np.fromiter((stoi.get(s, unk) for s in strings), dtype=np.int64, count=len(strings))
    dtype = vocab.dtype

    # Pass 2: per split, global ids -> vocab ids, straight into the final memory-mapped array.
    splits_meta = {}
    n_chunks = -(-n_docs // chunk)
    for k, (split, _texts, labels, rows, n_empty) in enumerate(plan):
        d_lo, d_hi = int(bounds[k]), int(bounds[k + 1])
        lens = doc_lengths[d_lo:d_hi]
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        n_tok = int(offsets[-1])
        ids = np.lib.format.open_memmap(out / f"{split}.ids.npy", mode="w+", dtype=dtype, shape=(n_tok,))
        pos, n_unk = 0, 0
        for c in range(d_lo // chunk, min(n_chunks, -(-d_hi // chunk))):
            g = np.fromfile(tmp_chunks / f"{c}.bin", dtype=np.uint32)
            c_lo = c * chunk
            # Token range of this split's documents inside the chunk (a chunk may straddle two splits).
            lo_doc, hi_doc = max(d_lo, c_lo), min(d_hi, c_lo + chunk)
            t_lo = int(doc_lengths[c_lo:lo_doc].sum())
            t_hi = t_lo + int(doc_lengths[lo_doc:hi_doc].sum())
            v = to_vocab[g[t_lo:t_hi]]
            n_unk += int(np.count_nonzero(v == unk))
            ids[pos:pos + len(v)] = v
            pos += len(v)
        assert pos == n_tok, (pos, n_tok)
        ids.flush()
        del ids
        np.save(out / f"{split}.offsets.npy", offsets)
        np.save(out / f"{split}.rows.npy", rows)
        write_json(out / f"{split}.labels.json", labels)
        splits_meta[split] = {"n_docs": len(lens), "n_tokens": n_tok, "skipped_empty": n_empty,
                              "oov_rate": round(n_unk / n_tok, 6) if n_tok else 0.0}
    shutil.rmtree(tmp_chunks)
    t_pass2 = time.perf_counter()

    tokenizer.save(out / "tokenizer")
    vocab.save(out / "vocab.json")
    write_json(out / "meta.json", {
        "format": STORE_FORMAT, "corpus": {"name": corpus.name, "fingerprint": corpus.fingerprint},
        "tokenizer": tokenizer.spec.to_dict(), "vocab": {"size": len(vocab), "fingerprint": vocab.fingerprint},
        "dtype": np.dtype(dtype).name, "splits": splits_meta, "versions": versions(),
        # Pass 2 (vocab + remap + write) is what re-tokenizing would have replaced: compare it with pass 1.
        "build": {"workers": workers, "docs_per_s": round(n_docs / max(t_pass2 - t_ready, 1e-9), 1),
                  "load_tokenizer_s": round(t_ready - t_start, 3), "tokenize_s": round(t_pass1 - t_ready, 3),
                  "vocab_and_write_s": round(t_pass2 - t_pass1, 3),
                  "distinct_tokens": len(strings)},
    })
