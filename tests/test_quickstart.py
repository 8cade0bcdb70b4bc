"""`ulmfit quickstart`: every step of the pipeline runs, in seconds with --fast on a tiny local corpus."""

from __future__ import annotations

import json

import pytest

from test_classify import labelled, write_csv
from ulmfit.cli.main import main


def test_quickstart_fast_runs_every_step(tmp_path, capsys) -> None:
    src = write_csv(tmp_path / "reviews.csv", labelled(160, 60, seed=11, valid_rare=False))
    out = tmp_path / "qs"
    assert main(["quickstart", "--fast", "--src", str(src), "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    for name in ("lm/model-best/encoder.safetensors", "classifier/model-best/model.safetensors",
                 "classifier/model-last/meta.json", "report.json", "report.confusion.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "valid" and report["documents"] == 60
    # the summary table names each step, its time and where the artifacts are
    table = printed[printed.rindex("step"):]
    for row in ("data", "language model", "classifier", "evaluate", "generate", "total"):
        assert row in table
    assert f"accuracy {report['models'][0]['accuracy']:.4f}" in table and str(out / "classifier") in table
    assert "perplexity" in table
    # two generated continuations of the prompt
    generated = printed[printed.index("generate:"):printed.rindex("step")].splitlines()
    assert [ln.strip()[:3] for ln in generated if ln.strip()[:3] in ("1. ", "2. ")] == ["1. ", "2. "]
    assert "reviews.csv: 160 train, 60 valid" in table


def test_quickstart_api_returns_the_numbers(tmp_path) -> None:
    from ulmfit.quickstart import quickstart

    src = write_csv(tmp_path / "reviews.csv", labelled(160, 60, seed=12, valid_rare=False))
    res = quickstart(tmp_path / "qs", fast=True, src=str(src), seed=0, log=lambda s: None)
    meta = json.loads((res.classifier / "model-best" / "meta.json").read_text())
    assert res.accuracy == pytest.approx(meta["valid"]["accuracy"])
    assert res.perplexity is not None and res.perplexity > 1
    assert len(res.samples) == 2 and res.samples[0] != res.samples[1]
    assert set(res.seconds) == {"data", "lm", "classify", "evaluate", "generate", "total"}


def test_quickstart_classifier_keeps_the_measured_batch() -> None:
    # imdb-sample's 800 training reviews would trip the small preset's few-label rule (bs 32 -> 16); the
    # quickstart keeps bs 32, which scored better on its LM (docs/bench/imdb.md, third pass).
    from ulmfit.classify.config import fit_min_steps, resolve_config
    from ulmfit.quickstart import QUICK

    q = QUICK["small"]
    assert fit_min_steps(resolve_config("small", epochs=q["clas_epochs"]), 800)[0].bs == 16
    cfg = resolve_config("small", overrides={"min_steps": q["clas_min_steps"]}, epochs=q["clas_epochs"])
    assert fit_min_steps(cfg, 800) == (cfg, None) and cfg.bs == 32
