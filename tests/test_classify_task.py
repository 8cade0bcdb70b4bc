"""Task shapes beyond one label: multi-label classification and regression, end to end (classify -> bundle ->
predict -> evaluate), their metrics against scikit-learn / scipy, the readers for the files such corpora come in,
and every bad input's one-line error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ulmfit.classify.config import resolve_config
from ulmfit.classify.metrics import average_precision, multilabel_report, regression_report
from ulmfit.classify.task import Task, detect_task, make_task, split_labels
from ulmfit.cli.main import main
from ulmfit.data import Corpus, load_corpus
from ulmfit.errors import UlmfitError

FILL = "the a this that movie film plot story acting cast scene ending director and of".split()
TRIGGERS = {"joy": "wonderful", "anger": "furious", "fear": "scary"}


def synthetic(kind: str, n: int = 600, seed: int = 0) -> Corpus:
    """Each label is triggered by its own word (multi-label); the target is 0.1 + 0.3 x the number of trigger
    words, plus a little noise (regression)."""
    rng = random.Random(seed)
    texts, labels, splits = [], [], []
    for i in range(n):
        words = [rng.choice(FILL) for _ in range(rng.randint(6, 16))]
        on = [lab for lab in TRIGGERS if rng.random() < 0.35]
        for lab in on:
            words.insert(rng.randrange(len(words)), TRIGGERS[lab])
        texts.append(" ".join(words))
        labels.append((",".join(on) or None) if kind == "multi" else f"{0.1 + 0.3 * len(on) + rng.gauss(0, 0.02):.4f}")
        splits.append("valid" if i % 5 == 0 else "test" if i % 7 == 0 else "train")
    return Corpus(texts, labels, splits, f"synthetic-{kind}")


def _train(kind: str, out: Path, seed: int = 0, **sets):
    from ulmfit.classify.train import train_classifier

    cfg = resolve_config("tiny", overrides={"from_scratch": True, "seed": seed, **sets}, epochs=8)
    return train_classifier(synthetic(kind), lm=None, out=out, config=cfg, log=lambda *_: None)


def _csv(path: Path, corpus: Corpus, split: str | None = None) -> Path:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        w.writerows((t, y or "", s) for t, y, s in zip(corpus.texts, corpus.labels, corpus.splits)
                    if split is None or s == split)
    return path


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return _train("multi", tmp_path_factory.mktemp("multi") / "run")


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    return _train("reg", tmp_path_factory.mktemp("reg") / "run", bins=[0.25, 0.55])


# ---------------------------------------------------------------------------------------------- metrics

def test_multilabel_metrics_match_scikit_learn() -> None:
    from sklearn import metrics as sk

    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < 0.3).astype(np.float32)
    y[:, 4] = 0  # a label with no positive example
    probs = np.clip(y * 0.5 + rng.random((200, 5)) * 0.6, 0, 1)
    t = [0.5, 0.4, 0.6, 0.5, 0.5]
    rep = multilabel_report(y, probs, list("abcde"), t)
    pred = (probs >= np.array(t)).astype(int)
    assert rep["micro_f1"] == pytest.approx(sk.f1_score(y, pred, average="micro", zero_division=0))
    assert rep["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
    assert rep["hamming_loss"] == pytest.approx(sk.hamming_loss(y, pred))
    assert rep["subset_accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    for j in range(4):
        assert average_precision(y[:, j], probs[:, j]) == pytest.approx(sk.average_precision_score(y[:, j], probs[:, j]))
    ties = np.round(probs[:, 0], 1)  # tied scores are grouped as scikit-learn groups them
    assert average_precision(y[:, 0], ties) == pytest.approx(sk.average_precision_score(y[:, 0], ties))
    assert rep["per_label"]["e"]["support"] == 0


def test_regression_metrics_match_scipy() -> None:
    from scipy import stats
    from sklearn import metrics as sk

    rng = np.random.default_rng(1)
    y = np.round(rng.random(300), 1)  # ties, as SST's values have
    pred = y + rng.normal(0, 0.2, 300)
    rep = regression_report(y, pred, [0.2, 0.4, 0.6, 0.8])
    assert rep["pearson"] == pytest.approx(stats.pearsonr(y, pred)[0])
    assert rep["spearman"] == pytest.approx(stats.spearmanr(y, pred)[0])
    assert rep["r2"] == pytest.approx(sk.r2_score(y, pred))
    assert rep["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    binned = np.digitize(y, [0.2, 0.4, 0.6, 0.8]) == np.digitize(pred, [0.2, 0.4, 0.6, 0.8])
    assert rep["binned_accuracy"] == pytest.approx(binned.mean())


# ---------------------------------------------------------------------------------------------- the task

@pytest.mark.parametrize("cells, kind", [
    (["pos", "neg"], "single-label"),
    (["1", "2", "5", "3"], "single-label"),  # star ratings: classes
    (["0.5", "0.25", "1"], "regression"),
    ([str(i) for i in range(40)], "regression"),  # many distinct integers: a number
    (["2,14", "27", None], "multi-label"),
    (["joy", "joy,love"], "multi-label"),
])
def test_task_is_detected_from_the_labels(cells, kind) -> None:
    assert detect_task(cells)[0] == kind


def test_label_cells_whitespace_is_ignored_and_a_stray_delimiter_is_an_error() -> None:
    assert split_labels(" joy , love", ",", "row 1") == ["joy", "love"]
    assert split_labels(None, ",", "row 1") == []
    with pytest.raises(UlmfitError, match="row 3 of the train split.*empty label"):
        make_task("multi-label", ["joy", "love", "joy,,love"], ["a", "b", "c"], delimiter=",", target="", bins=[])


def test_regression_targets_must_be_numbers_and_vary() -> None:
    with pytest.raises(UlmfitError, match=r"row 2 of the train split \('bad one'\) target 'x' is not a number"):
        make_task("regression", ["0.5", "x"], ["good", "bad one"], delimiter=",", target="v", bins=[])
    with pytest.raises(UlmfitError, match="row 1 of the train split.* has no target value"):
        make_task("regression", [None, "0.5"], ["a", "b"], delimiter=",", target="v", bins=[])
    with pytest.raises(UlmfitError, match="constant has nothing to learn"):
        make_task("regression", ["0.5", "0.5"], ["a", "b"], delimiter=",", target="v", bins=[])
    t = make_task("regression", ["1", "3"], ["a", "b"], delimiter=",", target="v", bins=[])
    assert (t.mean, t.std) == (2.0, 1.0)
    assert t.targets(["3"], "valid").tolist() == [1.0]
    assert t.outputs(np.array([[1.0]], dtype=np.float32)).tolist() == [[3.0]]


def test_bin_cut_points_are_tuned_to_undo_regression_to_the_mean() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(2000)
    pred = 0.5 + 0.5 * (y - 0.5) + rng.normal(0, 0.03, 2000)  # right order, squeezed toward the mean
    task = Task(kind="regression", labels=["v"], bins=[0.2, 0.4, 0.6, 0.8])
    cuts = task.tune_cuts(y, pred)
    at_edges = task.report(y, pred[:, None])
    tuned = task.report(y, pred[:, None], cuts)
    assert at_edges["binned_accuracy"] < 0.7 < tuned["binned_accuracy"]
    assert tuned["binned_accuracy_at_edges"] == at_edges["binned_accuracy"]
    assert cuts[0] > 0.2 and cuts[-1] < 0.8 and cuts == sorted(cuts)  # pulled in, as the predictions are
    assert [r["bin"] for r in task.records(np.array([[0.1], [0.5], [0.9]]), cuts)] == [0, 2, 4]


def test_thresholds_are_tuned_per_label() -> None:
    task = Task(kind="multi-label", labels=["a", "b"])
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    p = np.array([[0.3, 0.1], [0.35, 0.2], [0.1, 0.9], [0.05, 0.6]])
    t = task.tune_thresholds(y, p)
    assert 0.1 < t[0] <= 0.3 and 0.6 < t[1] <= 0.9


# ---------------------------------------------------------------------------------------------- readers

def test_headerless_tsv_with_a_label_names_file_reads_as_goemotions(tmp_path, capsys) -> None:
    d = tmp_path / "goemotions"
    d.mkdir()
    (d / "emotions.txt").write_text("admiration\nanger\nneutral\n")
    for split, rows in (("train", [("I love it", "0"), ("so mad", "1,2"), ("ok then", "2"), ("hm", "2")]),
                        ("dev", [("great", "0"), ("meh", "2")]), ("test", [("wow", "0,1"), ("fine", "2")])):
        (d / f"{split}.tsv").write_text("".join(f"{t}\t{y}\tid{i}\n" for i, (t, y) in enumerate(rows)))
    c = load_corpus(d, seed=0)
    assert c.select("train").labels == ["admiration", "anger,neutral", "neutral", "neutral"]
    assert c.select("valid").texts == ["great", "meh"]
    assert "no header row: text from column 1, labels from column 2" in capsys.readouterr().err


def test_a_label_id_past_the_names_file_is_an_error(tmp_path) -> None:
    d = tmp_path / "ge"
    d.mkdir()
    (d / "labels.txt").write_text("a\nb\n")
    (d / "train.tsv").write_text("some text\t5\tx1\nmore text\t0\tx2\n")
    with pytest.raises(UlmfitError, match="label '5' is not an id of the 2 label names in labels.txt"):
        load_corpus(d, seed=0)


def test_several_01_label_columns_make_label_sets(tmp_path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("text,joy,anger\nhappy day,1,0\nangry joy,1,1\nnothing,0,0\n")
    c = load_corpus(p, label_col="joy,anger", valid_pct=0)
    assert c.labels == ["joy", "joy,anger", None]
    p.write_text("text,joy,anger\nhappy day,1,maybe\n")
    with pytest.raises(UlmfitError, match="row 1: label column 'anger' holds 'maybe', not 0/1"):
        load_corpus(p, label_col="joy,anger", valid_pct=0)


def test_a_table_with_a_header_is_not_taken_for_data(tmp_path) -> None:
    p = tmp_path / "t.csv"
    p.write_text(",sentence,values\n0,good film,0.9\n1,bad film,0.1\n")
    c = load_corpus(p, valid_pct=0)
    assert c.texts == ["good film", "bad film"] and c.labels == ["0.9", "0.1"]


# ---------------------------------------------------------------------------------------------- end to end

def test_multilabel_classifier_learns_each_labels_words(multi, tmp_path) -> None:
    from ulmfit.classify.classifier import Classifier

    assert multi.task.kind == "multi-label" and multi.labels == ["anger", "fear", "joy"]
    assert multi.valid["task"] == "multi-label" and multi.valid["macro_f1"] >= 0.9
    meta = json.loads((multi.best / "meta.json").read_text())
    assert len(meta["thresholds"]) == 3 and meta["calibration"] is None
    assert (multi.best / "per-label.png").stat().st_size > 1000
    clf = Classifier.load(multi.best)
    got = clf.predict(["the film was wonderful and scary", "the plot of the movie"])
    assert got[0]["labels"] == ["fear", "joy"] and got[1]["labels"] == []
    assert set(got[0]["probs"]) == {"anger", "fear", "joy"}


def test_regression_learns_a_function_of_word_counts(reg) -> None:
    from ulmfit.classify.classifier import Classifier

    assert reg.task.kind == "regression" and reg.valid["pearson"] >= 0.9
    assert "binned_accuracy" in reg.valid and (reg.best / "scatter.png").is_file()
    clf = Classifier.load(reg.best)
    lo, hi = (r["value"] for r in clf.predict(["the plot of the movie", "wonderful furious scary film"]))
    assert lo < 0.3 < 0.7 < hi  # 0.1 with no trigger word, 1.0 with three, in the target's own units


def test_predict_and_evaluate_files_for_each_shape(multi, reg, tmp_path, capsys) -> None:
    for run, kind, first in ((multi, "multi", "labels,prob_anger,prob_fear,prob_joy"), (reg, "reg", "value,bin")):
        src = _csv(tmp_path / f"{kind}.csv", synthetic(kind))
        out = tmp_path / f"{kind}-pred.csv"
        assert main(["predict", str(run.best), "--input", str(src), "--output", str(out)]) == 0
        lines = out.read_text().splitlines()
        assert lines[0] == first and len(lines) == 601
        assert main(["predict", str(run.best), "--input", str(src), "--output", str(out)]) == 0  # ours: replaced
        jl = tmp_path / f"{kind}.jsonl"
        assert main(["predict", str(run.best), "--input", str(src), "--output", str(jl)]) == 0
        rec = json.loads(jl.read_text().splitlines()[0])
        assert set(rec) == ({"labels", "probs"} if kind == "multi" else {"value", "bin"})
        report = tmp_path / f"{kind}-report.json"
        assert main(["evaluate", str(run.best), str(src), "--split", "test", "--out", str(report)]) == 0
        d = json.loads(report.read_text())
        assert d["task"] == ("multi-label" if kind == "multi" else "regression")
        assert (tmp_path / d["plot_png"]).stat().st_size > 1000
        text = capsys.readouterr().out
        assert ("macro-F1" in text and "threshold" in text) if kind == "multi" else ("Pearson" in text and "bin 0" in text)
        assert main(["evaluate", str(run.best), str(src), "--split", "test", "--out", str(report)]) == 0  # rerun


def test_an_ensemble_of_two_multilabel_bundles_averages_them(multi, tmp_path) -> None:
    from ulmfit.classify.evaluation import evaluate

    other = _train("multi", tmp_path / "other", seed=1)
    src = synthetic("multi")
    rep = evaluate([multi.best, other.best], src, split="test")
    assert rep.ensemble is not None and rep.ensemble["macro_f1"] >= 0.9
    assert rep.ensemble["model"] == "ensemble (mean of probabilities)"


def test_mismatched_shapes_and_labels_are_refused(multi, reg, tmp_path, capsys) -> None:
    src = _csv(tmp_path / "m.csv", synthetic("multi"))
    out = tmp_path / "p.csv"
    cases = [
        (["predict", str(multi.best), str(reg.best), "--input", str(src), "--output", str(out)],
         "is a regression model but"),
        (["predict", str(reg.best), "--task", "multi-label", "--input", str(src), "--output", str(out)],
         "is a regression model, not multi-label"),
    ]
    bad = synthetic("multi")
    bad.labels[bad.splits.index("test")] = "joy,surprise"
    cases.append((["evaluate", str(multi.best), str(_csv(tmp_path / "bad.csv", bad)), "--split", "test"],
                  "label 'surprise' is not one the model knows"))
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) <= 2, err
    assert not out.exists()


@pytest.mark.parametrize("sets, message", [
    ({"class_weights": "balanced"}, "class_weights apply to single-label classifiers, not to regression"),
    ({"label_smoothing": 0.1}, "label_smoothing applies to single-label classifiers, not to regression"),
    ({"pos_weight": "balanced"}, "pos_weight applies to multi-label classifiers, not to regression"),
])
def test_options_that_cannot_apply_to_a_shape_say_so(sets, message, tmp_path) -> None:
    with pytest.raises(UlmfitError, match=message):
        _train("reg", tmp_path / "run", **sets)
    assert not (tmp_path / "run" / "model-best").exists()


def test_self_training_is_single_label_only(tmp_path) -> None:
    from ulmfit.classify.train import train_classifier

    cfg = resolve_config("tiny", overrides={"self_train": 10})
    with pytest.raises(UlmfitError, match="self-training works with single-label classifiers, not multi-label"):
        train_classifier(synthetic("multi"), lm=tmp_path / "no-lm", out=tmp_path / "run", config=cfg,
                         unlabeled=synthetic("multi"))
