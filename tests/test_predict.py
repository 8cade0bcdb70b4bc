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
from ulmfit.classify.artifact import bundle_config, save_classifier
from ulmfit.classify.config import resolve_config
from ulmfit.classify.model import build_model, pad_batch
from ulmfit.classify.predict import predict_file
from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError

WORDS = ("good great fine bad awful dull the a film movie plot was is and it this acting story really quite "
         "not very boring superb").split()
ARCH = dict(emb_sz=16, n_hid=24, n_layers=2)


def make_bundle(path: Path, labels=("neg", "pos"), backwards: bool = False, seed: int = 0, arch=ARCH,
                temperature: float | None = None, ngram_weight: float | None = None, task=None) -> Path:
    """A real classifier bundle with an untrained (seeded, random) network: fast, and its outputs differ from
    text to text, which is all that ordering and file-format tests need. Optionally a calibration temperature, an
    n-gram model with its weight, and a task shape (`ulmfit.classify.task.Task`)."""
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab, make_itos

    tok = TextTokenizer(TokenizerSpec(kind="rules", min_freq=1))
    vocab = Vocab(make_itos({w: 5 for w in WORDS}, min_freq=1))
    cfg = resolve_config("tiny", overrides={"backwards": backwards, "seed": seed})
    n_out = 1 if task is not None and task.kind == "regression" else len(labels)
    torch.manual_seed(seed)
    model = build_model(len(vocab.itos), n_out, arch, cfg, pad_idx=vocab.pad_id)
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
        model(torch.from_numpy(pad_batch(docs, vocab.pad_id, cfg.seq_len)))
        model[1].layers[-1][-1].weight.mul_(3)
    meta = {"labels": list(labels)}
    if temperature is not None:
        meta["calibration"] = {"temperature": temperature}
    if ngram_weight is not None:
        meta["ngram"] = {"weight": ngram_weight}
    save_classifier(path, config=bundle_config(cfg, arch, vocab, tok, list(labels), task), meta=meta, vocab=vocab,
                    tokenizer=tok, state=model.state_dict())
    if ngram_weight is not None:
        from ulmfit.classify.ngram import fit_ngram

        texts = make_texts(30, seed=seed + 1)
        fit_ngram(texts, [labels[i % len(labels)] for i in range(30)], list(labels), seed=seed).save(path)
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

    flipped = predict_ids(fwd.model, [ids[::-1].copy()], bs=1, pad_idx=1, seq_len=fwd.config.seq_len)
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


# ------------------------------------------------------------------------------------- long and odd input

def _long_text(n_chars: int, seed: int = 0) -> str:
    """Review-like text (capitals, punctuation, repeats) of exactly `n_chars` characters, on one line."""
    rng = np.random.default_rng(seed)
    words = [*WORDS, "Great", "AWFUL", "film.", "(really)", "it's", "don't", "!!!", "<br />", "I", ":)"]
    text = ""
    while len(text) < n_chars:
        text += " ".join(rng.choice(words, size=200)) + " "
    return text[:n_chars]


def test_time_is_linear_in_document_length(clf) -> None:
    """Ten times the text takes about ten times as long (tokenizer and encoder); a quadratic step would show as
    ~100x. CPU time of this process, best of a few runs, so other processes on the machine matter little."""
    import time

    def cpu_seconds(text: str, runs: int) -> float:
        best = float("inf")
        for _ in range(runs):
            t = time.process_time()
            clf.predict_proba([text], max_chars=0)
            best = min(best, time.process_time() - t)
        return best

    short, long = _long_text(4_000, seed=1), _long_text(40_000, seed=2)
    cpu_seconds(short, 1)  # warm-up: tokenizer caches, kernels
    ratio = cpu_seconds(long, 2) / cpu_seconds(short, 5)
    assert ratio < 25, f"10x longer text took {ratio:.1f}x as long"


