"""fastai WikiText-103 checkpoints: key layouts, safe loading, vocabulary mapping, lm-finetune from one."""

from __future__ import annotations

import contextlib
import csv
import io
import pickle

import pytest
import torch

from ulmfit.bundle import read_bundle
from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError
from ulmfit.lm.model import arch_from_state, build_lm, load_lm_state, normalize_state
from ulmfit.lm.synthetic import human_numbers
from ulmfit.lm import wt103
from ulmfit.lm.wt103 import load_itos, load_pth_state, match_embeds
from ulmfit.tokenize import SPECIAL_TOKENS

SIZES = dict(emb_sz=24, n_hid=40, n_layers=2)
# the "pretrained" vocabulary: specials, numbers up to fifty (some overlap with the domain), other words
OLD_ITOS = list(SPECIAL_TOKENS) + [",", "and", "one", "two", "three", "four", "five", "hundred", "twenty",
                                   "thirty", "forty", "fifty", "cat", "dog", "house"] + ["xxfake"] * 8


def fastai_lm(vocab_size, seed=0):
    """A model exactly as fastai's `language_model_learner` builds it."""
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.text.models.core import get_language_model

    torch.manual_seed(seed)
    return get_language_model(AWD_LSTM, vocab_size, config={**awd_lstm_lm_config, **SIZES})


def v1_layout(state):
    """fastai v1 kept DropConnect's raw weight inside the LSTM module and also saved the dropped copy."""
    out = {}
    for k, v in state.items():
        if k.endswith("_raw"):
            head, name = k.rsplit(".", 1)
            out[f"{head}.module.{name}"] = v.clone()
            out[f"{head}.module.{name[:-4]}"] = v.clone()
        else:
            out[k] = v.clone()
    return out


def write_checkpoint(folder, layout="v2", direction="fwd", seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    model = fastai_lm(len(OLD_ITOS), seed)
    state = model.state_dict()
    torch.save(v1_layout(state) if layout == "v1" else state, folder / f"lstm_{direction}.pth")
    with open(folder / "itos_wt103.pkl", "wb") as f:
        pickle.dump(OLD_ITOS, f)
    return model


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_both_key_layouts_load_into_our_model(tmp_path, layout):
    ref = write_checkpoint(tmp_path, layout)
    raw = load_pth_state(tmp_path / "lstm_fwd.pth")
    if layout == "v1":
        assert "0.rnns.0.module.weight_hh_l0_raw" in raw and "1.decoder.bias" in raw
    state = normalize_state(raw)
    arch = arch_from_state(state)
    assert arch == {"vocab_size": len(OLD_ITOS), **SIZES, "out_bias": True}
    ours = build_lm({**arch, "output_p": 0.1, "hidden_p": 0.15, "input_p": 0.25, "embed_p": 0.02,
                     "weight_p": 0.2})
    load_lm_state(ours, raw, "the checkpoint")
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    x = torch.randint(0, len(OLD_ITOS), (2, 9))
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(ours(x)[0], ref(x)[0])


def test_match_embeds_maps_rows_and_uses_means_for_new_words(tmp_path):
    write_checkpoint(tmp_path)
    state = normalize_state(load_pth_state(tmp_path / "lstm_fwd.pth"))
    new_itos = list(SPECIAL_TOKENS) + ["two", "zebra", ",", "quokka", "hundred"]
    mapped, match = match_embeds(state, load_itos(tmp_path / "itos_wt103.pkl"), new_itos)
    old_w, old_b = state["0.encoder.weight"], state["1.decoder.bias"]
    new_w, new_b = mapped["0.encoder.weight"], mapped["1.decoder.bias"]
    old = {w: i for i, w in enumerate(OLD_ITOS)}
    for i, w in enumerate(new_itos):
        if w in old:
            assert torch.equal(new_w[i], old_w[old[w]]) and new_b[i] == old_b[old[w]]
        else:
            assert torch.allclose(new_w[i], old_w.mean(0)) and torch.isclose(new_b[i], old_b.mean())
    assert torch.equal(mapped["1.decoder.weight"], new_w) and mapped["0.encoder_dp.emb.weight"] is new_w
    assert (match.n_found, match.n_new, match.n_old) == (len(SPECIAL_TOKENS) + 3, len(new_itos), len(OLD_ITOS))
    assert "12/14 domain tokens" in match.describe()


def test_lm_finetune_from_a_fastai_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ULMFIT_THREADS", "1")
    ref = write_checkpoint(tmp_path / "wt103", layout="v1")
    src = tmp_path / "numbers.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "split"])
        c = human_numbers(n_docs=60, seed=2, max_start=60)
        w.writerows(zip(c.texts, c.splits))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # one frozen epoch at a negligible learning rate: the imported weights must come through unchanged
        rc = main(["lm-finetune", str(src), "--pretrained", str(tmp_path / "wt103"), "--out", str(tmp_path / "ft"),
                   "--preset", "tiny", "--epochs", "0", "--set", "ft_frozen_lr=1e-12", "--set", "wd=0"])
    out = buf.getvalue()
    assert rc == 0, out
    assert "vocabulary overlap:" in out and "found in the pretrained vocabulary of 32" in out
    b = read_bundle(tmp_path / "ft")
    assert b.config["arch"]["emb_sz"] == SIZES["emb_sz"] and b.config["arch"]["n_hid"] == SIZES["n_hid"]
    assert b.config["tokenizer"]["kind"] == "rules"
    assert b.meta["pretrained"]["kind"] == "fastai-wt103"
    overlap = b.meta["pretrained"]["overlap"]
    assert overlap["pretrained_vocab"] == len(OLD_ITOS) and 0 < overlap["found"] < overlap["domain_vocab"]
    state, old = b.load_state("model"), ref.state_dict()
    for k in old:  # LSTM weights: exactly the checkpoint's (the body was frozen)
        if k.startswith("0.rnns."):
            assert torch.equal(state[k], old[k]), k
    old_rows = {w: i for i, w in enumerate(OLD_ITOS)}
    emb = state["0.encoder.weight"]
    for i, w in enumerate(b.vocab.itos):
        want = old["0.encoder.weight"][old_rows[w]] if w in old_rows else old["0.encoder.weight"].mean(0)
        assert torch.allclose(emb[i], want, atol=1e-6), w


@pytest.mark.parametrize("setting, message", [
    ("emb_sz=64", "has emb_sz=24 but you asked for emb_sz=64 (architecture mismatch)"),
    ("tokenizer=sentencepiece", "tokenizer mismatch"),
])
def test_contradicting_the_checkpoint_is_an_error(tmp_path, capsys, setting, message):
    write_checkpoint(tmp_path / "wt103")
    rc = main(["lm-finetune", "x.csv", "--pretrained", str(tmp_path / "wt103"), "--out", str(tmp_path / "o"),
               "--preset", "tiny", "--set", setting])
    assert rc == 1 and message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_direction_of_the_checkpoint_folder(tmp_path, capsys):
    write_checkpoint(tmp_path / "bwd", direction="bwd")
    rc = main(["lm-finetune", "x.csv", "--pretrained", str(tmp_path / "bwd"), "--out", str(tmp_path / "o"),
               "--preset", "tiny"])
    assert rc == 1 and "holds a backward model (lstm_bwd.pth) but this run is forward" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_the_vocabulary_pickle_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(["xxunk", _Evil()]))
    with pytest.raises(UlmfitError, match="refusing to load posix.system|refusing to load os.system"):
        load_itos(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UlmfitError, match="not a non-empty list of strings"):
        load_itos(tmp_path / "dict.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UlmfitError, match="cannot read vocabulary"):
        load_itos(tmp_path / "junk.pkl")


def test_weights_file_is_loaded_weights_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"0.encoder.weight": _Evil()}, tmp_path / "lstm_fwd.pth")
    with pytest.raises(UlmfitError, match="weight file corrupt or not a plain state dict"):
        load_pth_state(tmp_path / "lstm_fwd.pth")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "trunc.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UlmfitError, match="trunc.pth"):
        load_pth_state(tmp_path / "trunc.pth")


