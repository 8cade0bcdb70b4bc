"""scripts/bench_lm_transfer.py: the pretraining corpora it builds at a fixed budget (on tiny fake copies), and
scripts/bench_suggest.py --combine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from ulmfit.data import Corpus
from ulmfit.errors import UlmfitError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load(name: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def bench():
    return load("bench_lm_transfer")


def imdb(n: int = 50) -> Corpus:
    texts = [f"review {i} " + "x" * 90 for i in range(n)] + ["held out a", "held out b"]
    return Corpus(texts, [None] * len(texts), ["train"] * n + ["valid", "valid"], "imdb-lm")


def test_arms_share_one_budget_of_characters_and_the_same_valid_reviews(bench):
    corpus = imdb()
    alone = bench.arm_corpus(corpus, [], budget=1000, seed=0)
    extra = ["a reddit comment " * 5, "an sst sentence " * 5]
    mix = bench.arm_corpus(corpus, extra, budget=1000, seed=0)
    for c in (alone, mix):
        train = [t for t, s in zip(c.texts, c.splits) if s == "train"]
        assert 1000 <= sum(map(len, train)) < 1000 + 100  # the budget, overshot by at most one review
        assert [t for t, s in zip(c.texts, c.splits) if s == "valid"] == ["held out a", "held out b"]
    assert mix.texts[:2] == extra  # all of the extra text, then IMDb reviews
    assert len([t for t in mix.texts if t.startswith("review")]) < len([t for t in alone.texts if t.startswith("review")])
    again = bench.arm_corpus(corpus, [], budget=1000, seed=0)
    assert again.texts == alone.texts  # seeded


def test_mix_reads_only_train_text(bench, tmp_path: Path):
    (tmp_path / "goemotions").mkdir()
    (tmp_path / "sst").mkdir()
    (tmp_path / "goemotions" / "train.tsv").write_text("go train\t1\tc1\n", encoding="utf-8")
    (tmp_path / "goemotions" / "test.tsv").write_text("go test\t1\tc2\n", encoding="utf-8")
    (tmp_path / "sst" / "train.csv").write_text("sentence,values\nsst train,0.5\n", encoding="utf-8")
    (tmp_path / "sst" / "test.csv").write_text("sentence,values\nsst test,0.5\n", encoding="utf-8")
    assert bench.mix_texts(tmp_path) == ["go train", "sst train"]


def test_arm_words(bench):
    arm = bench.parse_arm(["q", "corpus=mix", "scale=1.5", "preset=small-qrnn", "softmax=adaptive"])
    assert (arm["corpus"], arm["scale"], arm["preset"], arm["sets"]) == ("mix", 1.5, "small-qrnn", ["softmax=adaptive"])
    with pytest.raises(SystemExit):
        bench.parse_arm(["bad", "corpus=wiki"])


def suggest_report(path: Path, seed: int, arms: dict[str, list[float]]) -> Path:
    curves = {arm: [{"labels": 100 * (i + 1), "accuracy": a} for i, a in enumerate(acc)] for arm, acc in arms.items()}
    report = {"lm": "lm", "preset": "small", "pool": 2000, "test": 1000,
              "runs": [{"seed": seed, "pool": 2000, "start": [], "curves": curves, "picks": {a: [] for a in arms}}]}
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def test_suggest_combine_merges_seeds_and_arms(tmp_path: Path, capsys):
    bench = load("bench_suggest")
    old = suggest_report(tmp_path / "a.json", 0, {"random": [0.7, 0.8, 0.9], "suggest": [0.7, 0.75, 0.8]})
    new = suggest_report(tmp_path / "b.json", 0, {"kmeans": [0.7, 0.9, 0.95]})
    other = suggest_report(tmp_path / "c.json", 1, {"random": [0.6, 0.7, 0.8], "kmeans": [0.6, 0.8, 0.8]})
    assert bench.main(["--combine", str(old), str(new), str(other), "--work", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]
    assert summary["seeds"] == {"random": [0, 1], "kcenter": [0], "kmeans": [0, 1]}  # "suggest" read as kcenter
    assert summary["mean_accuracy"]["kmeans"] == [0.65, 0.85, 0.875]
    assert summary["target"] == 0.85
    assert summary["suggest_labels_to_target"]["kmeans"] == 200.0 and summary["goal_met"]["kmeans"]
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    lone = suggest_report(tmp_path / "d.json", 2, {"kmeans": [0.5, 0.6, 0.7]})
    with pytest.raises(UlmfitError, match="random arm"):
        bench.combine([lone])
