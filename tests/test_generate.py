"""Generation: incremental state carrying equals full recomputation, seeds, --words, xxunk, options, errors."""

from __future__ import annotations

import pytest
import torch

from ulmfit.bundle import write_bundle
from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError
from ulmfit.generate import banned_ids
from ulmfit.lm import LanguageModel
from ulmfit.lm.config import resolve_config
from ulmfit.lm.model import build_lm, encoder_state
from ulmfit.tokenize import SPECIAL_TOKENS, TokenizerSpec, build_vocab, train_tokenizer

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
TEXTS = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]


def _bundle(path, kind="rules", backwards=False, bias=None, seed=0):
    """An untrained tiny LM bundle; `bias(itos) -> {token: value}` sets decoder biases to steer sampling."""
    spec = TokenizerSpec(kind=kind, min_freq=1, sp_vocab_size=60)
    tok = train_tokenizer(spec, TEXTS * 4)
    vocab = build_vocab(tok, token_lists=tok.tokenize(TEXTS))
    torch.manual_seed(seed)
    arch = resolve_config("tiny").arch_dict(len(vocab.itos))
    model = build_lm(arch)
    with torch.no_grad():
        b = model[1].decoder.bias
        # specials that are text markers would make word counts depend on the decoder: keep them unlikely
        for t in SPECIAL_TOKENS[4:]:
            b[vocab.stoi[t]] = -30.0
        for t, v in (bias(vocab.itos) if bias else {}).items():
            b[vocab.stoi[t]] = v
    config = {"stage": "lm", "arch": arch, "direction": "backward" if backwards else "forward",
              "tokenizer": spec.to_dict()}
    write_bundle(path, config=config, meta={"stage": "lm"}, vocab=vocab, tokenizer=tok,
                 weights={"model": model.state_dict(), "encoder": encoder_state(model)})
    return path


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("gen") / "lm")


@pytest.fixture(scope="module")
def lm(lm_dir):
    return LanguageModel.load(lm_dir, device="cpu")  # these tests compare logits exactly: one device for all


