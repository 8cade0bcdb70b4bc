"""`ulmfit suggest` and `ulmfit data merge`: the acquisition scores, the spreading of picks, the most uncertain texts
first on a tiny trained classifier, the same file twice, the labelling round trip suggest -> fill in -> merge ->
classify, the bundles left byte-identical, and bad input as one line with nothing written."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_classify import labelled, review, write_csv
from test_predict import make_bundle

from ulmfit.cli.main import main
from ulmfit.data.merge import SUGGESTION_COLUMNS, merge_labels, text_key
from ulmfit.errors import UlmfitError
from ulmfit.suggest import acquisition, disagreement, k_center, k_means, margin_scores, rank_texts, threshold_scores

# From scratch, every layer at once: the tiny preset's gradual unfreezing would keep a random encoder frozen.
SCRATCH = ["--from-scratch", "--preset", "tiny", "--set", 'schedule=[{"freeze_to": 0, "epochs": 6, "lr": 0.01}]',
           "--set", "ngram=off", "--seed", "0"]


def run(argv: list) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([str(a) for a in argv])
    return rc, buf.getvalue()


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pool_texts(n_clear: int, n_mixed: int, seed: int) -> tuple[list[str], set[str]]:
    """Reviews that say good, great, bad or awful, and reviews that say a good and a bad word at once (returned as a
    set too: a classifier of the frequent words is unsure of them)."""
    rng = random.Random(seed)
    clear = [review(rng, rng.choice(["good", "great", "bad", "awful"])) for _ in range(n_clear)]
    mixed = [review(rng, f"{rng.choice(['good', 'great'])} and {rng.choice(['bad', 'awful'])}")
             for _ in range(n_mixed)]
    texts = clear + mixed
    rng.shuffle(texts)
    return texts, set(mixed)


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny classifier from scratch on the frequent-sentiment-word task: (its bundle, its training CSV)."""
    tmp = tmp_path_factory.mktemp("clas")
    src = write_csv(tmp / "labels.csv", labelled(240, 60, seed=1, valid_rare=False))
    rc, printed = run(["classify", src, *SCRATCH, "--out", tmp / "run"])
    assert rc == 0, printed
    return tmp / "run" / "model-best", src


# ---------------------------------------------------------------------------------------------- the scores

def test_margin_threshold_and_disagreement_scores() -> None:
    assert margin_scores(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.5, 0.3]][:2])) == pytest.approx([1.0, 0.2])
    assert margin_scores(np.array([[0.2, 0.5, 0.3]])) == pytest.approx([0.8])
    # a label at its threshold is as uncertain as can be; distances are scaled on each side of the threshold
    t = [0.1, 0.5]
    assert threshold_scores(np.array([[0.1, 0.99], [0.0, 0.5], [0.55, 0.0], [1.0, 0.0]]), t) == \
        pytest.approx([1.0, 1.0, 0.5, 0.0])
    same = [np.array([[0.3, 0.7]]), np.array([[0.3, 0.7]])]
    apart = [np.array([[0.1, 0.9]]), np.array([[0.9, 0.1]])]
    assert disagreement(same, "single-label") == pytest.approx([0.0])
    assert disagreement(apart, "single-label")[0] > 0.3
    assert disagreement([np.array([[1.0], [2.0]]), np.array([[3.0], [2.0]])], "regression") == pytest.approx([1, 0])
    assert disagreement(apart, "multi-label")[0] > disagreement(same, "multi-label")[0]
    regression = SimpleNamespace(task=SimpleNamespace(kind="regression"))
    with pytest.raises(UlmfitError, match="two or more regression bundles"):
        acquisition([regression], np.zeros((2, 1)), [np.zeros((2, 1))])
    _, rule = acquisition([regression, regression], np.zeros((2, 1)), [np.zeros((2, 1))] * 2)
    assert rule.startswith("disagreement of 2 models")


