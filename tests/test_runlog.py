"""Run logs (OUT/logs/metrics.csv) and `ulmfit runs compare`, early stopping of `classify --patience`."""

from __future__ import annotations

import csv

import pytest

from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError
from ulmfit.runlog import CSV_FILE, LOG_DIR, RunLog, compare, read_log


def _log(out, values, resume=False):
    with RunLog(out, resume=resume) as log:
        for step, v in enumerate(values, 1):
            log.scalar("train_loss", v, step=step, epoch=1)
        log.epoch({"epoch": 1, "stage": 1, "valid_loss": values[-1], "accuracy": 0.5, "phase": "x"}, step=len(values))


def test_rows_are_written_read_back_and_appended_on_resume(tmp_path) -> None:
    _log(tmp_path, [3.0, 2.0, float("nan")])  # a nan is not logged (it would break every plot)
    rows = read_log(tmp_path)
    assert [(r["name"], r["step"], r["value"]) for r in rows] == [
        ("train_loss", 1, 3.0), ("train_loss", 2, 2.0)] + [("accuracy", 3, 0.5)]
    _log(tmp_path, [1.5], resume=True)
    assert len(read_log(tmp_path)) == 3 + 3 and read_log(tmp_path)[-1]["time"] >= rows[-1]["time"]
    _log(tmp_path, [1.0])  # a new run in the same OUT starts a new file
    assert len(read_log(tmp_path)) == 3


def test_a_row_cut_short_by_a_killed_run_is_skipped(tmp_path) -> None:
    _log(tmp_path, [3.0, 2.0])
    with open(tmp_path / LOG_DIR / CSV_FILE, "a") as f:
        f.write("12.5,1,1,3,train_lo")
    assert len(read_log(tmp_path)) == 4


def test_compare_draws_each_run_and_names_what_was_logged(tmp_path, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _log(a, [3.0, 2.0, 1.0])
    _log(b, [2.5, 1.5])
    assert compare([a, b], "train_loss", tmp_path / "c.png") == {str(a): 3, str(b): 2}
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UlmfitError, match="no run logged 'perplexity'.*"):
        compare([a], "perplexity", tmp_path / "d.png")
    assert main(["runs", "compare", str(a), str(tmp_path / "none"), "--out", str(tmp_path / "e.png")]) == 1
    assert "has no logs/metrics.csv" in capsys.readouterr().err
    assert main(["runs", "compare", str(a), "--metric", "train_loss", "--smooth", "2", "--x", "epoch",
                 "--out", str(tmp_path / "e.png")]) == 0
    assert not (tmp_path / "d.png").exists()


def test_classify_logs_steps_and_epochs_and_stops_early(tmp_path) -> None:
    from test_classify_task import synthetic

    from ulmfit.classify.config import resolve_config
    from ulmfit.classify.train import train_classifier

    lines = []
    cfg = resolve_config("tiny", overrides={"from_scratch": True, "patience": 1, "min_delta": 0.5}, epochs=8)
    res = train_classifier(synthetic("reg"), lm=None, out=tmp_path, config=cfg, log=lines.append)
    assert len(res.metrics) == 2  # epoch 2 did not beat epoch 1 by 0.5 of valid loss: stopped there
    assert any(line.startswith("early stopping after epoch 2: the valid loss") for line in lines)
    assert res.metrics[-1]["early_stop"]["best_epoch"] == 1
    rows = read_log(tmp_path)
    names = {r["name"] for r in rows}
    assert {"train_loss", "lr", "valid_loss", "pearson", "mae"} <= names
    steps = [r["step"] for r in rows if r["name"] == "train_loss"]
    assert steps == list(range(1, len(steps) + 1))
    with open(tmp_path / LOG_DIR / CSV_FILE) as f:
        assert next(csv.reader(f)) == ["time", "stage", "epoch", "step", "name", "value"]
    assert (tmp_path / "model-best").is_dir() and (tmp_path / LOG_DIR).is_dir()


def test_patience_must_not_be_negative() -> None:
    from ulmfit.classify.config import resolve_config

    with pytest.raises(UlmfitError, match="patience and min_delta must be >= 0"):
        resolve_config("tiny", overrides={"patience": -1})


def _weights(bundle):
    from safetensors.torch import load_file

    return load_file(str(bundle / "model.safetensors"))


@pytest.mark.parametrize("stop_after", [2, 4])  # a stage boundary (stage 3 starts), and mid-stage (4 of 6)
def test_an_interrupted_classifier_resumes_to_the_same_weights_and_metrics(stop_after, tmp_path, monkeypatch) -> None:
    import torch
    from test_classify_task import synthetic

    from ulmfit.classify import checkpoint
    from ulmfit.classify.config import resolve_config
    from ulmfit.classify.train import train_classifier

    cfg = resolve_config("tiny", overrides={"from_scratch": True, "ngram": False}, epochs=6)
    data = synthetic("multi", n=300)
    whole = train_classifier(data, lm=None, out=tmp_path / "whole", config=cfg, log=lambda *_: None)

    real_save = checkpoint.save

    def save_then_stop(out, **kw):
        real_save(out, **kw)
        if len(kw["history"]) == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(data, lm=None, out=tmp_path / "cut", config=cfg, log=lambda *_: None)
    assert (tmp_path / "cut" / "checkpoint" / "progress.json").is_file()
    assert (tmp_path / "cut" / "model-last").is_dir()
    monkeypatch.setattr(checkpoint, "save", real_save)
    lines = []
    resumed = train_classifier(data, lm=None, out=tmp_path / "cut", config=cfg, resume=True, log=lines.append)
    assert any(f"after epoch {stop_after}" in line for line in lines)
    assert not (tmp_path / "cut" / "checkpoint").exists()  # complete: the checkpoint is gone

    def plain(history):
        return [{k: v for k, v in m.items() if k != "seconds"} for m in history]

    assert plain(resumed.metrics) == plain(whole.metrics)
    a, b = _weights(whole.last), _weights(resumed.last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_log(tmp_path / "cut") if r["name"] == "train_loss"]
    assert steps == sorted(steps) and steps[-1] == whole.metrics[-1]["step"]


def test_resume_needs_a_checkpoint_and_the_same_options(tmp_path, capsys) -> None:
    from test_classify_task import _csv, synthetic

    src = _csv(tmp_path / "d.csv", synthetic("multi", n=120))
    base = ["classify", str(src), "--from-scratch", "--preset", "tiny", "--out", str(tmp_path / "run")]
    assert main([*base, "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert main([*base, "--resume", "--overwrite"]) == 1
    assert "pass one of them" in capsys.readouterr().err
    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "progress.json").write_text('{"version": 1, "made_with": "something else"}')
    assert main([*base, "--resume"]) == 1
    assert "made with other data, another LM or other options" in capsys.readouterr().err
