"""The classifier network: LM encoder loading, and inference that keeps input order across sorted batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ulmfit.classify.config import resolve_config
from ulmfit.classify.model import build_model, inference_model, load_encoder, pad_batch, predict_ids
from ulmfit.errors import UlmfitError

ARCH = dict(emb_sz=16, n_hid=24, n_layers=2)


def _model(n_class=3, vocab=60, seed=0):
    torch.manual_seed(seed)
    return build_model(vocab, n_class, ARCH, resolve_config("tiny"), pad_idx=1)


def _docs(n=41, seed=0, vocab=60, max_len=70):
    rng = np.random.default_rng(seed)
    return [rng.integers(2, vocab, size=int(rng.integers(1, max_len))) for _ in range(n)]


def test_probabilities_do_not_depend_on_batching_and_come_back_in_input_order() -> None:
    m = inference_model(_model())
    docs = _docs()
    seq_len = resolve_config("tiny").seq_len
    one_by_one = np.concatenate([predict_ids(m, [d], bs=1, pad_idx=1, seq_len=seq_len) for d in docs])
    for bs in (3, 8, 64):
        batched = predict_ids(m, docs, bs=bs, pad_idx=1, seq_len=seq_len)
        np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    # the documents really differ, so a permutation would be caught
    assert np.abs(one_by_one - one_by_one[::-1]).max() > 1e-3
    np.testing.assert_allclose(one_by_one.sum(1), 1.0, atol=1e-5)


def test_inference_model_equals_the_training_network_in_eval_mode() -> None:
    m = _model().eval()
    docs = _docs(12)
    seq_len = resolve_config("tiny").seq_len
    before = predict_ids(m, docs, bs=4, pad_idx=1, seq_len=seq_len)
    after = predict_ids(inference_model(m), docs, bs=4, pad_idx=1, seq_len=seq_len)
    np.testing.assert_allclose(before, after, atol=1e-6)


def test_int8_model_stays_close() -> None:
    m = _model()
    docs = _docs(12)
    seq_len = resolve_config("tiny").seq_len
    full = predict_ids(inference_model(m), docs, bs=4, pad_idx=1, seq_len=seq_len)
    q = predict_ids(inference_model(_model(), quantize=True), docs, bs=4, pad_idx=1, seq_len=seq_len)
    assert np.abs(full - q).max() < 0.05


def test_padding_is_whole_chunks_before_and_rest_after() -> None:
    x = pad_batch([np.arange(2, 12), np.arange(2, 5)], pad_idx=1, seq_len=4)
    # width rounded up to a multiple of seq_len (12); short text starts on a chunk boundary
    assert x.shape == (2, 12)
    assert x[0].tolist() == list(range(2, 12)) + [1, 1]
    assert x[1].tolist() == [1] * 8 + [2, 3, 4, 1]


def test_load_encoder_from_a_language_model() -> None:
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_language_model

    torch.manual_seed(1)
    lm = get_language_model(AWD_LSTM, 60, config=dict(emb_sz=16, n_hid=24, n_layers=2, pad_token=1,
                                                      bidir=False, output_p=0.1, hidden_p=0.1, input_p=0.1,
                                                      embed_p=0.1, weight_p=0.1, tie_weights=True,
                                                      out_bias=True))
    clf = _model()
    load_encoder(clf, lm[0].state_dict())
    got, want = clf[0].module.state_dict(), lm[0].state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # prefixed keys (a whole LM state dict, as fastai saves it) load too, decoder ignored only if absent
    load_encoder(clf, {f"0.{k}": v for k, v in lm[0].state_dict().items()})


def test_load_encoder_refuses_a_different_architecture() -> None:
    bigger = build_model(60, 3, dict(emb_sz=16, n_hid=32, n_layers=2), resolve_config("tiny"), pad_idx=1)
    with pytest.raises(UlmfitError, match="has shape"):
        load_encoder(_model(), bigger[0].module.state_dict())
    deeper = build_model(60, 3, dict(emb_sz=16, n_hid=24, n_layers=3), resolve_config("tiny"), pad_idx=1)
    with pytest.raises(UlmfitError, match="do not fit"):
        load_encoder(_model(), deeper[0].module.state_dict())


def test_no_texts_is_an_error() -> None:
    with pytest.raises(UlmfitError, match="no texts"):
        predict_ids(_model(), [], bs=4, pad_idx=1, seq_len=16)


def test_zero_dropout_trains_and_resets() -> None:
    """drop_mult=0 makes every weight_p 0, which breaks fastai's WeightDropout on current torch unless fixed."""
    m = build_model(60, 2, ARCH, resolve_config("tiny", sets=["drop_mult=0"]), pad_idx=1)
    x = torch.from_numpy(pad_batch(sorted(_docs(4), key=len, reverse=True), 1, 16))
    m.train()
    for _ in range(2):
        m.reset()
        m(x)[0].sum().backward()
    assert m[0].module.rnns[0].weight_hh_l0_raw.grad is not None
