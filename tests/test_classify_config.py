"""The classifier config: presets, the fastai course's schedule as data, overrides and their errors."""

from __future__ import annotations

import json

import pytest

from ulmfit.classify.config import (LR_DIV, PRESETS, Stage, config_from_dict, fit_min_steps, resolve_config,
                                    ulmfit_schedule)
from ulmfit.errors import UlmfitError


def test_paper_schedule_is_the_fastai_course() -> None:
    cfg = resolve_config("paper")
    assert [(s.freeze_to, s.epochs, s.lr, s.lr_div) for s in cfg.schedule] == [
        (-1, 1, 2e-2, 1.0), (-2, 1, 1e-2, 2.6**4), (-3, 1, 5e-3, 2.6**4), (0, 2, 1e-3, 2.6**4)]
    assert cfg.moms == (0.8, 0.7, 0.8)
    assert cfg.total_epochs() == 5
    text = cfg.describe_schedule()
    assert "freeze_to(-2)" in text and "slice(0.01/2.6**4, 0.01)" in text and "unfreeze()" in text
    assert text.startswith("Gradual unfreezing schedule (5 epochs")


def test_small_trains_all_layers_at_once() -> None:
    # the small preset unfreezes every layer from the start; gradual unfreezing is one --set away
    cfg = resolve_config("small")
    assert [(s.freeze_to, s.epochs, s.lr, s.lr_div) for s in cfg.schedule] == [(0, 5, 1e-2, 2.6**4)]
    assert cfg.describe_schedule().startswith("Schedule (5 epochs")
    assert resolve_config("small", sets=["schedule=gradual"]).schedule == resolve_config("paper").schedule


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_resolves_and_round_trips(preset: str) -> None:
    cfg = resolve_config(preset)
    assert cfg.preset == preset
    assert cfg.schedule[-1].freeze_to == 0  # every preset ends with the whole model unfrozen
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_overrides_in_order_file_then_set_then_options(tmp_path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"bs": 8, "drop_mult": 0.3, "schedule": [{"freeze_to": -1, "epochs": 2, "lr": 0.1},
                                                                      {"freeze_to": 0, "epochs": 1, "lr": 0.01,
                                                                       "lr_div": 10}]}))
    cfg = resolve_config("small", config_file=f, sets=["drop_mult=0.2", "label_smoothing=0.1"],
                         overrides={"bs": 4, "seed": None})
    assert (cfg.bs, cfg.drop_mult, cfg.label_smoothing, cfg.seed) == (4, 0.2, 0.1, 42)
    assert cfg.schedule == [Stage(-1, 2, 0.1), Stage(0, 1, 0.01, 10.0)]


def test_epochs_keeps_one_per_unfreezing_stage_and_gives_the_rest_to_the_last() -> None:
    assert [s.epochs for s in resolve_config("paper", epochs=10).schedule] == [1, 1, 1, 7]
    assert [s.epochs for s in resolve_config("paper", epochs=4).schedule] == [1, 1, 1, 1]
    assert [s.epochs for s in resolve_config("small", epochs=3).schedule] == [3]
    with pytest.raises(UlmfitError, match="fewer than the schedule's 4 stages"):
        resolve_config("paper", epochs=3)


@pytest.mark.parametrize("kwargs,message", [
    (dict(preset="huge"), "unknown preset"),
    (dict(sets=["dropmult=0.1"]), "unknown config key 'dropmult'"),
    (dict(sets=["bs"]), "is not key=value"),
    (dict(sets=["bs=many"]), "config key 'bs': cannot use"),
    (dict(sets=['schedule=[{"freeze_to": -1, "epochs": 0, "lr": 0.1}]']), "at least 1"),
    (dict(sets=['schedule=[{"freeze_to": 2, "epochs": 1, "lr": 0.1}]']), "freeze_to must be negative"),
    (dict(sets=['schedule=[{"freeze": -1}]']), "unknown schedule key"),
    (dict(sets=["class_weights=heavy"]), "class_weights must be"),
    (dict(sets=["label_smoothing=1.5"]), "label_smoothing"),
    (dict(sets=["lin_ftrs=[50, 20]"]), "head_ps needs one dropout"),
    (dict(overrides={"max_train": 1}), "--max-train must be at least 2"),
    (dict(sets=["min_steps=-1"]), "min_steps must be >= 0"),
])
def test_bad_config_is_one_clear_error(kwargs, message) -> None:
    preset = kwargs.pop("preset", "small")
    with pytest.raises(UlmfitError, match=message):
        resolve_config(preset, **kwargs)


def test_config_file_errors(tmp_path) -> None:
    with pytest.raises(UlmfitError, match="config file not found"):
        resolve_config("small", config_file=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UlmfitError, match="not valid JSON"):
        resolve_config("small", config_file=bad)


def test_lr_div_is_ulmfit_two_point_six_per_layer() -> None:
    assert LR_DIV == pytest.approx(2.6**4)
    assert ulmfit_schedule()[0].lr_div == 1.0  # head only: a single learning rate


def test_schedule_by_name() -> None:
    every = resolve_config("small", sets=["schedule=all-at-once"]).schedule
    assert [(st.freeze_to, st.epochs, st.lr, st.lr_div) for st in every] == [(0, 5, 1e-2, LR_DIV)]
    assert resolve_config("small", sets=["schedule=gradual"]).schedule == ulmfit_schedule()
    assert [st.epochs for st in resolve_config("small", sets=["schedule=all-at-once"], epochs=8).schedule] == [8]
    with pytest.raises(UlmfitError, match="unknown schedule 'fast'") as e:
        resolve_config("small", sets=["schedule=fast"])
    assert "gradual, all-at-once" in e.value.hint


def test_few_labels_get_a_smaller_batch_and_a_longer_last_stage() -> None:
    # 90 training documents (IMDb with 100 labels): bs 8, stages 1, 1, 1, 9.
    cfg = resolve_config("small", sets=["schedule=gradual"])
    few, note = fit_min_steps(cfg, 90)
    assert (few.bs, [s.epochs for s in few.schedule]) == (8, [1, 1, 1, 9])
    assert (90 // few.bs) * few.total_epochs() >= cfg.min_steps
    assert note and "90 at bs 32 are 10 optimizer steps" in note and "training at bs 8 with 7 more epochs" in note
    assert [s.lr for s in few.schedule] == [s.lr for s in cfg.schedule]  # learning rates untouched
    # 1,000 labels (900 training reviews) keep the course's run; so does min_steps=0.
    assert fit_min_steps(cfg, 900) == (cfg, None)
    off = resolve_config("small", sets=["min_steps=0"])
    assert fit_min_steps(off, 90) == (off, None)
    # All at once (small's default): the one stage grows, 90 // 8 * 12 = 132 steps.
    every, _ = fit_min_steps(resolve_config("small"), 90)
    assert (every.bs, [s.epochs for s in every.schedule]) == (8, [12])
    # Halving only: bs 32 -> 16 already gives 800 // 16 * 5 = 250 steps, so no extra epochs.
    mid, _ = fit_min_steps(resolve_config("small", epochs=4), 800)
    assert (mid.bs, mid.total_epochs()) == (16, 4)
    # A batch already below 8 is not changed; only the last stage grows.
    small_bs, _ = fit_min_steps(resolve_config("small", overrides={"bs": 4}), 20)
    assert small_bs.bs == 4 and (20 // 4) * small_bs.total_epochs() >= 130
