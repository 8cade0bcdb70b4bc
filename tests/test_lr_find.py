"""`ulmfit lr-find`: on a tiny synthetic task the suggestion is finite and inside the sweep, the printed --set line
trains with it, the PNG is written whole or not at all, the bundles read are left byte-identical, and bad input
is one line with nothing written."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
from test_classify import _pretrain, labelled, lm_corpus, write_csv

from ulmfit.classify.config import resolve_config
from ulmfit.cli.main import main
from ulmfit.lr_find import END_LR, START_LR, is_lr_plot, suggestions


def run(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([str(a) for a in argv])
    return rc, buf.getvalue()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    """A tiny LM (one epoch on 400 synthetic documents: a few seconds)."""
    return _pretrain(tmp_path_factory.mktemp("lm") / "fwd", lm_corpus(400), epochs=1)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", labelled(160, 40, seed=1, valid_rare=False))


def _suggested(printed: str) -> float:
    line = next(x for x in printed.splitlines() if x.startswith("suggested lr "))
    return float(line.split()[2])


def test_classifier_sweep_suggests_a_schedule_that_classify_accepts(lm, src, tmp_path) -> None:
    before = tree_digest(lm)
    png = tmp_path / "plots" / "lr.png"
    rc, printed = run(["lr-find", "classify", src, "--lm", lm, "--out", png, "--preset", "tiny", "--seed", "0"])
    assert rc == 0, printed
    lr = _suggested(printed)
    assert math.isfinite(lr) and START_LR <= lr <= END_LR
    assert "schedule stage 1: freeze_to(-1): the head only" in printed  # the first stage's freezing, said
    # the last line is the option to train with: the first stage's lr replaced, the others as the preset has them
    line = printed.strip().splitlines()[-1]
    assert line.startswith("--set schedule=")
    cfg = resolve_config("tiny", sets=[shlex.split(line)[1]])
    assert cfg.schedule[0].lr == pytest.approx(float(f"{lr:.2g}"))
    assert [s.lr for s in cfg.schedule[1:]] == [s.lr for s in resolve_config("tiny").schedule[1:]]
    assert [s.lr_div for s in cfg.schedule] == pytest.approx([s.lr_div for s in resolve_config("tiny").schedule])
    assert is_lr_plot(png) and png.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in png.parent.iterdir()) == ["lr.png"]  # no staging file left
    assert tree_digest(lm) == before  # the LM bundle was only read
    # an earlier plot of lr-find is replaced without --overwrite; the sweep runs at the batch size training uses
    rc, printed = run(["lr-find", "classify", src, "--lm", lm, "--out", png, "--preset", "tiny", "--stage", "4",
                       "--steps", "40"])
    assert rc == 0, printed
    assert "schedule stage 4: all layers (unfreeze()), bs 16, lowest layer group at lr/10" in printed
    assert tree_digest(lm) == before


def test_lm_sweeps_name_the_field_each_phase_reads(lm, tmp_path) -> None:
    corpus = write_csv(tmp_path / "corpus.csv", labelled(200, 40, seed=2, valid_rare=False))
    before = tree_digest(lm)
    rc, printed = run(["lr-find", "lm", corpus, "--pretrained", lm, "--preset", "tiny", "--out", tmp_path / "ft.png",
                       "--steps", "60"])
    assert rc == 0, printed
    assert "phase 1, frozen body: embeddings + decoder, bs 8" in printed
    assert printed.strip().splitlines()[-1] == f"--set ft_frozen_lr={_suggested(printed):g}"
    assert tree_digest(lm) == before
    from ulmfit.lm.config import resolve_config as lm_config
    from ulmfit.lr_find import lr_find_lm

    res = lr_find_lm(str(corpus), config=lm_config("tiny"), out=tmp_path / "pre.png", steps=60, log=lambda s: None)
    assert res.key == "lr" and res.set_line == f"--set lr={float(f'{res.suggestion:.2g}')}"
    assert res.lrs[0] == pytest.approx(START_LR) and all(b > a for a, b in zip(res.lrs, res.lrs[1:]))
    assert min(res.lrs) <= res.suggestion <= max(res.lrs)
    assert is_lr_plot(tmp_path / "pre.png")


def test_suggestions_follow_fastai_on_a_known_curve() -> None:
    lrs = list(np.geomspace(1e-7, 10, 100))
    x = np.log10(lrs)
    losses = list(2 + 0.5 * np.tanh(-(x + 3)) + np.where(x > -1, (x + 1) ** 2, 0))  # falls around 1e-3, rises after
    found = suggestions(lrs, losses, 100)
    assert 1e-5 < found.steep < 1e-1 and 1e-5 < found.valley < 1e-1
    assert found.minimum == pytest.approx(lrs[int(np.argmin(losses[10:95])) + 10] / 10)


def test_bad_inputs_are_one_line_errors_and_write_nothing(lm, src, tmp_path, capsys) -> None:
    taken = tmp_path / "notes.png"
    taken.write_bytes(b"\x89PNG someone else's picture")
    common = [src, "--lm", lm, "--preset", "tiny"]
    cases = [
        (["lr-find", "classify", *common, "--out", tmp_path / "lr.txt"], "not a .png file"),
        (["lr-find", "classify", *common, "--out", taken], "already exists"),
        (["lr-find", "classify", *common, "--out", tmp_path / "a.png", "--stage", "9"], "no schedule stage 9"),
        (["lr-find", "classify", *common, "--out", tmp_path / "a.png", "--start-lr", "1", "--end-lr", "0.1"],
         "0 < --start-lr < --end-lr"),
        (["lr-find", "classify", *common, "--out", tmp_path / "a.png", "--steps", "5"], "too few"),
        (["lr-find", "classify", *common, "--out", tmp_path / "a.png", "--set", "self_train=10"], "self-training"),
        (["lr-find", "classify", src, "--preset", "tiny", "--out", tmp_path / "a.png"], "no language model given"),
        (["lr-find", "lm", src, "--pretrained", lm, "--preset", "tiny", "--stage", "3", "--out", tmp_path / "a.png"],
         "no finetune phase 3"),
        # a sweep that diverges at once has too little curve to read: an error, and no plot
        (["lr-find", "classify", *common, "--out", tmp_path / "a.png", "--start-lr", "1e4", "--end-lr", "1e9",
          "--steps", "30"], "too few to suggest"),
    ]
    for argv, expected in cases:
        rc, _ = run(argv)
        err = capsys.readouterr().err
        assert rc == 1, argv
        assert expected in err, (argv, err)
        assert err.startswith("error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png"]
    assert taken.read_bytes() == b"\x89PNG someone else's picture"
