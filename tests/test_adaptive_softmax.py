"""The adaptive softmax output layer (softmax=adaptive): an exact distribution equal to torch's reference, tying,
gradients, config; and through the CLI: training, exact perplexity/accuracy, generation, bundles, lm-finetune,
classify, QRNN, and the one-line errors."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil

import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.text.models.awdlstm import awd_lstm_lm_split

from test_lm import run  # main(argv) with stdout captured
from ulmfit.bundle import read_bundle, write_bundle
from ulmfit.cli.main import main
from ulmfit.data import load_corpus
from ulmfit.errors import UlmfitError
from ulmfit.generate import banned_ids
from ulmfit.lm import LanguageModel
from ulmfit.lm.adaptive import AdaptiveSoftmax
from ulmfit.lm.config import adaptive_cutoffs, fit_softmax, resolve_config
from ulmfit.lm.model import build_lm, encoder_state, load_lm_state, next_token_scores
from ulmfit.lm.learner import make_learner
from ulmfit.loaders import lm_dataloaders
from ulmfit.store import build_store
from ulmfit.tokenize import TokenizerSpec

CUTOFFS = "adaptive_cutoffs=[14,22]"  # the toy corpus' vocab (~32): a head and two tail clusters, all with targets


def _arch(vocab_size: int, *sets: str) -> dict:
    return resolve_config("tiny", sets=["softmax=adaptive", "adaptive_cutoffs=[20,60]", *sets]).arch_dict(vocab_size)


# ------------------------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("tied", [True, False])
def test_log_probs_are_exact_and_the_training_path_and_argmax_agree(tied):
    torch.manual_seed(0)
    model = build_lm(_arch(100, f"tie_weights={tied}"))
    sm = model[1]
    with torch.no_grad():  # a tail word that wins at some positions: predict must look into the tail there
        sm.head_bias[20] += 4.0
        sm.tail[0][1].bias[3] += 6.0
    h = 5 * torch.randn(4, 7, 32)
    y = torch.randint(0, 100, (4, 7))
    with torch.no_grad():
        lp = sm.log_prob(h)                                                      # (4, 7, 100)
        assert lp.shape == (4, 7, 100)
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(4, 7))
        torch.testing.assert_close(sm.target_log_prob(h, y), lp.gather(-1, y[..., None]).squeeze(-1))
        pred = sm.predict(h)
        assert torch.equal(pred, lp.argmax(-1)) and (pred >= 20).any() and (pred < 20).any()
        assert torch.equal(next_token_scores(model, h), lp)


def test_equals_torchs_adaptive_log_softmax():
    """Untied and without biases the layer is torch's AdaptiveLogSoftmaxWithLoss: the same weights, the same
    log-probabilities and loss."""
    torch.manual_seed(0)
    ours = AdaptiveSoftmax(100, 32, [20, 60], div_value=4.0, output_p=0.0, tie_encoder=None, bias=False)
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(32, 100, [20, 60], div_value=4.0, head_bias=False)
    with torch.no_grad():
        ref.head.weight.copy_(torch.cat([ours.head_words, ours.cluster_weight]))
        for r, o in zip(ref.tail, ours.tail):
            r[0].weight.copy_(o[0].weight)
            r[1].weight.copy_(o[1].weight)
        h, y = torch.randn(50, 32), torch.randint(0, 100, (50,))
        torch.testing.assert_close(ours.log_prob(h), ref.log_prob(h))
        torch.testing.assert_close(-ours.target_log_prob(h, y).mean(), ref(h, y).loss)
        assert torch.equal(ours.predict(h), ref.predict(h))


def test_head_is_tied_to_the_embedding_and_groups_hold_each_parameter_once():
    model = build_lm(_arch(100))
    sm = model[1]
    assert sm.embedding is model[0].encoder and sm.head_words is None
    state = model.state_dict()
    assert state["1.embedding.weight"].data_ptr() == state["0.encoder.weight"].data_ptr()
    groups = awd_lstm_lm_split(model)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})
    untied = build_lm(_arch(100, "tie_weights=false"))
    assert untied[1].embedding is None and untied[1].head_words.shape == (20, 32)


def test_every_parameter_gets_a_gradient_even_without_tail_targets():
    """DDP (find_unused_parameters=False) needs a gradient for every parameter at every step."""
    torch.manual_seed(0)
    model = build_lm(_arch(100))
    model.train()
    model.reset()
    x, y = torch.randint(0, 100, (2, 6)), torch.randint(0, 20, (2, 6))  # every target in the head
    pred, _, _ = model(x)
    (-model[1].target_log_prob(pred, y).mean()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_bf16_autocast_loss_is_close_to_fp32():
    torch.manual_seed(0)
    sm = build_lm(_arch(100))[1]
    h, y = torch.randn(64, 32), torch.randint(0, 100, (64,))
    with torch.no_grad():
        ref = sm.target_log_prob(h, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = sm.target_log_prob(h, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=0.05, rtol=0.02)


def test_cutoffs_are_clipped_to_the_vocab_and_validated():
    assert adaptive_cutoffs((2000, 10000), 8000) == [2000]
    assert _arch(8000, "adaptive_cutoffs=[2000,10000]")["adaptive_cutoffs"] == [2000]
    assert "adaptive_cutoffs" not in resolve_config("small-lstm").arch_dict(8000)
    assert resolve_config("small").arch_dict(8000)["adaptive_cutoffs"] == [2000]
    with pytest.raises(UlmfitError, match="leave no tail cluster in a vocabulary of 40 tokens"):
        _arch(40, "adaptive_cutoffs=[2000]")


def test_a_vocabulary_too_small_for_a_tail_cluster_gets_the_full_softmax():
    cfg = resolve_config("small")
    kept, note = fit_softmax(cfg, 9000)
    assert kept is cfg and note is None
    full, note = fit_softmax(cfg, 1500)
    assert full.softmax == "full" and "adaptive_cutoffs" not in full.arch_dict(1500)
    assert "a vocabulary of 1,500 tokens leaves the adaptive softmax no tail cluster" in note
    for bad, what in (("softmax=sampled", "softmax"), ("adaptive_cutoffs=[10,5]", "adaptive_cutoffs"),
                      ("adaptive_div=0.5", "adaptive_div")):
        with pytest.raises(UlmfitError, match=f"config key '{what}'"):
            resolve_config("tiny", sets=[bad])


def test_weights_of_the_other_output_layer_are_one_clear_error():
    full = build_lm(resolve_config("tiny").arch_dict(100))
    adaptive = build_lm(_arch(100))
    with pytest.raises(UlmfitError, match=r"has a full softmax output layer but the model here is built with an "
                                          r"adaptive softmax \(softmax mismatch\)"):
        load_lm_state(adaptive, full.state_dict(), "the checkpoint")
    with pytest.raises(UlmfitError, match="has an adaptive softmax output layer but the model here is built with "
                                          "a full softmax"):
        load_lm_state(full, adaptive.state_dict(), "the checkpoint")


# ------------------------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    rng = random.Random(0)
    words = "the a movie film plot story acting cast scene ending and of to in it was is with".split()
    with open(root / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i in range(240):
            pos = rng.random() < 0.5
            # a Zipf-like word distribution, so frequency ranks (head vs tail) mean something
            doc = rng.choices(words, weights=[1 / (r + 1) for r in range(len(words))], k=rng.randint(8, 30))
            doc.insert(rng.randrange(len(doc)), rng.choice(["good", "great"] if pos else ["bad", "awful"]))
            w.writerow([" ".join(doc), "pos" if pos else "neg", "valid" if i % 5 == 0 else "train"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULMFIT_THREADS", "1")
        mp.setenv("ULMFIT_PROGRESS", "0")
        yield root


@pytest.fixture(scope="module")
def pretrained(work):
    rc, out = run(["pretrain", work / "reviews.csv", "--out", work / "lm", "--preset", "tiny", "--set",
                   "softmax=adaptive", "--set", CUTOFFS, "--seed", "0"])
    assert rc == 0, out
    return work / "lm", out


def _valid_stream(b, csv_path):
    store = build_store(load_corpus(csv_path).select(["train", "valid"]), tokenizer=b.tokenizer, vocab=b.vocab)
    cfg = b.config["lm_config"]
    return lm_dataloaders(store, train_splits=("train",), valid_split="valid", bs=cfg["bs"], seq_len=cfg["seq_len"],
                          device="cpu").valid


def test_an_adaptive_lm_trains_and_reports_exact_perplexity_and_accuracy(pretrained, work):
    lm_dir, out = pretrained
    b = read_bundle(lm_dir)
    arch = b.config["arch"]
    assert arch["softmax"] == "adaptive" and arch["adaptive_cutoffs"] == [14, 22] and arch["vocab_size"] > 22
    assert "softmax=adaptive, adaptive_cutoffs=[14, 22], adaptive_div=4.0" in out, out
    metrics = b.metrics()
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["valid_loss"] < math.log(arch["vocab_size"])          # better than uniform

    # the reported metrics of model-best, recomputed from log_prob over the full vocabulary on the valid stream,
    # averaged as fastai averages any loss or metric: each batch's mean weighted by its rows (the last batch of the
    # stream is shorter, so this differs a little from the mean over tokens)
    best = metrics[b.meta["best_epoch"] - 1]
    model = LanguageModel.load(lm_dir, device="cpu").model
    nll, hits, rows = 0.0, 0.0, 0
    model.reset()
    with torch.no_grad():
        for x, y in _valid_stream(b, work / "reviews.csv"):
            lp = model[1].log_prob(model(x)[0])                              # (bs, sl, vocab)
            torch.testing.assert_close(lp.exp().sum(-1), torch.ones(y.shape))
            nll -= float(lp.gather(-1, y[..., None]).mean()) * len(y)
            hits += float((lp.argmax(-1) == y).float().mean()) * len(y)
            rows += len(y)
    assert best["valid_loss"] == pytest.approx(nll / rows, rel=1e-5)
    assert best["perplexity"] == pytest.approx(math.exp(nll / rows), rel=1e-5)
    assert best["accuracy"] == pytest.approx(hits / rows, abs=1e-6)


def test_generation_is_seeded_and_greedy_is_the_full_argmax(pretrained):
    lm = LanguageModel.load(pretrained[0], device="cpu")
    a = lm.generate("the movie", words=12, seed=3)
    assert a == lm.generate("the movie", words=12, seed=3) and a[0].startswith("the movie")
    assert lm.generate("the movie", words=12, seed=3, top_k=3, top_p=0.9, temperature=0.7)[0].startswith("the movie")
    ids = lm.encode_prompt("the movie")
    _, (gen,) = lm.generate_tokens("the movie", words=10, greedy=True)
    seq, banned = list(ids), banned_ids(lm.vocab.itos)
    with torch.no_grad():
        for _ in gen:  # the whole text again for every new token, argmax of the full log-probabilities
            lm.model.reset()
            lp = lm.model[1].log_prob(lm.model(torch.tensor([seq]))[0])[0, -1]
            lp[banned] = float("-inf")
            seq.append(int(lp.argmax()))
    assert gen == [lm.vocab.itos[i] for i in seq[len(ids):]]
    rc, out = run(["generate", pretrained[0], "the movie", "--words", "5", "--seed", "1"])
    assert rc == 0 and out.startswith("the movie"), out


def test_a_bundle_round_trips_with_the_same_log_probs(pretrained, tmp_path):
    b = read_bundle(pretrained[0])
    lm = LanguageModel.load(b.path, device="cpu")
    write_bundle(tmp_path / "copy", config=b.config, meta=b.meta, vocab=b.vocab, tokenizer=b.tokenizer,
                 weights={"model": lm.model.state_dict(), "encoder": encoder_state(lm.model)})
    again = LanguageModel.load(tmp_path / "copy", device="cpu")
    assert again.model[1].embedding is again.model[0].encoder                # still tied after loading
    x = torch.tensor([lm.encode_prompt("the movie was good and the plot")])
    with torch.no_grad():
        lm.model.reset()
        again.model.reset()
        assert torch.equal(lm.model[1].log_prob(lm.model(x)[0]), again.model[1].log_prob(again.model(x)[0]))


def test_lm_finetune_keeps_the_adaptive_softmax_and_can_extend_the_vocab(pretrained, work):
    lm_dir, _ = pretrained
    rc, out = run(["lm-finetune", work / "reviews.csv", "--pretrained", lm_dir, "--out", work / "ft", "--preset",
                   "tiny", "--epochs", "1"])
    assert rc == 0, out
    pre, ft = read_bundle(lm_dir), read_bundle(work / "ft")
    assert ft.config["arch"] == pre.config["arch"]
    assert [m["phase"] for m in ft.metrics()] == ["frozen body: embeddings + decoder", "unfrozen: all layers"]

    texts = [f"the movie with {w} was good" for w in ("apples", "pears", "plums") for _ in range(30)]
    with open(work / "fruit.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text", "split"], *([t, "valid" if i % 4 == 0 else "train"]
                                                      for i, t in enumerate(texts))])
    rc, out = run(["lm-finetune", work / "fruit.csv", "--pretrained", lm_dir, "--out", work / "ext", "--preset",
                   "tiny", "--epochs", "0", "--set", "ft_extend_vocab=2", "--set", "ft_frozen_lr=1e-12",
                   "--set", "wd=0"])
    assert rc == 0, out
    ext = read_bundle(work / "ext")
    n_old, n_new = len(pre.vocab.itos), len(ext.vocab.itos)
    assert n_new > n_old and ext.config["arch"]["adaptive_cutoffs"] == [14, 22]  # the new ids join the last cluster
    old, new = pre.load_state("model"), ext.load_state("model")
    w_old, w_new = old["1.tail.1.1.weight"], new["1.tail.1.1.weight"]
    assert w_new.shape[0] == w_old.shape[0] + n_new - n_old
    torch.testing.assert_close(w_new[:w_old.shape[0]], w_old, atol=1e-6, rtol=0)
    torch.testing.assert_close(w_new[-1], w_old.mean(0), atol=1e-6, rtol=0)


def test_classify_reads_only_the_encoder_of_an_adaptive_lm(pretrained, work):
    rc, out = run(["classify", work / "reviews.csv", "--lm", pretrained[0], "--out", work / "clas", "--preset",
                   "tiny", "--set", "ngram=off"])
    assert rc == 0, out
    clas = read_bundle(work / "clas", stage="classifier")
    assert clas.metrics() and "softmax" not in clas.arch


def _full_bundle(path, like):
    """A full-softmax LM bundle with the adaptive one's tokenizer and vocabulary."""
    arch = resolve_config("tiny").arch_dict(len(like.vocab.itos))
    model = build_lm(arch)
    write_bundle(path, config={"stage": "lm", "arch": arch, "direction": "forward",
                               "tokenizer": like.config["tokenizer"]},
                 meta={"stage": "lm"}, vocab=like.vocab, tokenizer=like.tokenizer,
                 weights={"model": model.state_dict(), "encoder": encoder_state(model)})
    return path