def test_k_center_spreads_picks_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0]) + rng.normal(0, 0.01, (20, 3))  # one tight group of near-duplicates ...
    b = np.array([0.0, 1.0, 0.0]) + rng.normal(0, 0.01, (3, 3))   # ... and two small other ones
    c = np.array([0.0, 0.0, 1.0]) + rng.normal(0, 0.01, (3, 3))
    x = np.concatenate([a, b, c])
    picks = k_center(x, 3)
    assert picks[0] == 0 and {p // 20 for p in picks} == {0, 1} and any(p >= 23 for p in picks)
    assert k_center(x, 3) == picks
    assert sorted(k_center(x, 100)) == list(range(len(x)))  # k beyond the rows: every row once


def test_k_means_picks_the_most_typical_row_of_each_group() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    x = np.concatenate([c + rng.normal(0, 0.05, (n, 3)) for c, n in zip(centres, (20, 6, 6))])
    x[19] = [1.0, 0.6, 0.0]  # an outlier of the big group: k-center would pick it, k-means must not
    picks = k_means(x, 3)
    assert sorted(p // 20 if p < 20 else 1 + (p - 20) // 6 for p in picks) == [0, 1, 2]  # one row per group
    assert 19 not in picks
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for p in picks:  # each pick is its group's row nearest the group's mean direction
        group = range(20) if p < 20 else range(20, 26) if p < 26 else range(26, 32)
        mean = unit[list(group)].sum(0)
        assert p == max(group, key=lambda i: unit[i] @ mean)
    assert k_means(x, 3) == picks  # deterministic
    assert sorted(k_means(x, 100)) == list(range(len(x)))
    assert len(set(k_means(np.ones((10, 3)), 4))) == 4  # identical rows: empty clusters are topped up


# ---------------------------------------------------------------------------------------------- a trained model

def test_most_uncertain_texts_come_first(trained) -> None:
    from ulmfit.classify import Classifier

    bundle, _ = trained
    clf = Classifier.load(bundle, device="cpu")
    texts, mixed = pool_texts(40, 10, seed=5)
    ranking = rank_texts([clf], texts, 10, candidates=10)  # by score alone
    p = clf.predict_proba(texts)
    margin = 1 - np.abs(p[:, 0] - p[:, 1])
    assert list(ranking.order) == list(np.argsort(-margin, kind="stable")[:10])
    assert ranking.scores == pytest.approx(margin, abs=1e-6)
    top = [texts[i] for i in ranking.order]
    assert sum(t in mixed for t in top[:5]) >= 4  # a good and a bad word at once: the texts it is unsure of
    assert np.mean([ranking.scores[i] for i, t in enumerate(texts) if t in mixed]) > \
        np.mean([ranking.scores[i] for i, t in enumerate(texts) if t not in mixed]) + 0.2
    spread = rank_texts([clf], texts, 5)  # spread over the 25 highest scores; the top text always first
    assert spread.order[0] == ranking.order[0] and spread.shortlist == 25
    assert list(spread.scores[spread.order]) == sorted(spread.scores[spread.order], reverse=True)
    assert set(spread.order) <= set(np.argsort(-margin, kind="stable")[:25])
    typical = rank_texts([clf], texts, 5, spread="kmeans")
    assert len(set(typical.order)) == 5 and set(typical.order) <= set(np.argsort(-margin, kind="stable")[:25])
    assert list(rank_texts([clf], texts, 5, spread="kmeans").order) == list(typical.order)


def test_labelling_round_trip_through_merge_into_classify(trained, tmp_path) -> None:
    bundle, labels_csv = trained
    before = tree_digest(bundle.parent)
    old = read_rows(labels_csv)
    texts, _ = pool_texts(60, 15, seed=7)
    pool = write_lines(tmp_path / "pool.txt", texts + [old[0]["text"], old[1]["text"] + "  ", texts[0]])
    out = tmp_path / "to_label.csv"
    args = ["suggest", bundle, pool, "--n", "12", "--exclude", labels_csv, "--out", out]
    rc, printed = run(args)
    assert rc == 0, printed
    assert "skipped: 2 already in --exclude, 1 repeated" in printed and "ulmfit data merge" in printed
    rows = read_rows(out)
    assert tuple(rows[0]) == SUGGESTION_COLUMNS and len(rows) == 12
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 13)] and all(r["label"] == "" for r in rows)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(r["predicted"] in ("neg", "pos") for r in rows)
    assert not {text_key(r["text"]) for r in rows} & {text_key(r["text"]) for r in old}
    first = out.read_bytes()
    rc, _ = run(args)  # the same models and pool give the same file (and suggest may replace its own file)
    assert rc == 0 and out.read_bytes() == first
    assert tree_digest(bundle.parent) == before  # the classifier's run folder was only read

    # fill in: the oracle labels 9 rows, one is marked "-" (seen, no label), two are left for later
    truth = {t: ("pos" if any(w in t.split() for w in ("good", "great")) else "neg") for t in texts}
    for i, r in enumerate(rows):
        r["label"] = "" if i in (3, 7) else "-" if i == 5 else truth[r["text"]]
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=SUGGESTION_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    merged = tmp_path / "all.csv"
    rc, printed = run(["data", "merge", labels_csv, out, "--out", merged])
    assert rc == 0, printed
    assert f"{len(old) + 10:,} rows" in printed and "2 not labelled yet" in printed
    got = read_rows(merged)
    assert list(got[0]) == ["text", "label", "split"] and len(got) == len(old) + 10
    assert got[:len(old)] == [{"text": r["text"], "label": r["label"], "split": r["split"]} for r in old]
    new = got[len(old):]
    assert all(r["split"] == "train" for r in new) and sum(r["label"] == "" for r in new) == 1
    rc, printed = run(["classify", merged, *SCRATCH, "--out", tmp_path / "run2"])
    assert rc == 0, printed
    assert f"{240 + 9} train / 60 valid documents" in printed  # the 9 new labels train; the "-" row has none


