"""`ulmfit classify --self-train N`: a teacher labels unlabeled texts, the surest labels are right and balanced, the
student trains on them, every artifact is written at once, and bad input is one clear error."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from test_classify import (
    NEG_RARE,
    POS_RARE,
    _pretrain,
    labelled,
    lm_corpus,
    review,
    write_csv,
)

from ulmfit.classify import resolve_config, train_classifier
from ulmfit.classify.self_train import select_confident, unlabeled_pool
from ulmfit.cli.main import main
from ulmfit.data import Corpus
from ulmfit.errors import UlmfitError


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    return _pretrain(tmp_path_factory.mktemp("lm") / "fwd", lm_corpus(), epochs=8)


def rare_reviews(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Reviews whose only sentiment word is a rare one (no labelled training text has it): (texts, truth)."""
    rng = random.Random(seed)
    texts, truth = [], []
    for i in range(n):
        pos = i % 2 == 0
        texts.append(review(rng, rng.choice(POS_RARE if pos else NEG_RARE)))
        truth.append("pos" if pos else "neg")
    return texts, truth


def test_select_confident_keeps_the_surest_of_each_predicted_class() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01], [0.3, 0.7]])
    assert select_confident(probs, 0.5).tolist() == [2, 4]  # int(6 * 0.5 / 2) = 1 per predicted class
    assert select_confident(probs, 0.75).tolist() == [0, 2, 4, 5]  # 2 per class, the surest
    lopsided = np.array([[0.9, 0.1]] * 5 + [[0.4, 0.6]])
    assert select_confident(lopsided, 1.0).tolist() == [0, 1, 2, 5]  # 3 per class at most: no class swamps


def test_the_pool_never_holds_labelled_or_test_texts() -> None:
    src = Corpus(["a", "b", "c", "d", "e", "b", "f"], ["pos", "neg", None, None, None, None, None],
                 ["train", "valid", "unsup", "test", "train", "unsup", "unsup"], "src")
    # "b" is a validation text: pseudo-labelled it would come back as training data; "d" is a test text
    assert unlabeled_pool(src, None, text_col=None) == ["c", "e", "f"]
    other = Corpus(["a", "x", "y", "x"], ["pos", None, "neg", None], ["train", "unsup", "test", "train"], "other")
    assert unlabeled_pool(src, other, text_col=None) == ["x"]  # labels ignored, test split and duplicates not
    with pytest.raises(UlmfitError, match="self-training needs unlabeled texts"):
        unlabeled_pool(src.select(["train", "valid", "test"]).select(["valid", "test"]), None, text_col=None)


