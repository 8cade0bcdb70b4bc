"""`ulmfit evaluate`: the numbers per model and for the ensemble, the report files, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_predict import WORDS, make_bundle, make_texts
from ulmfit.classify import Classifier, evaluate
from ulmfit.classify.metrics import classification_report
from ulmfit.cli.main import main


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return make_bundle(root / "fwd", seed=1), make_bundle(root / "bwd", seed=2, backwards=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    texts = make_texts(60, seed=7)
    rng = np.random.default_rng(7)
    labels = [str(x) for x in rng.choice(["neg", "pos"], size=60)]
    splits = ["train"] * 20 + ["test"] * 40
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        w.writerows(zip(texts, labels, splits))
    return path, texts[20:], labels[20:]


def test_single_model_numbers_match_its_predictions(models, data) -> None:
    path, texts, labels = data
    report = evaluate([models[0]], path, split="test")
    clf = Classifier.load(models[0])
    y = np.array([clf.labels.index(v) for v in labels])
    want = classification_report(y, clf.predict_proba(texts), clf.labels)
    got = report.models[0]
    assert got["documents"] == 40
    for key in ("accuracy", "error_rate", "macro_f1", "per_class", "confusion"):
        assert got[key] == pytest.approx(want[key]) if not isinstance(want[key], dict) else got[key] == want[key]
    assert report.ensemble is None and report.headline is got


def test_forward_backward_ensemble_is_reported_with_both(models, data, tmp_path, capsys) -> None:
    path, texts, labels = data
    out = tmp_path / "report.json"
    rc = main(["evaluate", str(models[0]), str(models[1]), str(path), "--split", "test", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    rep = json.loads(out.read_text())
    assert [m["direction"] for m in rep["models"]] == ["forward", "backward"]
    pa, pb = (Classifier.load(m).predict_proba(texts) for m in models)
    y = np.array([["neg", "pos"].index(v) for v in labels])
    want = classification_report(y, (pa + pb) / 2, ["neg", "pos"])
    assert rep["ensemble"]["accuracy"] == pytest.approx(want["accuracy"])
    assert rep["ensemble"]["confusion"]["matrix"] == want["confusion"]["matrix"]
    assert rep["ensemble"]["nll"] == pytest.approx(want["nll"], abs=1e-5)
    assert (pa.argmax(1) != pb.argmax(1)).any()  # the two models disagree somewhere: a real ensemble
    assert (tmp_path / "report.confusion.png").read_bytes()[:4] == b"\x89PNG"
    # the table: a row per model and one for the ensemble, per-class precision/recall, confusion matrix
    assert "ensemble (mean of probabilities)" in printed and "forward+backward" in printed
    assert "precision" in printed and "recall" in printed and "confusion" in printed
    assert f"{rep['ensemble']['accuracy']:.4f}" in printed


def test_bad_inputs(models, data, tmp_path, capsys) -> None:
    path, texts, _ = data
    stars = make_bundle(tmp_path / "stars", labels=("1", "2", "3"))
    unseen = tmp_path / "unseen.csv"
    unseen.write_text("text,label,split\n" + "".join(f"{t},{y},test\n" for t, y in
                                                      zip(texts[:6], ["neg", "pos", "meh"] * 2)))
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("text,split\n" + "".join(f"{t},test\n" for t in texts[:5]))
    lm = _lm_bundle(tmp_path / "lm")
    cases = [
        ([str(models[0]), str(stars), str(path)], "same labels"),
        ([str(models[0]), str(unseen)], "label(s) meh that the model never saw"),
        ([str(models[0]), str(unlabelled), "--split", "valid"], "has no 'valid' split (it has: test)"),
        ([str(models[0]), str(unlabelled)], "has no labels to evaluate against"),
        ([str(lm), str(path)], "holds a language model, but a classifier is needed"),
        ([str(path)], "at least one MODEL and a SRC"),
        ([str(models[0]), str(path), "--out", str(tmp_path / "report.txt")], "must name a .json file"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, message in cases:
        assert main(["evaluate", *argv, "--split", "test"] if "--split" not in argv else ["evaluate", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no report written by a failed run


def _lm_bundle(path: Path) -> Path:
    from ulmfit.bundle import write_bundle
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab, make_itos

    return write_bundle(path, config={"direction": "forward", "arch": {}}, meta={"stage": "lm"},
                        vocab=Vocab(make_itos({w: 5 for w in WORDS}, min_freq=1)),
                        tokenizer=TextTokenizer(TokenizerSpec()), weights={})


def test_report_paths_are_checked_before_the_models_are_loaded(data, tmp_path, capsys) -> None:
    """A model path that does not exist would fail at load: the --out error coming first shows the order."""
    path = data[0]
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder.json").mkdir()
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "settings"}\n')
    cases = [
        (tmp_path / "a-file" / "report.json", "a-file is a file, not a folder"),
        (tmp_path / "folder.json", "is a folder"),
        (mine, "mine.json already exists and is not an earlier output"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for out, message in cases:
        assert main(["evaluate", str(tmp_path / "no-model"), str(path), "--out", str(out)]) == 1, out
        err = capsys.readouterr().err
        assert message in err and "no model at" not in err, (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert main(["evaluate", str(tmp_path / "no-model"), str(path), "--max-chars", "-5"]) == 1
    assert "--max-chars must be 0 (no limit) or more" in capsys.readouterr().err


def test_report_replaces_only_an_earlier_report_and_its_plot(models, data, tmp_path, capsys) -> None:
    path = data[0]
    run = ["evaluate", str(models[0]), str(path), "--out"]
    out = tmp_path / "report.json"
    assert main([*run, str(out)]) == 0
    assert main([*run, str(out)]) == 0  # an earlier report and its plot: replaced
    assert json.loads(out.read_text())["plot_png"] == "report.confusion.png"
    # a user's file where the plot would go is kept, unless --overwrite
    other = tmp_path / "other.json"
    (tmp_path / "other.confusion.png").write_bytes(b"my picture")
    assert main([*run, str(other)]) == 1
    assert "other.confusion.png already exists" in capsys.readouterr().err
    assert not other.exists() and (tmp_path / "other.confusion.png").read_bytes() == b"my picture"
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "settings"}\n')
    assert main([*run, str(mine)]) == 1
    assert "pass --overwrite to replace" in capsys.readouterr().err
    assert mine.read_text() == '{"my": "settings"}\n'
    assert main([*run, str(mine), "--overwrite"]) == 0
    assert json.loads(mine.read_text())["split"] == "test"
    assert main([*run, str(other), "--overwrite"]) == 0
    assert (tmp_path / "other.confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_long_documents_are_cut_with_a_warning(models, data, capsys) -> None:
    path, texts, _ = data
    longest = max(len(t) for t in texts)
    n_long = sum(len(t) > 100 for t in texts)
    assert 0 < n_long < len(texts)
    cut = evaluate([models[0]], path, split="test", max_chars=100)
    assert f"{n_long} document(s) longer than 100 characters" in capsys.readouterr().err
    whole = evaluate([models[0]], path, split="test", max_chars=longest)
    assert "longer than" not in capsys.readouterr().err
    clf = Classifier.load(models[0])
    y = np.array([clf.labels.index(v) for v in data[2]])
    want = classification_report(y, clf.predict_proba([t[:100] for t in texts], max_chars=0), clf.labels)
    assert cut.models[0]["nll"] == pytest.approx(want["nll"], abs=1e-5)
    assert cut.models[0]["nll"] != pytest.approx(whole.models[0]["nll"], abs=1e-6)