def test_the_vocabulary_pickle_is_capped_in_size(tmp_path, monkeypatch):
    p = tmp_path / "itos_wt103.pkl"
    p.write_bytes(pickle.dumps(OLD_ITOS))
    size = p.stat().st_size
    assert load_itos(p, max_bytes=size) == OLD_ITOS  # exactly at the cap is fine
    with pytest.raises(UlmfitError) as e:
        load_itos(p, max_bytes=size - 1)
    assert str(e.value.message) == f"vocabulary {p} is larger than {size - 1:,} bytes: refusing to load it"
    assert e.value.hint.endswith(f"raise the limit, e.g. ULMFIT_MAX_VOCAB_BYTES={(size - 1) * 4}")
    monkeypatch.setenv("ULMFIT_MAX_VOCAB_BYTES", "100")
    with pytest.raises(UlmfitError, match="is larger than 100 bytes"):
        load_itos(p)
    monkeypatch.setenv("ULMFIT_MAX_VOCAB_BYTES", "1M")
    assert load_itos(p) == OLD_ITOS
    monkeypatch.setenv("ULMFIT_MAX_VOCAB_BYTES", "big")
    with pytest.raises(UlmfitError, match="ULMFIT_MAX_VOCAB_BYTES must be a positive number of bytes"):
        load_itos(p)
    monkeypatch.delenv("ULMFIT_MAX_VOCAB_BYTES")
    assert wt103.MAX_VOCAB_BYTES == 64 << 20 and load_itos(p) == OLD_ITOS


def test_a_too_big_vocabulary_stops_lm_finetune_with_one_line(tmp_path, monkeypatch, capsys):
    write_checkpoint(tmp_path / "wt103")
    src = tmp_path / "t.txt"
    src.write_text("one two three\nfour five\n" * 20)
    monkeypatch.setenv("ULMFIT_MAX_VOCAB_BYTES", "100")
    rc = main(["lm-finetune", str(src), "--pretrained", str(tmp_path / "wt103"), "--out", str(tmp_path / "o"),
               "--preset", "tiny"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 1
    assert [line for line in err if line.startswith("error: ")] == [
        f"error: vocabulary {tmp_path / 'wt103' / 'itos_wt103.pkl'} is larger than 100 bytes: refusing to load it"]


class _Persistent(pickle.Pickler):
    def persistent_id(self, obj):
        return "outside" if obj == "xxunk" else None


def test_the_vocabulary_pickle_admits_only_plain_data(tmp_path):
    buf = io.BytesIO()
    _Persistent(buf).dump(["xxunk", "the"])
    (tmp_path / "pid.pkl").write_bytes(buf.getvalue())
    with pytest.raises(UlmfitError, match="refusing a persistent id"):
        load_itos(tmp_path / "pid.pkl")
    # any global, however harmless, is refused: only the opcodes of lists, tuples and strings get through
    (tmp_path / "set.pkl").write_bytes(pickle.dumps(["a", frozenset({"b"})], protocol=2))
    with pytest.raises(UlmfitError, match=r"refusing to load (__builtin__|builtins)\.frozenset"):
        load_itos(tmp_path / "set.pkl")
    (tmp_path / "tuple.pkl").write_bytes(pickle.dumps(("a", "b")))
    assert load_itos(tmp_path / "tuple.pkl") == ["a", "b"]