def test_cli_self_training_writes_teacher_student_and_the_pseudo_labels(lm, tmp_path, capsys) -> None:
    data = labelled(40, 100, seed=3, valid_rare=True)
    src = write_csv(tmp_path / "reviews.csv", data)
    texts, truth = rare_reviews(300, seed=4)
    pool = tmp_path / "pool.csv"
    with open(pool, "w", newline="") as f:
        csv.writer(f).writerows([["text"]] + [[t] for t in texts])
    out = tmp_path / "run"
    rc = main(["classify", str(src), "--lm", str(lm), "--out", str(out), "--preset", "tiny", "--seed", "0",
               "--self-train", "200", "--self-train-keep", "0.5", "--unlabeled", str(pool)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "the teacher labels 200 of 300 unlabeled documents" in printed
    assert "kept 100 (neg 50, pos 50)" in printed
    assert f"saved to {out}/teacher/model-best" in printed and f"saved to {out}/model-best" in printed
    assert ".self-train-" not in printed  # the log names final places, never the staging directory
    assert sorted(p.name for p in out.iterdir()) == ["logs", "model-best", "model-last", "pseudo-labels.csv", "teacher"]
    assert {p.name for p in (out / "teacher").iterdir()} == {"logs", "model-best", "model-last"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    with open(out / "pseudo-labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    answer = dict(zip(texts, truth))
    assert len(rows) == 100 and all(r["text"] in answer for r in rows)
    # the surest half of the teacher's labels for reviews whose sentiment words it never saw with a label
    assert np.mean([r["label"] == answer[r["text"]] for r in rows]) >= 0.95
    meta = json.loads((out / "model-best" / "meta.json").read_text())
    st = meta["self_train"]
    assert (st["pool"], st["labelled_by_teacher"], st["kept"], st["kept_per_label"]) == (300, 200, 100,
                                                                                         {"neg": 50, "pos": 50})
    assert st["teacher"] == "teacher/model-best" and st["min_confidence"] == pytest.approx(
        min(float(r["confidence"]) for r in rows), abs=1e-4)
    real = {lab: sum(y == lab and s == "train" for y, s in zip(data.labels, data.splits)) for lab in ("neg", "pos")}
    assert meta["data"]["documents"]["train"] == {lab: n + 50 for lab, n in real.items()}  # real + pseudo
    assert sum(meta["data"]["documents"]["valid"].values()) == 100  # validation: the real labels only
    assert meta["valid"]["accuracy"] >= 0.9
    stored = json.loads((out / "model-best" / "config.json").read_text())["classifier"]
    assert (stored["self_train"], stored["self_train_keep"]) == (200, 0.5)  # the run's settings, re-runnable
    from ulmfit.classify import Classifier

    assert Classifier.load(out).predict_proba(texts[:3]).shape == (3, 2)  # the student loads as any classifier
    teacher = json.loads((out / "teacher" / "model-best" / "meta.json").read_text())
    assert "self_train" not in teacher and sum(teacher["data"]["documents"]["train"].values()) == 40


def _weights(bundle: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(bundle / "model.safetensors"))


@pytest.mark.parametrize("where", ["teacher", "student"])
def test_an_interrupted_self_training_resumes_to_the_same_student(where, lm, tmp_path, monkeypatch) -> None:
    import torch

    from ulmfit.classify import checkpoint

    data = labelled(30, 20, seed=5, valid_rare=False)
    texts, _ = rare_reviews(40, seed=6)
    src = Corpus(data.texts + texts, data.labels + [None] * 40, data.splits + ["unsup"] * 40, "partly-labelled")
    cfg = resolve_config("tiny", overrides={"self_train": 30, "seed": 0}, epochs=4)
    whole = train_classifier(src, lm=lm, out=tmp_path / "whole", config=cfg, log=lambda s: None)

    real_save = checkpoint.save

    def save_then_stop(out, **kw):  # Ctrl-C once `where` has saved its second epoch
        real_save(out, **kw)
        if Path(out).name == where and len(kw["history"]) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_classifier(src, lm=lm, out=out, config=cfg, log=lambda s: None)
    assert (out / "self-train.json").is_file() and (out / where / "checkpoint").is_dir()
    assert not (out / "model-best").exists()  # the student's bundles reach OUT only when it is done
    monkeypatch.setattr(checkpoint, "save", real_save)
    with pytest.raises(UlmfitError, match="already holds a run"):  # neither --resume nor --overwrite
        train_classifier(src, lm=lm, out=out, config=cfg, log=lambda s: None)
    other = resolve_config("tiny", overrides={"self_train": 20, "seed": 0}, epochs=4)
    with pytest.raises(UlmfitError, match="made with other data, another LM or other options"):
        train_classifier(src, lm=lm, out=out, config=other, resume=True, log=lambda s: None)

    lines: list[str] = []
    resumed = train_classifier(src, lm=lm, out=out, config=cfg, resume=True, log=lines.append)
    assert any(line.startswith("resuming from") and f"/{where}/checkpoint" in line for line in lines)
    assert any("reusing" in line for line in lines) == (where == "student")  # a finished teacher is not retrained
    assert sorted(p.name for p in out.iterdir()) == ["logs", "model-best", "model-last", "pseudo-labels.csv",
                                                     "teacher"]
    assert (out / "pseudo-labels.csv").read_text() == (tmp_path / "whole" / "pseudo-labels.csv").read_text()
    for name in ("model-best", "model-last"):
        a, b = _weights(whole.out / name), _weights(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.accuracy == whole.accuracy
    meta = json.loads((out / "model-best" / "meta.json").read_text())
    assert meta["self_train"] == json.loads((whole.out / "model-best" / "meta.json").read_text())["self_train"]


def test_an_error_before_anything_resumable_leaves_nothing(lm, tmp_path, monkeypatch) -> None:
    from ulmfit.classify import self_train as st

    data = labelled(30, 20, seed=5, valid_rare=False)
    texts, _ = rare_reviews(20, seed=6)
    src = Corpus(data.texts + texts, data.labels + [None] * 20, data.splits + ["unsup"] * 20, "partly-labelled")

    def boom(*args, **kwargs):  # the teacher fails before its first epoch ends: nothing to resume
        raise UlmfitError("the teacher could not start")

    monkeypatch.setattr(st, "fit_classifier", boom)
    with pytest.raises(UlmfitError, match="could not start"):
        train_classifier(src, lm=lm, out=tmp_path / "run", config=resolve_config("tiny", overrides={"self_train": 10}),
                         log=lambda s: None)
    assert list(tmp_path.iterdir()) == []  # no self-train.json, teacher/ or OUT left behind


def test_resume_without_an_interrupted_self_training_is_an_error(lm, tmp_path) -> None:
    data = labelled(30, 20, seed=5, valid_rare=False)
    src = Corpus(data.texts + ["spare text"], data.labels + [None], data.splits + ["unsup"], "partly-labelled")
    (tmp_path / "run").mkdir()
    with pytest.raises(UlmfitError, match="nothing to resume"):
        train_classifier(src, lm=lm, out=tmp_path / "run", config=resolve_config("tiny", overrides={"self_train": 1}),
                         resume=True, log=lambda s: None)
    assert list((tmp_path / "run").iterdir()) == []


def test_bad_self_training_options_are_one_line_errors(lm, tmp_path, capsys) -> None:
    src = write_csv(tmp_path / "reviews.csv", labelled(30, 10, seed=7, valid_rare=False))
    out = tmp_path / "out"
    cases = [
        (["--self-train", "10"], "self-training needs unlabeled texts, but reviews.csv has no unlabeled documents"),
        (["--unlabeled", str(src)], "unlabeled texts are only read for self-training"),
        (["--self-train", "10", "--self-train-keep", "0"], "self_train_keep must be in (0, 1]"),
        (["--self-train", "-1"], "self_train must be >= 0"),
        (["--self-train", "10", "--unlabeled", str(tmp_path / "none.csv")], "no such file or folder"),
    ]
    for extra, message in cases:
        assert main(["classify", str(src), "--lm", str(lm), "--out", str(out), "--preset", "tiny"] + extra) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (extra, err)
        assert not out.exists()
    assert main(["classify", str(src), "--from-scratch", "--self-train", "5", "--out", str(out),
                 "--preset", "tiny"]) == 1
    assert "does not combine with --from-scratch" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]