def _naive_greedy(model, ids, steps, banned):
    """fastai's LMLearner.predict way: re-run the whole sequence for every new token."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            model.reset()
            logits = model(torch.tensor([seq]))[0][0, -1]
            logits[banned] = float("-inf")
            seq.append(int(logits.argmax()))
    return seq[len(ids):]


def test_carried_state_equals_full_recomputation(lm):
    ids = lm.encode_prompt("kilo lima mike")
    _, (gen,) = lm.generate_tokens("kilo lima mike", words=25, greedy=True)
    naive = _naive_greedy(lm.model, ids, len(gen), banned_ids(lm.vocab.itos))
    assert gen == [lm.vocab.itos[i] for i in naive]


def test_same_seed_same_text_and_samples_differ(lm):
    a = lm.generate("alpha bravo", words=20, samples=3, seed=7)
    b = lm.generate("alpha bravo", words=20, samples=3, seed=7)
    c = lm.generate("alpha bravo", words=20, samples=3, seed=8)
    assert a == b and a != c
    assert len(set(a)) > 1  # the samples of one call are different draws
    assert all(t.startswith("alpha bravo ") for t in a)


@pytest.mark.parametrize("n", [1, 7, 40])
def test_words_is_respected(lm, n):
    for text in lm.generate("alpha bravo", words=n, samples=2, seed=n):
        assert len(text.split()) == 2 + n


def test_words_is_respected_with_sentencepiece(tmp_path):
    sp = LanguageModel.load(_bundle(tmp_path / "sp", kind="sentencepiece"))
    for n in (3, 15):
        for text in sp.generate("alpha bravo", words=n, samples=3, seed=n):
            assert len(text.split()) == 2 + n, text


def test_xxunk_never_sampled_unless_allowed(tmp_path):
    unk = LanguageModel.load(_bundle(tmp_path / "unk", bias=lambda itos: {"xxunk": 8.0}))
    _, gens = unk.generate_tokens("alpha", words=30, samples=4, seed=0)
    assert all("xxunk" not in g for g in gens) and all(len(g) == 30 for g in gens)
    assert all("xxpad" not in g and "xxbos" not in g for g in gens)
    _, gens = unk.generate_tokens("alpha", words=30, samples=4, seed=0, allow_unk=True)
    assert any("xxunk" in g for g in gens)


def test_greedy_temperature_zero_top_k_one_and_tiny_top_p_agree(tmp_path):
    steer = LanguageModel.load(_bundle(tmp_path / "s", bias=lambda itos: {"zulu": 5.0}))
    greedy = steer.generate("alpha", words=6, greedy=True, samples=2)
    assert greedy[0] == greedy[1]
    assert greedy[0] == steer.generate("alpha", words=6, temperature=0)[0]
    assert greedy[0] == steer.generate("alpha", words=6, top_k=1, seed=3)[0]
    assert greedy[0] == steer.generate("alpha", words=6, top_p=1e-6, seed=4)[0]
    assert greedy[0] == "alpha " + " ".join(["zulu"] * 6)


def test_top_k_limits_the_choice(lm):
    ids = lm.encode_prompt("hotel")
    with torch.no_grad():
        lm.model.reset()
        logits = lm.model(torch.tensor([ids]))[0][0, -1]
    logits[banned_ids(lm.vocab.itos)] = float("-inf")
    top3 = {lm.vocab.itos[i] for i in logits.topk(3).indices.tolist()}
    _, gens = lm.generate_tokens("hotel", words=1, samples=40, top_k=3, seed=0)
    assert {g[0] for g in gens} <= top3


def test_cli_generate(lm_dir, capsys):
    rc = main(["generate", str(lm_dir), "alpha bravo", "--words", "5", "--samples", "2", "--seed", "1"])
    out = capsys.readouterr().out.strip().split("\n\n")
    assert rc == 0 and len(out) == 2 and all(len(t.split()) == 7 for t in out)
    rc = main(["generate", str(lm_dir), "alpha bravo", "--words", "5", "--samples", "2", "--seed", "1"])
    assert capsys.readouterr().out.strip().split("\n\n") == out


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-0.5"], "--temperature must be >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--top-k", "-1"], "--top-k must be >= 0"),
    (["--words", "0"], "--words must be at least 1"),
])
def test_cli_bad_options(lm_dir, capsys, args, message):
    assert main(["generate", str(lm_dir), "alpha", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize("prompt", ["", "   "])
def test_prompt_without_text(lm_dir, capsys, prompt):
    assert main(["generate", str(lm_dir), prompt]) == 1
    assert "contains no text" in capsys.readouterr().err


def test_backward_model_refuses(tmp_path, capsys):
    path = _bundle(tmp_path / "bwd", backwards=True)
    assert main(["generate", str(path), "alpha"]) == 1
    assert "backward language model" in capsys.readouterr().err
    with pytest.raises(UlmfitError, match="backward"):
        LanguageModel.load(path).generate("alpha")


def test_missing_model(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope"), "alpha"]) == 1
    assert "no model at" in capsys.readouterr().err


def test_ulmfit_load_returns_a_language_model(lm_dir):
    import ulmfit

    lm = ulmfit.load(lm_dir)
    assert isinstance(lm, LanguageModel)
    assert len(lm.generate("alpha", words=3, seed=0)[0].split()) == 4


def test_word_counter_treats_markers_and_pieces_as_the_decoder_does():
    from ulmfit.generate import WordCounter
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec

    rules = ["xxmaj", "hello", "xxrep", "3", "a", "world", "xxup", "big"]
    c = WordCounter("rules")
    for t in rules:
        c.push(t)
    decoded = TextTokenizer(TokenizerSpec(kind="rules")).decode(rules)
    assert c.words == 4 and decoded.split() == ["Hello", "aaa", "world", "BIG"]
    c = WordCounter("sentencepiece")
    for t in ["rij", "\u2581quebec", "\u2581", "jp", "\u2581", "\u2581mike", "xxmaj", "\u2581papa"]:
        c.push(t)
    assert c.words == 4  # "rij" continues the prompt's word; quebec, jp, mike, Papa