def test_long_documents_are_cut_to_max_chars_with_a_warning(clf, model_dir, tmp_path, capsys) -> None:
    texts = [_long_text(300, seed=3), "the film was good", _long_text(120, seed=4)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out), "--max-chars", "100"]) == 0
    err = capsys.readouterr().err
    assert "warning: in.txt: 2 document(s) longer than 100 characters were classified from their first 100" in err
    got = [json.loads(line)["probs"]["pos"] for line in out.read_text().splitlines()]
    cut = clf.predict_proba([t[:100] for t in texts], max_chars=0)[:, 1]
    np.testing.assert_allclose(got, cut, atol=1e-5)
    whole = clf.predict_proba(texts, max_chars=0)[:, 1]
    assert abs(whole[0] - cut[0]) > 1e-4  # the limit did change what was read
    # 0 lifts the limit: every document read whole, no warning
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out), "--max-chars", "0"]) == 0
    assert "longer than" not in capsys.readouterr().err
    np.testing.assert_allclose([json.loads(x)["probs"]["pos"] for x in out.read_text().splitlines()], whole, atol=1e-5)
    # the Python API has the same limit (default MAX_CHARS), reported as a UserWarning
    with pytest.warns(UserWarning, match=r"1 document\(s\) longer than 100 characters.*max_chars=0"):
        np.testing.assert_allclose(clf.predict_proba(texts[:2], max_chars=100)[:, 1], cut[:2], atol=1e-6)
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out), "--max-chars", "-1"]) == 1
    assert "--max-chars must be 0 (no limit) or more" in capsys.readouterr().err


def test_input_that_is_not_utf8_is_read_with_a_warning(clf, model_dir, tmp_path, capsys) -> None:
    src = tmp_path / "latin1.txt"
    src.write_bytes("the film was good\n".encode() + "caf\u00e9 plot was dull\n".encode("latin-1") +
                    b"\xff\xfe awful acting\n")
    out = tmp_path / "out.csv"
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: latin1.txt: 2 document(s) had bytes that are not UTF-8; they were replaced by U+FFFD" in err
    rows = list(csv.DictReader(open(out)))
    texts = src.read_bytes().decode("utf-8", errors="replace").splitlines()
    np.testing.assert_allclose([float(r["prob_pos"]) for r in rows], clf.predict_proba(texts)[:, 1], atol=1e-5)
    # a UTF-8 file holding a real U+FFFD is not warned about
    src.write_text("the film \ufffd was good\n", encoding="utf-8")
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(out)]) == 0
    assert "not UTF-8" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the output file

def test_unwritable_output_fails_before_the_model_is_loaded(tmp_path, capsys) -> None:
    """A model path that does not exist would fail at load: the output error coming first shows the order."""
    src = tmp_path / "in.txt"
    src.write_text("good film\n")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder.csv").mkdir()
    cases = [
        (tmp_path / "a-file" / "out.csv", "a-file is a file, not a folder"),
        (tmp_path / "folder.csv", "is a folder"),
        (Path("/dev/null"), "is not a regular file"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for out, message in cases:
        argv = ["predict", str(tmp_path / "no-model"), "--input", str(src), "--output", str(out),
                "--output-format", "csv"]
        assert main(argv) == 1, out
        err = capsys.readouterr().err
        assert message in err and "no model at" not in err, (out, err)
        assert len(err.strip().splitlines()) == 2  # error + hint, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not any((tmp_path / "folder.csv").iterdir())


def test_an_existing_file_is_replaced_only_if_predict_wrote_it(model_dir, tmp_path, capsys) -> None:
    src = tmp_path / "in.txt"
    src.write_text("good film\nbad plot\n")
    mine = tmp_path / "notes.csv"
    mine.write_text("id,comment\n1,keep me\n")
    run = ["predict", str(model_dir), "--input", str(src), "--output"]
    assert main([*run, str(mine)]) == 1
    err = capsys.readouterr().err
    assert "notes.csv already exists and is not an earlier output" in err and "--overwrite to replace" in err
    assert mine.read_text() == "id,comment\n1,keep me\n"
    assert main([*run, str(mine), "--overwrite"]) == 0
    assert mine.read_text().startswith("label,prob_neg,prob_pos\n")
    # earlier outputs (CSV or JSONL, whichever format is written now) and empty files are replaced as they are
    for name in ("earlier.csv", "earlier.jsonl"):
        assert main([*run, str(tmp_path / name)]) == 0
        assert main([*run, str(tmp_path / name), "--output-format", "jsonl"]) == 0
        assert json.loads((tmp_path / name).read_text().splitlines()[1])["label"] in ("neg", "pos")
    (tmp_path / "empty.csv").write_text("")
    assert main([*run, str(tmp_path / "empty.csv")]) == 0
    capsys.readouterr()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("content, ours", [
    ("label,prob_neg,prob_pos\npos,0.1,0.9\n", True),
    ('{"label": "pos", "probs": {"neg": 0.1, "pos": 0.9}}\n', True),
    ("label,score\npos,0.9\n", False),
    ('{"label": "pos"}\n', False),
    ("[1, 2]\n", False),
    ("text\ngood film\n", False),
])
def test_what_counts_as_an_earlier_prediction_file(content, ours, tmp_path) -> None:
    from ulmfit.classify.predict import is_prediction_file

    path = tmp_path / "f"
    path.write_text(content)
    assert is_prediction_file(path) is ours
