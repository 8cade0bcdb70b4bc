"""QRNN encoder (arch=qrnn): the forget-mult, the forward against a step-by-step reference, carried state, learning,
generation, layer groups, int8, every CLI stage, and the architecture-mismatch errors."""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_lm import run  # main(argv) with stdout captured
from ulmfit.bundle import read_bundle, write_bundle
from ulmfit.classify.config import resolve_config as clas_config
from ulmfit.classify.model import build_model, inference_model, load_encoder, predict_ids
from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError
from ulmfit.generate import banned_ids
from ulmfit.lm import LanguageModel
from ulmfit.lm.config import resolve_config
from ulmfit.lm.forget_mult import forget_mult, forget_mult_reference
from ulmfit.lm.model import build_lm, encoder_state, load_lm_state
from ulmfit.lm.qrnn import QRNN
from ulmfit.tokenize import TokenizerSpec, build_vocab, train_tokenizer


def _arch(vocab_size: int, **sets) -> dict:
    cfg = resolve_config("tiny", sets=["arch=qrnn", *(f"{k}={v}" for k, v in sets.items())])
    return cfg.arch_dict(vocab_size)


# ------------------------------------------------------------------------------------------- the computation


def test_forget_mult_values_and_gradients_match_the_reference():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 3, 5, generator=g, dtype=torch.float64).tanh().requires_grad_()
    f = torch.randn(7, 3, 5, generator=g, dtype=torch.float64).sigmoid().requires_grad_()
    c0 = torch.randn(3, 5, generator=g, dtype=torch.float64).requires_grad_()
    grad = torch.randn(7, 3, 5, generator=g, dtype=torch.float64)
    outs = []
    for fn in (forget_mult, forget_mult_reference):
        out = fn(z, f, c0)
        outs.append((out.detach(), torch.autograd.grad(out, (z, f, c0), grad)))
    (fast, fast_grads), (ref, ref_grads) = outs
    torch.testing.assert_close(fast, ref)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(forget_mult, (z, f, c0))


def _step_by_step(enc: QRNN, ids: torch.Tensor) -> torch.Tensor:
    """The QRNN written out one time step at a time (eval mode: no dropout)."""
    x = enc.encoder.weight[ids]                                              # (bs, sl, emb)
    for layer in enc.rnns:
        w, b = layer.linear.weight, layer.linear.bias
        c = x.new_zeros(x.shape[0], layer.n_out)
        prev = x.new_zeros(x.shape[0], layer.n_in)
        hs = []
        for t in range(x.shape[1]):
            src = torch.cat([prev, x[:, t]], -1) if layer.window == 2 else x[:, t]
            z, f, o = (src @ w.T + b).chunk(3, -1)
            c = torch.sigmoid(f) * torch.tanh(z) + (1 - torch.sigmoid(f)) * c
            hs.append(torch.sigmoid(o) * c)
            prev = x[:, t]
        x = torch.stack(hs, 1)
    return x


def test_forward_matches_a_step_by_step_reference_whole_or_in_pieces():
    torch.manual_seed(0)
    enc = QRNN(30, 8, 12, 3, hidden_p=0.3, input_p=0.3, embed_p=0.1, weight_p=0.5).double().eval()
    ids = torch.randint(0, 30, (4, 11))
    with torch.no_grad():
        ref = _step_by_step(enc, ids)
        enc.reset()
        whole = enc(ids)
        enc.reset()  # BPTT batches: the state (cell and last input) carries from one piece to the next
        pieces = torch.cat([enc(ids[:, :4]), enc(ids[:, 4:5]), enc(ids[:, 5:])], 1)
    torch.testing.assert_close(whole, ref)
    torch.testing.assert_close(pieces, ref)
    assert [r.window for r in enc.rnns] == [2, 1, 1] and whole.shape == (4, 11, 8)