@pytest.mark.parametrize("case", ["finetune full as adaptive", "finetune adaptive as full", "config says full"])
def test_the_other_output_layer_is_a_one_line_error(pretrained, work, tmp_path, capsys, case):
    lm_dir, _ = pretrained
    if case == "finetune full as adaptive":
        src = _full_bundle(tmp_path / "full", read_bundle(lm_dir))
        argv = ["lm-finetune", work / "reviews.csv", "--pretrained", src, "--out", tmp_path / "o", "--preset", "tiny",
                "--set", "softmax=adaptive"]
        message = "has softmax='full' but you asked for softmax='adaptive' (architecture mismatch)"
    elif case == "finetune adaptive as full":
        argv = ["lm-finetune", work / "reviews.csv", "--pretrained", lm_dir, "--out", tmp_path / "o", "--preset",
                "tiny", "--set", "softmax=full"]
        message = "has softmax='adaptive' but you asked for softmax='full' (architecture mismatch)"
    else:  # weights of one output layer under a config.json that names the other
        shutil.copytree(read_bundle(lm_dir).path, tmp_path / "bad")
        cfg = json.loads((tmp_path / "bad" / "config.json").read_text())
        cfg["arch"]["softmax"] = "full"
        (tmp_path / "bad" / "config.json").write_text(json.dumps(cfg))
        argv = ["generate", tmp_path / "bad", "the movie"]
        message = "has an adaptive softmax output layer but the model here is built with a full softmax"
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert len(lines) <= 2 and all(ln.startswith(("error: ", "hint: ")) for ln in lines), err
    assert not (tmp_path / "o").exists()


