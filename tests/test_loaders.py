"""LM stream and classifier loaders: fastai's layout, continuity, determinism, padding, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_store import make_corpus
from ulmfit.errors import UlmfitError
from ulmfit.loaders import clas_dataloaders, clas_test_batches, lm_dataloaders, pad_batch
from ulmfit.store import TokenStore, build_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TokenStore:
    c = make_corpus(n_train=120, n_valid=30, n_test=10, n_unsup=30, seed=1, min_words=3, max_words=150)
    return build_store(c, cache_dir=tmp_path_factory.mktemp("tokens"), workers=1)


def _concat(store: TokenStore, splits, order=None) -> np.ndarray:
    docs = [d for s in splits for d in store.docs(s)]
    if order is not None:
        docs = [docs[i] for i in order]
    return np.concatenate(docs).astype(np.int64)


def test_lm_batches_continue_rows_and_shift_targets(store: TokenStore) -> None:
    dls = lm_dataloaders(store, bs=4, seq_len=10, device="cpu")
    dl = dls.train
    assert len(dl) == -(-dl.bl // 10)
    batches = list(dl)
    assert len(batches) == len(dl)
    xs = torch.cat([x for x, _ in batches], 1)  # (bs, bl): each row read left to right
    ys = torch.cat([y for _, y in batches], 1)
    assert xs.shape == (4, dl.bl)
    assert all(x.shape == y.shape for x, y in batches) and batches[0][0].shape == (4, 10)
    for (x0, y0), (x1, _) in zip(batches, batches[1:]):
        assert torch.equal(x1[:, 0], y0[:, -1])  # row i of batch k+1 continues row i of batch k
        assert torch.equal(x0[:, 1:], y0[:, :-1])  # targets are the inputs shifted by one
    # The rows are consecutive slices of the epoch's stream: all train+unsup docs, shuffled.
    stream = dl.stream(0)
    n_docs = store.n_docs("train") + store.n_docs("unsup")
    order = np.random.default_rng([42, 0]).permutation(n_docs)
    assert np.array_equal(stream, _concat(store, ["train", "unsup"], order))
    flat = stream[: 4 * dl.bl].reshape(4, dl.bl)
    assert np.array_equal(xs.numpy(), flat)
    assert np.array_equal(ys.numpy(), stream[1: 4 * dl.bl + 1].reshape(4, dl.bl))
    assert xs.dtype == torch.int64 and (xs[:, :1] >= 0).all()


def test_lm_valid_in_order_and_equal_to_fastai(store: TokenStore) -> None:
    from fastai.text.data import LMDataLoader

    dl = lm_dataloaders(store, bs=3, seq_len=7, device="cpu").valid
    ours = list(dl)
    assert np.array_equal(dl.stream(), _concat(store, ["valid"]))
    fa = LMDataLoader([torch.from_numpy(d.astype(np.int64)) for d in store.docs("valid")], bs=3, seq_len=7)
    theirs = list(fa)
    assert len(ours) == len(theirs) == len(dl)
    for (x, y), (fx, fy) in zip(ours, theirs):
        assert torch.equal(x, fx.as_subclass(torch.Tensor)) and torch.equal(y, fy.as_subclass(torch.Tensor))
    assert [torch.equal(a[0], b[0]) for a, b in zip(ours, list(dl))] == [True] * len(ours)  # not shuffled


def test_lm_seed_and_epochs(store: TokenStore) -> None:
    a = lm_dataloaders(store, bs=4, seq_len=10, seed=7, device="cpu").train
    b = lm_dataloaders(store, bs=4, seq_len=10, seed=7, device="cpu").train
    c = lm_dataloaders(store, bs=4, seq_len=10, seed=8, device="cpu").train
    e0a, e0b, e0c = next(iter(a))[0], next(iter(b))[0], next(iter(c))[0]
    assert torch.equal(e0a, e0b)  # same seed, same batches
    assert not torch.equal(e0a, e0c)
    e1a = next(iter(a))[0]  # the second epoch of `a` reshuffles
    assert not torch.equal(e0a, e1a)
    assert not np.array_equal(a.stream(0), a.stream(1))
    assert np.array_equal(np.sort(a.stream(0)), np.sort(a.stream(1)))  # same tokens, new order


def test_lm_backwards_is_reversed_stream(store: TokenStore) -> None:
    fwd = lm_dataloaders(store, bs=2, seq_len=9, device="cpu", seed=3)
    bwd = lm_dataloaders(store, bs=2, seq_len=9, device="cpu", seed=3, backwards=True)
    assert np.array_equal(bwd.valid.stream(), fwd.valid.stream()[::-1])
    assert np.array_equal(bwd.train.stream(0), fwd.train.stream(0)[::-1])
    x, y = next(iter(bwd.valid))
    s = fwd.valid.stream()[::-1]
    assert x[0].tolist() == s[:9].tolist() and y[0].tolist() == s[1:10].tolist()
    assert s[-1] == store.vocab.bos_id  # the first token of the first valid doc is the last one backwards


def test_lm_random_bptt(store: TokenStore) -> None:
    dl = lm_dataloaders(store, bs=2, seq_len=20, device="cpu", random_bptt=True, seed=1).train
    n = len(dl)
    batches = list(dl)
    assert len(batches) == n
    lens = [x.shape[1] for x, _ in batches]
    assert sum(lens) == dl.bl and len(set(lens)) > 3 and min(lens[:-1]) >= 5
    assert torch.equal(batches[1][0][:, 0], batches[0][1][:, -1])


def test_lm_too_small(store: TokenStore) -> None:
    n = store.n_tokens("valid")
    with pytest.raises(UlmfitError, match=rf"the valid text has {n} tokens.*bs=64.*seq_len=72") as e:
        lm_dataloaders(store, bs=64, seq_len=72, device="cpu")
    assert "lower bs" in str(e.value)
    with pytest.raises(UlmfitError, match="no training split"):
        lm_dataloaders(store, train_splits=("nope",), device="cpu")


def test_lm_trains_with_fastai_learner(store: TokenStore) -> None:
    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar)
    from fastai.callback.rnn import ModelResetter, RNNCallback
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.text.models.core import get_language_model

    torch.manual_seed(0)
    dls = lm_dataloaders(store, bs=32, seq_len=16, device="cpu")
    assert dls.device == torch.device("cpu") and dls.vocab == store.vocab.itos
    cfg = dict(awd_lstm_lm_config, emb_sz=16, n_hid=32, n_layers=1)
    model = get_language_model(AWD_LSTM, len(store.vocab), config=cfg)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[ModelResetter(), RNNCallback()])
    with learn.no_bar(), learn.no_logging():
        before = learn.validate()[0]
        learn.fit(1, 5e-2)
        after = learn.validate()[0]
    assert after < before - 0.25  # it learned the word distribution (the text is random: ~log(40) is the floor)


# --- classifier -------------------------------------------------------------------------------------------

def test_pad_batch_matches_fastai_pad_input_chunk() -> None:
    from fastai.text.data import pad_input_chunk

    rng = np.random.default_rng(0)
    docs = [rng.integers(2, 50, size=n) for n in (5, 30, 12, 1, 29)]
    ours = pad_batch(docs, pad_id=1, seq_len=8)
    theirs = pad_input_chunk([(torch.from_numpy(d),) for d in docs], pad_idx=1, pad_first=True, seq_len=8)
    assert torch.equal(ours, torch.stack([t[0] for t in theirs]))
    back = pad_batch(docs, pad_id=1, seq_len=8, backwards=True)
    theirs_b = pad_input_chunk([(torch.from_numpy(d[::-1].copy()),) for d in docs], pad_idx=1, pad_first=True,
                               seq_len=8)
    assert torch.equal(back, torch.stack([t[0] for t in theirs_b]))


def test_clas_batches(store: TokenStore) -> None:
    dls = clas_dataloaders(store, ["neg", "pos"], bs=8, device="cpu", seq_len=16)
    assert dls.c == 2 and list(dls.vocab[1]) == ["neg", "pos"]
    lens = store.lengths("train")
    train = dls.train
    seen = []
    first = True
    for x, y in train:
        assert x.shape[0] == 8  # drop_last for train: BatchNorm never sees a batch of one
        n_pad = (x == store.vocab.pad_id).sum(1)
        doc_lens = x.shape[1] - n_pad
        if first:
            assert doc_lens.max().item() == lens.max()  # the longest document comes first
            first = False
        seen.extend(doc_lens.tolist())
        assert set(y.tolist()) <= {0, 1}
    assert len(seen) == (len(lens) // 8) * 8
    # "sortish": within a batch, lengths are close; across the epoch, batches come in random length order.
    order = train.order(0)
    batches = [lens[order[i:i + 8]] for i in range(0, len(order), 8)]
    spread = np.mean([b.max() - b.min() for b in batches])
    rng = np.random.default_rng(0)
    random_spread = np.mean([np.ptp(rng.choice(lens, 8, replace=False)) for _ in range(200)])
    assert spread < random_spread / 3
    assert not all(batches[i].max() >= batches[i + 1].max() for i in range(1, len(batches) - 2))
    assert sorted(order.tolist()) == list(range(len(lens)))
    assert not np.array_equal(train.order(0), train.order(1))
    # Valid: longest first, every document once, labels mapped by the given list.
    vorder = dls.valid.order()
    assert np.all(np.diff(store.lengths("valid")[vorder]) <= 0)
    ys = torch.cat([y for _, y in dls.valid])
    vlabels = store.labels("valid")
    assert ys.tolist() == [["neg", "pos"].index(vlabels[i]) for i in vorder]
    flipped = clas_dataloaders(store, ["pos", "neg"], bs=8, device="cpu")
    assert (torch.cat([y for _, y in flipped.valid]) == 1 - ys).all()


def test_clas_backwards_reverses_documents(store: TokenStore) -> None:
    fwd = clas_dataloaders(store, ["neg", "pos"], bs=4, device="cpu", seq_len=16)
    bwd = clas_dataloaders(store, ["neg", "pos"], bs=4, device="cpu", seq_len=16, backwards=True)
    (xf, yf), (xb, yb) = next(iter(fwd.valid)), next(iter(bwd.valid))
    pad = store.vocab.pad_id
    for a, b in zip(xf, xb):
        assert a[a != pad].flip(0).tolist() == b[b != pad].tolist()
    assert torch.equal(yf, yb)


def test_clas_label_errors(store: TokenStore) -> None:
    with pytest.raises(UlmfitError, match="label\\(s\\) not among \\['neg'\\].*pos"):
        clas_dataloaders(store, ["neg"], device="cpu")
    with pytest.raises(UlmfitError, match="no validation split"):
        clas_dataloaders(store, ["neg", "pos"], valid_split="dev", device="cpu")
    with pytest.raises(UlmfitError, match="unlabeled"):
        clas_dataloaders(store, ["neg", "pos"], train_split="unsup", device="cpu")


def test_clas_test_batches_restore_order(store: TokenStore) -> None:
    docs = store.docs("test")
    got = {}
    for x, idx in clas_test_batches(docs, bs=3, pad_id=store.vocab.pad_id):
        assert x.shape[0] == len(idx) <= 3
        for row, i in zip(x, idx):
            got[int(i)] = row[row != store.vocab.pad_id].tolist()
    assert [got[i] for i in range(len(docs))] == [d.tolist() for d in docs]


def test_clas_trains_with_fastai_learner(store: TokenStore) -> None:
    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar)
    from fastai.callback.rnn import ModelResetter, RNNCallback
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config
    from fastai.text.models.core import get_text_classifier

    dls = clas_dataloaders(store, ["neg", "pos"], bs=16, device="cpu")
    cfg = dict(awd_lstm_clas_config, emb_sz=8, n_hid=16, n_layers=1)
    model = get_text_classifier(AWD_LSTM, len(store.vocab), 2, config=cfg, seq_len=72)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[ModelResetter(), RNNCallback()])
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
        preds, targs = learn.get_preds()
    assert preds.shape == (store.n_docs("valid"), 2) and targs.shape == (store.n_docs("valid"),)
