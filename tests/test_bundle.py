"""Bundles: round trip (identical logits), run-dir resolution, encoder for the classifier, bad files, atomicity."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ulmfit.bundle import check_direction, read_bundle, resolve_bundle, write_bundle
from ulmfit.errors import UlmfitError
from ulmfit.lm.config import resolve_config
from ulmfit.lm.model import build_lm, encoder_state
from ulmfit.tokenize import TokenizerSpec, build_vocab, train_tokenizer

TEXTS = ["the cat sat on the mat .", "a dog ran in the park !", "The cat and the dog are friends ."]


@pytest.fixture(scope="module")
def tok_vocab():
    tok = train_tokenizer(TokenizerSpec(kind="rules", min_freq=1), TEXTS)
    return tok, build_vocab(tok, token_lists=tok.tokenize(TEXTS))


def _write(path, tok, vocab, *, backwards=False, seed=0, metrics=None):
    torch.manual_seed(seed)
    arch = resolve_config("tiny").arch_dict(len(vocab.itos))
    model = build_lm(arch)
    config = {"stage": "lm", "arch": arch, "direction": "backward" if backwards else "forward",
              "tokenizer": tok.spec.to_dict(), "preset": "tiny", "seed": seed}
    meta = {"stage": "lm", "metrics": metrics or [{"epoch": 1, "train_loss": 3.0, "valid_loss": 2.5,
                                                   "accuracy": 0.3}]}
    write_bundle(path, config=config, meta=meta, vocab=vocab, tokenizer=tok,
                 weights={"model": model.state_dict(), "encoder": encoder_state(model)})
    return model


def test_round_trip_gives_identical_logits(tmp_path, tok_vocab):
    tok, vocab = tok_vocab
    model = _write(tmp_path / "b", tok, vocab)
    b = read_bundle(tmp_path / "b", stage="lm")
    again = build_lm(b.arch)
    again.load_state_dict(b.load_state("model"))
    x = torch.randint(0, len(vocab.itos), (3, 11))
    model.eval(), again.eval()
    model.reset(), again.reset()
    with torch.no_grad():
        assert torch.equal(model(x)[0], again(x)[0])
    # tied weights stay tied after loading (stored once in the file)
    assert again[1].decoder.weight is again[0].encoder.weight
    assert b.vocab.itos == vocab.itos and b.tokenizer.tokenize1("the cat") == tok.tokenize1("the cat")
    assert b.meta["versions"]["torch"] == torch.__version__ and b.meta["direction"] == "forward"
    assert (tmp_path / "b" / "training-curve.png").stat().st_size > 1000


def test_encoder_loads_into_fastais_classifier(tmp_path, tok_vocab):
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config
    from fastai.text.models.core import get_text_classifier

    tok, vocab = tok_vocab
    model = _write(tmp_path / "b", tok, vocab)
    b = read_bundle(tmp_path / "b")
    sizes = {k: b.arch[k] for k in ("emb_sz", "n_hid", "n_layers", "pad_token")}
    clas = get_text_classifier(AWD_LSTM, len(b.vocab.itos), 2, config={**awd_lstm_clas_config, **sizes})
    clas[0].module.load_state_dict(b.load_state("encoder"))
    assert torch.equal(clas[0].module.rnns[1].weight_hh_l0_raw, model[0].rnns[1].weight_hh_l0_raw)
    assert torch.equal(clas[0].module.encoder.weight, model[0].encoder.weight)


def test_run_dir_resolves_to_model_best(tmp_path, tok_vocab):
    tok, vocab = tok_vocab
    _write(tmp_path / "run" / "model-best", tok, vocab, seed=1)
    _write(tmp_path / "run" / "model-last", tok, vocab, seed=2)
    assert resolve_bundle(tmp_path / "run") == tmp_path / "run" / "model-best"
    assert read_bundle(tmp_path / "run" / "model-last").path.name == "model-last"


def test_not_a_bundle_errors(tmp_path, tok_vocab):
    with pytest.raises(UlmfitError, match="no model at"):
        read_bundle(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UlmfitError, match="not a model bundle"):
        read_bundle(tmp_path / "empty")
    tok, vocab = tok_vocab
    _write(tmp_path / "crashed" / "model-last", tok, vocab)
    with pytest.raises(UlmfitError, match="no model-best") as e:
        read_bundle(tmp_path / "crashed")
    assert "model-last" in e.value.hint
    with pytest.raises(UlmfitError, match="holds a language model, but a classifier is needed"):
        read_bundle(tmp_path / "crashed" / "model-last", stage="classifier")


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_missing_or_corrupt_weights_name_the_file(tmp_path, tok_vocab, damage):
    tok, vocab = tok_vocab
    _write(tmp_path / "b", tok, vocab)
    f = tmp_path / "b" / "model.safetensors"
    if damage == "missing":
        f.unlink()
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        f.write_bytes(b"\x00" * 64)
    with pytest.raises(UlmfitError, match="model.safetensors"):
        read_bundle(tmp_path / "b").load_state("model")
    read_bundle(tmp_path / "b").load_state("encoder")  # the other file is still fine


def test_corrupt_meta_is_an_error(tmp_path, tok_vocab):
    tok, vocab = tok_vocab
    _write(tmp_path / "b", tok, vocab)
    (tmp_path / "b" / "meta.json").write_text("{not json")
    with pytest.raises(UlmfitError, match="meta.json"):
        read_bundle(tmp_path / "b")


def test_check_direction(tmp_path, tok_vocab):
    tok, vocab = tok_vocab
    _write(tmp_path / "fwd", tok, vocab)
    _write(tmp_path / "bwd", tok, vocab, backwards=True)
    check_direction(read_bundle(tmp_path / "fwd"), backwards=False)
    check_direction(read_bundle(tmp_path / "bwd"), backwards=True)
    with pytest.raises(UlmfitError, match="is a backward model but this run is forward") as e:
        check_direction(read_bundle(tmp_path / "bwd"), backwards=False)
    assert "--backwards" in e.value.hint
    with pytest.raises(UlmfitError, match="is a forward model but this run is backward"):
        check_direction(read_bundle(tmp_path / "fwd"), backwards=True)


def test_failed_write_leaves_nothing_and_keeps_the_old_bundle(tmp_path, tok_vocab):
    tok, vocab = tok_vocab
    _write(tmp_path / "b", tok, vocab, seed=3)
    before = (tmp_path / "b" / "model.safetensors").read_bytes()
    with pytest.raises(Exception):
        write_bundle(tmp_path / "b", config={"direction": "forward"}, meta={"stage": "lm"}, vocab=vocab,
                     tokenizer=tok, weights={"model": {"w": "not a tensor"}})
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["b"]  # no temporary directory left behind


def test_no_absolute_paths_in_artifacts(tmp_path, tok_vocab):
    tok, vocab = tok_vocab
    with pytest.raises(ValueError, match="absolute path"):
        write_bundle(tmp_path / "b", config={"direction": "forward", "data": str(tmp_path)},
                     meta={"stage": "lm"}, vocab=vocab, tokenizer=tok, weights={})
    _write(tmp_path / "b", tok, vocab)
    for name in ("config.json", "meta.json"):
        assert str(tmp_path) not in (tmp_path / "b" / name).read_text()
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["stage"] == "lm"


def _tar(src, dest, arcname):
    import tarfile

    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return dest


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_shared_archive_is_a_bundle_wherever_one_is_read(tmp_path, tok_vocab, capsys):
    # ULMFiT's premise: one machine pretrains, others fine-tune. A run packed with
    # `tar czf lm.tar.gz -C models lm` is read from a .tar.gz path or a URL, extracted once into $ULMFIT_DATA/models
    tok, vocab = tok_vocab
    model = _write(tmp_path / "run" / "model-best", tok, vocab, seed=4)
    _write(tmp_path / "run" / "model-last", tok, vocab, seed=5)
    archive = _tar(tmp_path / "run", tmp_path / "imdb-lm.tar.gz", "run")
    b = read_bundle(archive, stage="lm")
    assert b.path.name == "model-best" and b.path.parent.parent.name.startswith("imdb-lm-")
    assert torch.equal(b.load_state("model")["0.encoder.weight"], model.state_dict()["0.encoder.weight"])
    assert "no published digest to check; sha256 " + _sha256(archive) in capsys.readouterr().err
    # the second read is the cache: no second extraction
    assert read_bundle(archive).path == b.path and "extracting" not in capsys.readouterr().err
    # a URL, pinned to its digest (pip's #sha256=), and an archive of the bundle folder itself
    url = archive.as_uri() + "#sha256=" + _sha256(archive)
    assert read_bundle(url).vocab.itos == vocab.itos
    single = _tar(tmp_path / "run" / "model-last", tmp_path / "last.tgz", "model-last")
    assert read_bundle(single).path.name == "model-last"
    # `ulmfit generate` (and --lm, --pretrained, predict, evaluate) take the archive as they take a folder
    from ulmfit.cli.main import main
    from ulmfit.lm.pretrained import open_pretrained  # what lm-finetune --pretrained reads

    assert open_pretrained(url, backwards=False)["bundle"].vocab.itos == vocab.itos

    assert main(["generate", str(archive), "the cat", "--words", "3", "--seed", "0"]) == 0


def test_a_damaged_or_wrong_archive_is_one_clear_error_and_leaves_nothing(tmp_path, tok_vocab, capsys):
    from ulmfit.cli.main import main
    from ulmfit.data.registry import data_dir

    tok, vocab = tok_vocab
    _write(tmp_path / "run" / "model-best", tok, vocab)
    archive = _tar(tmp_path / "run", tmp_path / "lm.tar.gz", "run")
    with pytest.raises(UlmfitError, match="checksum mismatch for lm.tar.gz"):
        read_bundle(archive.as_uri() + "#sha256=" + "0" * 64)
    with pytest.raises(UlmfitError, match="cannot read the digest 'sha1=abc'"):
        read_bundle(f"{archive}#sha1=abc")
    with pytest.raises(UlmfitError, match="cannot download models/nowhere-") as e:
        read_bundle((tmp_path / "nowhere.tar.gz").as_uri())
    assert "check the URL" in e.value.hint
    assert not (data_dir() / "models").exists() or not any((data_dir() / "models").iterdir())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no model here")
    with pytest.raises(UlmfitError, match="is not a model bundle"):
        read_bundle(_tar(tmp_path / "notes", tmp_path / "notes.tar.gz", "notes"))
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    rc = main(["generate", str(tmp_path / "broken.tar.gz"), "the cat"])
    err = capsys.readouterr().err
    assert rc != 0 and "cannot extract broken.tar.gz" in err and "Traceback" not in err