def test_a_tiny_qrnn_lm_learns_a_sequence_task():
    """x[t] = (x[t-1] + x[t-2]) mod V: predictable from the last two tokens, which the window-2 layer sees."""
    V, bs, sl = 11, 16, 24
    rng = np.random.default_rng(0)

    def batch():
        seq = np.zeros((bs, sl + 1), dtype=np.int64)
        seq[:, :2] = rng.integers(0, V, (bs, 2))
        for t in range(2, sl + 1):
            seq[:, t] = (seq[:, t - 1] + seq[:, t - 2]) % V
        return torch.from_numpy(seq[:, :-1]), torch.from_numpy(seq[:, 1:])

    torch.manual_seed(0)
    model = build_lm(_arch(V), V)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        model.reset()
        x, y = batch()
        loss = F.cross_entropy(model(x)[0].reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.reset()
    x, y = batch()
    with torch.no_grad():
        loss = F.cross_entropy(model(x)[0][:, 2:].reshape(-1, V), y[:, 2:].reshape(-1)).item()
    assert loss < 0.25 * math.log(V), loss  # uniform guessing: log(V)


def test_layer_groups_cover_every_parameter_once():
    from fastai.text.models.awdlstm import awd_lstm_clas_split, awd_lstm_lm_split

    arch = _arch(40, n_layers=3)
    lm = build_lm(arch)
    clas = build_model(40, 2, arch, clas_config("tiny"), pad_idx=1)
    for model, split, n_groups in ((lm, awd_lstm_lm_split, 4), (clas, awd_lstm_clas_split, 5)):
        groups = split(model)
        assert len(groups) == n_groups
        ids = [id(p) for g in groups for p in g]
        assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})


# ------------------------------------------------------------------------------------------- inference


WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa".split()
TEXTS = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]


@pytest.fixture(scope="module")
def qrnn_lm(tmp_path_factory):
    """An untrained tiny QRNN LM bundle, loaded."""
    spec = TokenizerSpec(kind="rules", min_freq=1)
    tok = train_tokenizer(spec, TEXTS * 4)
    vocab = build_vocab(tok, token_lists=tok.tokenize(TEXTS))
    torch.manual_seed(0)
    arch = _arch(len(vocab.itos))
    model = build_lm(arch)
    path = tmp_path_factory.mktemp("qrnn") / "lm"
    write_bundle(path, config={"stage": "lm", "arch": arch, "direction": "forward", "tokenizer": spec.to_dict()},
                 meta={"stage": "lm"}, vocab=vocab, tokenizer=tok,
                 weights={"model": model.state_dict(), "encoder": encoder_state(model)})
    return LanguageModel.load(path, device="cpu")


def test_incremental_generation_equals_full_recomputation(qrnn_lm):
    lm = qrnn_lm
    ids = lm.encode_prompt("kilo lima mike")
    _, (gen,) = lm.generate_tokens("kilo lima mike", words=20, greedy=True)
    seq, banned = list(ids), banned_ids(lm.vocab.itos)
    with torch.no_grad():
        for _ in gen:  # fastai's LMLearner.predict way: the whole text again for every new token
            lm.model.reset()
            logits = lm.model(torch.tensor([seq]))[0][0, -1]
            logits[banned] = float("-inf")
            seq.append(int(logits.argmax()))
    assert gen == [lm.vocab.itos[i] for i in seq[len(ids):]]


