"""scripts/bench_transfer.py: the task tables it builds from SST and GoEmotions (on tiny fake copies)."""

from __future__ import annotations

import csv
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from ulmfit.data import load_corpus

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_transfer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_transfer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_sst(folder: Path, rows: dict[str, list[tuple[str, float]]]) -> None:
    (folder / "sst").mkdir(parents=True)
    for name, split_rows in rows.items():
        with open(folder / "sst" / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", "sentence_index", "sentence", "splitset_label", "id", "values"])
            for i, (text, value) in enumerate(split_rows):
                w.writerow([i, i + 1, text, 1, 1000 + i, value])


def write_goemotions(folder: Path, rows: dict[str, list[tuple[str, str]]], names: list[str]) -> None:
    (folder / "goemotions").mkdir(parents=True)
    (folder / "goemotions" / "emotions.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    for name, split_rows in rows.items():
        lines = [f"{text}\t{ids}\tc{i}\n" for i, (text, ids) in enumerate(split_rows)]
        (folder / "goemotions" / f"{name}.tsv").write_text("".join(lines), encoding="utf-8")


@pytest.fixture
def sst(tmp_path: Path) -> Path:
    values = [0.0, 0.2, 0.4, 0.45, 0.5, 0.6, 0.61, 0.8, 1.0]  # 0.4 negative, (0.4, 0.6] dropped, 0.61 positive
    train = [(f"train sentence {i} , with `` quotes '' and commas", values[i % len(values)]) for i in range(90)]
    write_sst(tmp_path, {"train": train, "dev": [("dev good", 0.9), ("dev bad", 0.1), ("dev meh", 0.5)],
                         "test": [("test good", 0.7), ("test bad", 0.3)]})
    return tmp_path


def test_sst_thresholds_and_official_splits(bench, sst: Path):
    c = bench.read_sst(sst)
    train = c.select("train")
    assert len(train) == 90 * 6 // 9  # 0.45, 0.5 and 0.6 are dropped
    assert Counter(train.labels) == {"negative": 30, "positive": 30}
    assert dict(zip(train.texts[:3], train.labels[:3])) == {
        "train sentence 0 , with `` quotes '' and commas": "negative",
        "train sentence 1 , with `` quotes '' and commas": "negative",
        "train sentence 2 , with `` quotes '' and commas": "negative"}  # value 0.4 is negative
    assert c.select("valid").texts == ["dev good", "dev bad"]
    assert c.select("test").labels == ["positive", "negative"]


def test_low_label_cut_carves_valid_from_its_own_labels(bench, sst: Path):
    c = bench.read_sst(sst)
    cut = bench.cut_labels(c, 40, seed=3)
    assert Counter(cut.splits) == {"train": 36, "valid": 4, "test": 2}
    assert Counter(y for y, s in zip(cut.labels, cut.splits) if s == "valid") == {"negative": 2, "positive": 2}
    assert not {"dev good", "dev bad"} & set(cut.texts)  # the official dev split is not read
    assert set(cut.select(["train", "valid"]).texts) <= set(c.select("train").texts)
    assert cut.select("test").texts == c.select("test").texts
    again = bench.cut_labels(c, 40, seed=3)
    assert (again.texts, again.splits) == (cut.texts, cut.splits)


def test_goemotions_most_frequent_emotion_against_the_rest(bench, tmp_path: Path):
    names = ["joy", "anger", "neutral"]
    write_goemotions(tmp_path, {"train": [("a", "2"), ("b", "2"), ("c", "0,1"), ("d", "1,2"), ("e", "0")],
                                "dev": [("f", "2"), ("g", "1")], "test": [("h", "0,2"), ("i", "1")]}, names)
    c = bench.read_goemotions(tmp_path)  # neutral (id 2): 3 labels in train, joy and anger 2 each
    assert c.labels == ["neutral", "neutral", "other", "neutral", "other", "neutral", "other", "neutral", "other"]
    assert c.splits == ["train"] * 5 + ["valid"] * 2 + ["test"] * 2


def test_task_table_reads_back_as_ulmfit_reads_it(bench, sst: Path, tmp_path: Path):
    task = bench.make_task("sst", sst, seed=0, quick=False)
    bench.write_table(task, tmp_path / "work" / "sst.csv")
    back = load_corpus(tmp_path / "work" / "sst.csv", text_col="text", label_col="label")
    assert (back.texts, back.labels, back.splits) == (task.texts, task.labels, task.splits)
