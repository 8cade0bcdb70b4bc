"""`ulmfit predict` / `Classifier.predict`: formats in and out, input order, ensembles, bad input."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ulmfit.classify import Classifier
from ulmfit.classify.config import resolve_config
from ulmfit.classify.model import build_model, pad_batch
from ulmfit.classify.predict import predict_file
from ulmfit.classify.train import bundle_config, save_classifier
from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError

WORDS = ("good great fine bad awful dull the a film movie plot was is and it this acting story really quite "
         "not very boring superb").split()
ARCH = dict(emb_sz=16, n_hid=24, n_layers=2)


def make_bundle(path: Path, labels=("neg", "pos"), backwards: bool = False, seed: int = 0) -> Path:
    """A real classifier bundle with an untrained (seeded, random) network: fast, and its outputs differ from
    text to text, which is all that ordering and file-format tests need."""
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab, make_itos

    tok = TextTokenizer(TokenizerSpec(kind="rules", min_freq=1))
    vocab = Vocab(make_itos({w: 5 for w in WORDS}, min_freq=1))
    cfg = resolve_config("tiny", overrides={"backwards": backwards, "seed": seed})
    torch.manual_seed(seed)
    model = build_model(len(vocab.itos), len(labels), ARCH, cfg, pad_idx=vocab.pad_id)
    # Calibrate the head's batch norms on random documents, so probabilities vary clearly between texts.
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    rng = np.random.default_rng(seed)
    docs = sorted((rng.integers(9, len(vocab.itos), int(rng.integers(1, 60))) for _ in range(64)), key=len,
                  reverse=True)
    with torch.no_grad():
        model(torch.from_numpy(pad_batch(docs, vocab.pad_id, cfg.bptt)))
        model[1].layers[-1][-1].weight.mul_(3)
    save_classifier(path, config=bundle_config(cfg, ARCH, vocab, tok, list(labels)),
                    meta={"labels": list(labels)}, vocab=vocab, tokenizer=tok, state=model.state_dict())
    return path


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 60)))) for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("clf") / "model")


@pytest.fixture(scope="module")
def clf(model_dir) -> Classifier:
    return Classifier.load(model_dir, device="cpu")


def test_python_api_predict(clf: Classifier) -> None:
    texts = make_texts(5)
    out = clf.predict(texts)
    probs = clf.predict_proba(texts)
    assert probs.shape == (5, 2) and probs.dtype == np.float32
    assert [r["label"] for r in out] == [clf.labels[i] for i in probs.argmax(1)]
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-5 for r in out)
    assert out[0]["probs"] == pytest.approx({"neg": float(probs[0, 0]), "pos": float(probs[0, 1])})
    one = clf.predict(texts[0])  # a single string is one text
    assert len(one) == 1 and one[0]["label"] == out[0]["label"]
    assert one[0]["probs"] == pytest.approx(out[0]["probs"], abs=1e-5)


def test_file_keeps_input_order_across_sorted_batches_and_chunks(clf: Classifier, model_dir, tmp_path) -> None:
    texts = make_texts(53, seed=1)
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows([i, t] for i, t in enumerate(texts))
    res = predict_file([model_dir], src, tmp_path / "out.csv", chunk_size=7, bs=4, device="cpu")
    assert res.rows == 53
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert list(rows[0]) == ["label", "prob_neg", "prob_pos"]
    got = np.array([[float(r["prob_neg"]), float(r["prob_pos"])] for r in rows])
    alone = np.concatenate([clf.predict_proba([t]) for t in texts])  # one at a time: no sorting at all
    np.testing.assert_allclose(got, alone, atol=1e-5)
    assert np.abs(alone[:, 1] - alone[::-1, 1]).max() > 0.05  # a shuffled output would be caught
    assert [r["label"] for r in rows] == [clf.labels[i] for i in alone.argmax(1)]


@pytest.mark.parametrize("name,write", [
    ("in.tsv", lambda p, ts: p.write_text("review\tx\n" + "".join(f"{t}\t1\n" for t in ts))),
    ("in.jsonl", lambda p, ts: p.write_text("".join(json.dumps({"text": t, "n": 1}) + "\n" for t in ts))),
    ("in.txt", lambda p, ts: p.write_text("".join(t + "\n" for t in ts))),
])
def test_input_formats_cli(name, write, clf, model_dir, tmp_path) -> None:
    texts = make_texts(9, seed=2)
    src = tmp_path / name
    write(src, texts)
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out), "--device", "cpu"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in recs] == [r["label"] for r in clf.predict(texts)]
    np.testing.assert_allclose([r["probs"]["pos"] for r in recs], clf.predict_proba(texts)[:, 1], atol=1e-5)


def test_stdin_to_stdout(clf, model_dir, monkeypatch, capsys) -> None:
    texts = make_texts(4, seed=3)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts) + "\n"))
    assert main(["predict", str(model_dir), "--input", "-", "--output", "-", "--device", "cpu"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in recs] == [r["label"] for r in clf.predict(texts)]


def test_text_column_must_be_found(model_dir, tmp_path, capsys) -> None:
    src = tmp_path / "in.csv"
    src.write_text("body,other\nnice film,1\n")
    out = tmp_path / "out.csv"
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out)]) == 1
    assert "no text column" in capsys.readouterr().err
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out), "--text-col", "body"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_ensemble_is_the_mean_of_the_models(tmp_path) -> None:
    a = make_bundle(tmp_path / "fwd", seed=1)
    b = make_bundle(tmp_path / "bwd", seed=2, backwards=True)
    texts = make_texts(11, seed=4)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    predict_file([a, b], src, tmp_path / "out.jsonl", device="cpu")
    got = np.array([json.loads(x)["probs"]["pos"] for x in (tmp_path / "out.jsonl").read_text().splitlines()])
    pa, pb = (Classifier.load(m, device="cpu").predict_proba(texts) for m in (a, b))  # same device as above
    assert np.abs(pa - pb).max() > 0.01  # two genuinely different models
    np.testing.assert_allclose(got, (pa[:, 1] + pb[:, 1]) / 2, atol=1e-5)


def test_backward_model_reads_reversed_tokens(tmp_path) -> None:
    fwd = Classifier.load(make_bundle(tmp_path / "f", seed=5), device="cpu")
    bwd = Classifier.load(make_bundle(tmp_path / "b", seed=5, backwards=True), device="cpu")  # same weights
    text = "the film was good and the plot was dull"
    (ids,) = fwd.numericalize([text])
    from ulmfit.classify.model import predict_ids

    flipped = predict_ids(fwd.model, [ids[::-1].copy()], bs=1, pad_idx=1, bptt=fwd.config.bptt)
    np.testing.assert_allclose(bwd.predict_proba([text]), flipped, atol=1e-6)


def test_bad_inputs_fail_cleanly_and_write_nothing(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out.csv"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["predict", str(model_dir), "--input", str(empty), "--output", str(out)]) == 1
    assert "no texts to classify" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "good film"}\n' * 3 + "not json\n")
    assert main(["predict", str(model_dir), "--input", str(broken), "--output", str(out), "--chunk-size", "1"]) == 1
    assert "line 4 is not valid JSON" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jsonl", "empty.txt"]  # no output, no temp
    assert main(["predict", str(tmp_path / "nowhere"), "--input", str(broken), "--output", str(out)]) == 1
    assert "no model at" in capsys.readouterr().err
    assert main(["predict", str(model_dir), "--input", str(tmp_path / "missing.csv"), "--output", str(out)]) == 1
    assert "no such input file" in capsys.readouterr().err
    assert main(["predict", str(model_dir), "--input", str(broken), "--output", str(tmp_path / "o.xml")]) == 1
    assert "output format" in capsys.readouterr().err


@pytest.mark.parametrize("which, path, fmt, expect", [
    ("input", "in.csv", None, "csv"), ("input", "in.TSV", None, "tsv"), ("input", "in.ndjson", None, "jsonl"),
    ("input", "notes", None, "lines"), ("input", "-", None, "lines"), ("input", "in.csv", "lines", "lines"),
    ("input", "in.pdf", None, "name it .csv/.tsv/.jsonl/.txt or pass --input-format"),
    ("input", "in.csv", "xml", "unknown input format 'xml'"),
    ("output", "out.csv", None, "csv"), ("output", "out.json", None, "jsonl"), ("output", "-", None, "jsonl"),
    ("output", "out.txt", "csv", "csv"), ("output", "out", None, "name it .csv/.jsonl or pass --output-format"),
    ("output", "out.txt", None, "cannot tell the output format of out.txt"),
    ("output", "out.csv", "parquet", "unknown output format 'parquet'")])
def test_format_from_option_or_extension(which, path, fmt, expect) -> None:
    from ulmfit.classify import predict

    resolve = predict.input_format if which == "input" else predict.output_format
    if " " not in expect:
        assert resolve(path, fmt) == expect
        return
    with pytest.raises(UlmfitError) as e:
        resolve(path, fmt)
    assert expect in f"{e.value} {e.value.hint}"


def test_models_with_different_labels_are_refused(model_dir, tmp_path, capsys) -> None:
    other = make_bundle(tmp_path / "stars", labels=("1", "2", "3"))
    src = tmp_path / "in.txt"
    src.write_text("good film\n")
    assert main(["predict", str(model_dir), str(other), "--input", str(src), "--output", "-"]) == 1
    assert "same labels" in capsys.readouterr().err


def test_a_language_model_is_refused(tmp_path, capsys) -> None:
    from ulmfit.bundle import write_bundle
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab, make_itos

    lm = write_bundle(tmp_path / "lm", config={"direction": "forward", "arch": ARCH}, meta={"stage": "lm"},
                      vocab=Vocab(make_itos({w: 5 for w in WORDS}, min_freq=1)),
                      tokenizer=TextTokenizer(TokenizerSpec()), weights={})
    src = tmp_path / "in.txt"
    src.write_text("good film\n")
    assert main(["predict", str(lm), "--input", str(src), "--output", "-"]) == 1
    assert "holds a language model, but a classifier is needed" in capsys.readouterr().err