def test_classifier_batches_and_int8(qrnn_lm):
    """A document's probabilities do not depend on its batch (the state follows SentenceEncoder's shrinking
    batches); int8 dynamic quantization reaches the QRNN's convolutions and stays close."""
    arch = dict(qrnn_lm.bundle.arch)
    cfg = clas_config("tiny")
    torch.manual_seed(1)
    model = build_model(len(qrnn_lm.vocab.itos), 2, arch, cfg, pad_idx=1)
    load_encoder(model, qrnn_lm.bundle.load_state("encoder"))
    model = inference_model(model)
    rng = random.Random(0)
    docs = [np.array([rng.randrange(2, 20) for _ in range(n)]) for n in (5, 70, 23, 1, 48)]
    kw = dict(bs=8, pad_idx=1, seq_len=cfg.seq_len)
    together = predict_ids(model, docs, **kw)
    alone = np.concatenate([predict_ids(model, [d], **kw) for d in docs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    q = inference_model(model, quantize=True)
    assert "quantized" in type(q[0].module.rnns[0].linear).__module__
    np.testing.assert_allclose(predict_ids(q, docs, **kw), together, atol=0.05)


# ------------------------------------------------------------------------------------------- every stage, CLI


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("qrnn-cli")
    rng = random.Random(0)
    words = "the a movie film plot story acting cast scene ending and of to in it was is with".split()
    with open(root / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i in range(240):
            pos = rng.random() < 0.5
            doc = [rng.choice(words) for _ in range(rng.randint(8, 30))]
            doc.insert(rng.randrange(len(doc)), rng.choice(["good", "great"] if pos else ["bad", "awful"]))
            w.writerow([" ".join(doc), "pos" if pos else "neg", "valid" if i % 5 == 0 else "train"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULMFIT_THREADS", "1")
        yield root


@pytest.fixture(scope="module")
def pretrained(work):
    rc, out = run(["pretrain", work / "reviews.csv", "--out", work / "lm", "--preset", "tiny", "--set", "arch=qrnn",
                   "--set", "alpha=2", "--set", "beta=1", "--seed", "0"])  # AR/TAR through fastai's RNNRegularizer
    assert rc == 0, out
    return work / "lm"


def test_every_stage_with_arch_qrnn(pretrained, work, capsys):
    lm = read_bundle(pretrained)
    assert lm.arch["name"] == "qrnn" and lm.config["lm_config"]["arch"] == "qrnn"
    assert any(k.endswith("rnns.0.linear.weight") for k in lm.load_state("encoder"))
    assert lm.metrics()[-1]["train_loss"] < lm.metrics()[0]["train_loss"]

    rc, out = run(["lm-finetune", work / "reviews.csv", "--pretrained", pretrained, "--out", work / "ft",
                   "--preset", "tiny", "--epochs", "1"])
    assert rc == 0, out
    assert read_bundle(work / "ft").arch == lm.arch

    rc, out = run(["classify", work / "reviews.csv", "--lm", work / "ft", "--out", work / "clas", "--preset", "tiny",
                   "--set", "schedule=gradual", "--set", "ngram=off"])  # gradual unfreezing over the layer groups
    assert rc == 0, out
    assert "QRNN 32/64/2" in out
    clas = read_bundle(work / "clas", stage="classifier")
    assert clas.arch["name"] == "qrnn" and len(clas.metrics()) >= 3

    rc, out = run(["evaluate", work / "clas", work / "reviews.csv", "--split", "valid"])
    assert rc == 0, out
    (work / "texts.txt").write_text("a great movie\nan awful plot\n")
    for extra in ([], ["--int8"]):
        rc, out = run(["predict", work / "clas", "-i", work / "texts.txt", *extra])
        assert rc == 0, out
        assert [json.loads(line)["label"] in ("pos", "neg") for line in out.splitlines()] == [True, True]

    rc, out = run(["generate", pretrained, "the movie", "--words", "6", "--seed", "1"])
    assert rc == 0 and out.startswith("the movie"), out

    rc, out = run(["pretrain", work / "reviews.csv", "--out", work / "lm-bwd", "--preset", "tiny", "--set",
                   "arch=qrnn", "--backwards", "--epochs", "1"])
    assert rc == 0, out
    assert read_bundle(work / "lm-bwd").backwards


def test_an_arch_mismatch_is_one_clear_error(pretrained, work, capsys):
    rc = main(["lm-finetune", str(work / "reviews.csv"), "--pretrained", str(pretrained), "--out",
               str(work / "bad"), "--preset", "tiny", "--set", "arch=awd_lstm"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "arch='qrnn' but you asked for arch='awd_lstm'" in err
    assert not (work / "bad").exists()

    qrnn = read_bundle(pretrained)
    awd_arch = dict(qrnn.arch, name="awd_lstm")
    awd_clas = build_model(len(qrnn.vocab.itos), 2, awd_arch, clas_config("tiny"), pad_idx=1)
    with pytest.raises(UlmfitError, match="holds QRNN weights but the model here is built as AWD-LSTM"):
        load_encoder(awd_clas, qrnn.load_state("encoder"))
    qrnn_lm = build_lm(qrnn.arch)
    with pytest.raises(UlmfitError, match="holds AWD-LSTM weights but the model here is built as QRNN"):
        load_lm_state(qrnn_lm, build_lm(awd_arch).state_dict(), "the pretrained model")
    with pytest.raises(UlmfitError, match="must be \"awd_lstm\" or \"qrnn\""):
        resolve_config("tiny", sets=["arch=transformer"])
