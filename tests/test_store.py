"""Token store: round trip, fastai-equal vocab and ids, cache hits, parallel == serial, atomic writes."""

from __future__ import annotations

import os

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ulmfit.data.corpus import Corpus
from ulmfit.errors import UlmfitError
from ulmfit.store import TokenStore, build_store, default_cache_dir
from ulmfit.tokenize import TokenizerSpec, Vocab, make_itos, train_tokenizer

WORDS = ("movie film story actor plot scene great bad awful fine good boring fun music ending director "
         "character camera dialogue script the a and of to is was it this that but with for not very "
         "really quite too just so").split()


def make_corpus(n_train: int = 60, n_valid: int = 20, n_test: int = 20, n_unsup: int = 0, seed: int = 0,
                min_words: int = 5, max_words: int = 60) -> Corpus:
    """A deterministic labelled corpus with capitals, punctuation and repeats (no real data needed)."""
    rng = random.Random(seed)
    texts, labels, splits = [], [], []
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test), ("unsup", n_unsup)):
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
            words = [w.capitalize() if rng.random() < 0.1 else w.upper() if rng.random() < 0.03 else w
                     for w in words]
            text = " ".join(words) + rng.choice([".", "!!!", "?", "...", " :)"])
            if rng.random() < 0.2:
                text += f" <br /><br />{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}, it's ok."
            texts.append(text)
            labels.append(None if split == "unsup" else ("pos" if i % 2 else "neg"))
            splits.append(split)
    return Corpus(texts, labels, splits, name="synthetic")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    c = make_corpus()
    c.texts[5] = "   "  # an empty document in train: skipped and counted
    c.fingerprint = ""
    c.__post_init__()
    return c


@pytest.fixture(scope="module")
def store(corpus: Corpus, tmp_path_factory) -> TokenStore:
    return build_store(corpus, cache_dir=tmp_path_factory.mktemp("tokens"), workers=1)


def test_store_round_trip_equals_fastai(store: TokenStore, corpus: Corpus) -> None:
    from fastai.text.core import SpacyTokenizer, tokenize_texts
    from fastai.text.data import make_vocab

    assert store.splits() == ["train", "valid", "test"]
    rows = {s: [i for i, sp in enumerate(corpus.splits) if sp == s and corpus.texts[i].strip()]
            for s in store.splits()}
    toks = {s: [list(t) for t in tokenize_texts([corpus.texts[i] for i in rows[s]], n_workers=0,
                                                tok=SpacyTokenizer())] for s in rows}
    # fastai's vocab from the non-test documents, in corpus order.
    count = Counter()
    for s in ("train", "valid"):
        for t in toks[s]:
            count.update(t)
    assert store.vocab.itos == make_vocab(count)
    o2i = {w: i for i, w in enumerate(store.vocab.itos) if w != "xxfake"}
    for s in rows:
        docs = store.docs(s)
        assert [d.tolist() for d in docs] == [[o2i.get(w, 0) for w in t] for t in toks[s]]
        assert store.labels(s) == [corpus.labels[i] for i in rows[s]]
        assert store.n_docs(s) == len(rows[s]) and store.n_tokens(s) == sum(map(len, toks[s]))
        assert store.ids(s).dtype == np.uint16 and store.offsets(s).dtype == np.int64
        assert store.offsets(s)[0] == 0 and store.offsets(s)[-1] == len(store.ids(s))
        n_unk = sum(o2i.get(w, 0) == 0 for t in toks[s] for w in t)
        assert store.oov_rate(s) == pytest.approx(n_unk / store.n_tokens(s), abs=1e-6)
    assert store.meta["splits"]["train"]["skipped_empty"] == 1
    assert 5 not in store.rows("train").tolist() and store.rows("train")[5] == 6
    assert store.oov_rate("test") >= 0 and store.meta["tokenizer"] == TokenizerSpec().to_dict()
    # Decoding gives the text back (up to whitespace and fastai's "..." -> "…", "<br />" -> newline).
    for doc, i in zip(store.docs("valid"), rows["valid"]):
        text = corpus.texts[i].replace("...", "…").replace("<br />", "\n")
        decoded = store.tokenizer.decode(store.vocab.decode_ids(doc))
        assert "".join(decoded.split()).lower() == "".join(text.split()).lower()