def test_ensemble_ranks_by_disagreement(trained, tmp_path) -> None:
    bundle, _ = trained
    other = make_bundle(tmp_path / "random")  # same labels, its own vocabulary: an untrained model
    texts, _ = pool_texts(20, 5, seed=3)
    rc, printed = run(["suggest", bundle, other, write_lines(tmp_path / "pool.txt", texts), "--n", "4",
                       "--candidates", "4", "--out", tmp_path / "s.csv"])
    assert rc == 0, printed
    assert "by disagreement of 2 models" in printed
    rows = read_rows(tmp_path / "s.csv")
    assert len(rows) == 4 and all(float(r["score"]) >= 0 for r in rows)


def test_merge_rules(tmp_path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("text,label,split\none,pos,train\ntwo,neg,valid\nthree,,test\n", encoding="utf-8")
    b = tmp_path / "b.csv"
    b.write_text(",".join(SUGGESTION_COLUMNS) + "\n" + "four,pos,1,0.9,neg\nfive,,2,0.8,pos\n"
                 "six,-,3,0.7,pos\n\"  two \",pos,4,0.6,neg\n", encoding="utf-8")
    res = merge_labels([a, b], tmp_path / "m.csv")
    assert (res.rows, res.unfilled, res.duplicates) == (5, 1, 1)
    assert (tmp_path / "m.csv").read_text() == ("text,label,split\none,pos,train\ntwo,neg,valid\nthree,,test\n"
                                                "four,pos,train\nsix,,train\n")
    with pytest.raises(UlmfitError, match="already exists"):
        merge_labels([a, b], tmp_path / "m.csv")
    assert merge_labels([a, b], tmp_path / "m.csv", overwrite=True).rows == 5


def test_bad_inputs_are_one_line_errors_and_write_nothing(trained, tmp_path, capsys) -> None:
    bundle, labels_csv = trained
    pool = write_lines(tmp_path / "pool.txt", pool_texts(5, 2, seed=1)[0])
    notes = tmp_path / "notes.csv"
    notes.write_text("mine\n")
    cases = [
        (["suggest", bundle, pool, "--out", tmp_path / "s.txt"], "not a .csv file"),
        (["suggest", bundle, pool, "--out", notes], "already exists"),
        (["suggest", bundle, pool, "--n", "0", "--out", tmp_path / "s.csv"], "--n must be at least 1"),
        (["suggest", bundle, pool, "--n", "5", "--candidates", "2", "--out", tmp_path / "s.csv"], "fewer than --n"),
        (["suggest", bundle, pool, "--spread", "median", "--out", tmp_path / "s.csv"], "not a way to spread"),
        (["suggest", bundle, tmp_path / "missing.txt", "--out", tmp_path / "s.csv"], "no such unlabeled file"),
        (["suggest", pool, "--out", tmp_path / "s.csv"], "at least one MODEL"),
        (["suggest", bundle, labels_csv, "--exclude", labels_csv, "--out", tmp_path / "s.csv"], "no texts to rank"),
        (["data", "merge", pool, "--out", tmp_path / "m.txt"], "not a .csv file"),
        (["data", "merge", notes, "--out", notes], "already exists"),
    ]
    for argv, expected in cases:
        rc, _ = run(argv)
        err = capsys.readouterr().err
        assert rc == 1, argv
        assert expected in err, (argv, err)
        assert err.startswith("error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv", "pool.txt"]
    assert notes.read_text() == "mine\n"