def test_qrnn_with_an_adaptive_softmax_and_ar_tar(work):
    """AR/TAR reach the loss through fastai's RNNRegularizer (it reads the decoder's raw and dropped-out outputs);
    the whole CLI path trains and generates."""
    cfg = resolve_config("tiny", sets=["arch=qrnn", "softmax=adaptive", CUTOFFS, "alpha=2", "beta=1"])
    b_store = build_store(load_corpus(work / "reviews.csv").select(["train", "valid"]),
                          spec=TokenizerSpec(**cfg.tokenizer_spec()))
    dls = lm_dataloaders(b_store, train_splits=("train",), valid_split="valid", bs=cfg.bs, seq_len=cfg.seq_len,
                         device="cpu")
    learn, _ = make_learner(cfg, dls, b_store.vocab, "cpu")
    seen = []

    class Peek(Callback):
        order = 99  # after RNNRegularizer

        def after_loss(self):
            if self.training:
                seen.append(float(self.learn.loss_grad - self.learn.loss))
                raise CancelFitException

    learn.fit(1, cbs=[Peek()])
    assert seen and seen[0] > 0

    rc, out = run(["pretrain", work / "reviews.csv", "--out", work / "qrnn", "--preset", "tiny", "--set", "arch=qrnn",
                   "--set", "softmax=adaptive", "--set", CUTOFFS, "--set", "alpha=2", "--set", "beta=1",
                   "--epochs", "1", "--seed", "0"])
    assert rc == 0, out
    b = read_bundle(work / "qrnn")
    assert b.arch["name"] == "qrnn" and b.arch["softmax"] == "adaptive"
    assert b.metrics()[-1]["perplexity"] == pytest.approx(math.exp(b.metrics()[-1]["valid_loss"]), rel=1e-5)
    rc, out = run(["generate", work / "qrnn", "the movie", "--words", "5", "--seed", "1"])
    assert rc == 0 and out.startswith("the movie"), out