def test_store_files_are_self_describing(store: TokenStore) -> None:
    names = sorted(p.name for p in store.root.iterdir())
    assert names == sorted(["meta.json", "vocab.json", "tokenizer"] + [
        f"{s}.{kind}" for s in ("train", "valid", "test")
        for kind in ("ids.npy", "offsets.npy", "rows.npy", "labels.json")])
    meta = json.loads((store.root / "meta.json").read_text())
    assert meta["vocab"]["fingerprint"] == store.vocab.fingerprint
    assert str(store.root) not in (store.root / "meta.json").read_text()


def test_cache_hit_reuses_store(corpus: Corpus, store: TokenStore, monkeypatch) -> None:
    import ulmfit.store as store_mod

    def boom(*args, **kwargs):
        raise AssertionError("the cached store should have been reused")

    monkeypatch.setattr(store_mod, "_build", boom)
    again = build_store(corpus, cache_dir=store.root.parent)
    assert again.root == store.root
    assert again.vocab == store.vocab
    # A different spec is a different key: it would have to build.
    with pytest.raises(AssertionError, match="reused"):
        build_store(corpus, cache_dir=store.root.parent, spec=TokenizerSpec(min_freq=1))


def test_parallel_build_equals_serial(corpus: Corpus, store: TokenStore, tmp_path: Path) -> None:
    import ulmfit.store as store_mod

    old = store_mod.CHUNK_DOCS
    store_mod.CHUNK_DOCS = 16  # several chunks per worker, and chunks that straddle splits
    try:
        par = build_store(corpus, cache_dir=tmp_path, workers=2)
    finally:
        store_mod.CHUNK_DOCS = old
    assert par.vocab == store.vocab
    for s in store.splits():
        assert np.array_equal(par.ids(s), store.ids(s))
        assert np.array_equal(par.offsets(s), store.offsets(s))


def test_a_refused_fork_falls_back_to_spawned_workers(corpus: Corpus, store: TokenStore, tmp_path: Path,
                                                      monkeypatch) -> None:
    """A long training run's address space can make fork() fail with ENOMEM (seen after a 66-minute LM epoch,
    when the classifier tokenized its data in the same process): the store must still be built, identically."""
    import multiprocessing as mp

    import ulmfit.store as store_mod

    real = mp.get_context

    class NoFork:
        def Pool(self, *a, **k):
            raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mp, "get_context", lambda m=None: NoFork() if m == "fork" else real(m))
    monkeypatch.setattr(store_mod, "CHUNK_DOCS", 16)
    par = build_store(corpus, cache_dir=tmp_path, workers=2)
    assert par.vocab == store.vocab
    for s in store.splits():
        assert np.array_equal(par.ids(s), store.ids(s))


def test_given_tokenizer_and_vocab(corpus: Corpus, store: TokenStore, tmp_path: Path) -> None:
    other = make_corpus(n_train=10, n_valid=5, n_test=0, seed=9)
    small = Vocab(make_itos(Counter({"movie": 5, "film": 5}), min_freq=1))
    st = build_store(other, tokenizer=store.tokenizer, vocab=small, cache_dir=tmp_path)
    assert st.vocab == small and st.root != store.root
    toks = list(store.tokenizer.tokenize([t for t, s in zip(other.texts, other.splits) if s == "valid"]))
    assert [d.tolist() for d in st.docs("valid")] == [small.encode(t).tolist() for t in toks]
    assert st.oov_rate("valid") > 0.3  # most words are not in the two-word vocab


def test_default_cache_dir_and_key(corpus: Corpus, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    tiny = make_corpus(n_train=4, n_valid=2, n_test=0, seed=3)
    st = build_store(tiny)
    assert st.root.parent == tmp_path / "c"
    monkeypatch.delenv("ULMFIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "ulmfit" / "tokens"


def test_failed_build_leaves_nothing(monkeypatch, tmp_path: Path) -> None:
    import ulmfit.store as store_mod

    real = store_mod.write_json

    def fail_on_meta(path, obj):
        if Path(path).name == "meta.json":
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(store_mod, "write_json", fail_on_meta)
    with pytest.raises(KeyboardInterrupt):
        build_store(make_corpus(n_train=4, n_valid=2, n_test=0, seed=4), cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [store_mod.LOCKS]  # only the (empty) lock folder
    assert list((tmp_path / store_mod.LOCKS).iterdir()) == []


def test_a_killed_build_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    """kill -9 never runs a `finally`: its staging folder stays until the next build removes it."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    left = tmp_path / f".deadbeef.tmp-{dead}-abc123"
    (left / "_chunks").mkdir(parents=True)
    (tmp_path / f".other.tmp-{os.getpid()}-xyz").mkdir()  # a live process's staging folder is not touched
    store = build_store(make_corpus(n_train=4, n_valid=2, n_test=0, seed=4), cache_dir=tmp_path)
    assert not left.exists()
    assert (tmp_path / f".other.tmp-{os.getpid()}-xyz").exists()
    assert store.root.exists()


def test_a_second_builder_of_the_same_store_waits_and_reuses_it(tmp_path: Path) -> None:
    import ulmfit.store as store_mod

    import threading

    from ulmfit._rundir import file_lock

    corpus = make_corpus(n_train=4, n_valid=2, n_test=0, seed=4)
    key_lock = tmp_path / store_mod.LOCKS
    key_lock.mkdir()
    holder = threading.Event()
    done: list = []

    def build():
        holder.wait()
        done.append(build_store(corpus, cache_dir=tmp_path))

    first = build_store(corpus, cache_dir=tmp_path)  # the store exists; hold its key's lock and start a second
    lock_path = key_lock / f"{first.root.name}.lock"
    import fcntl

    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    t = threading.Thread(target=build)
    t.start()
    holder.set()
    t.join(0.5)
    assert t.is_alive() and not done  # waiting for the lock
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(10)
    assert done and done[0].root == first.root


def test_sentencepiece_store(tmp_path: Path) -> None:
    c = make_corpus(n_train=80, n_valid=10, n_test=0, n_unsup=10, seed=5)
    st = build_store(c, spec=TokenizerSpec(kind="sentencepiece", sp_vocab_size=80), cache_dir=tmp_path)
    assert (st.root / "tokenizer" / "spm.model").exists()
    assert st.splits() == ["train", "valid", "unsup"]
    tok = st.tokenizer
    first = [t for t, s in zip(c.texts, c.splits) if s == "valid"][0]
    assert st.vocab.decode_ids(st.docs("valid")[0]) == tok.tokenize1(first)
    assert tok.decode(st.vocab.decode_ids(st.docs("valid")[0])).lower() == first.lower()
    assert st.oov_rate("valid") == 0.0


def test_store_errors(tmp_path: Path, store: TokenStore) -> None:
    with pytest.raises(UlmfitError, match="no documents"):
        build_store(Corpus([], [], [], "empty"), cache_dir=tmp_path)
    with pytest.raises(UlmfitError, match="not a token store"):
        TokenStore(tmp_path)
    with pytest.raises(UlmfitError, match="has no split 'unsup'"):
        store.ids("unsup")
    sp = TokenizerSpec(kind="sentencepiece")
    with pytest.raises(UlmfitError, match="needs that model"):
        build_store(make_corpus(4, 2, 0), vocab=store.vocab, spec=sp, cache_dir=tmp_path)
    with pytest.raises(UlmfitError, match="no training texts"):
        build_store(make_corpus(0, 4, 0), spec=sp, cache_dir=tmp_path)
    with pytest.raises(UlmfitError, match="pass only one"):
        build_store(make_corpus(4, 2, 0), tokenizer=train_tokenizer(TokenizerSpec(), []), spec=TokenizerSpec(min_freq=1),
                    cache_dir=tmp_path)
