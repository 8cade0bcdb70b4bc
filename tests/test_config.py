"""The one config engine (ulmfit.config): every stage's presets, the same `--set` spelling on every command, and
help texts that mention only what the command has."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import typer

from ulmfit import config as engine
from ulmfit.classify import config as clas
from ulmfit.cli import main as cli
from ulmfit.errors import UlmfitError
from ulmfit.lm import config as lm

STAGES = {"lm": lm, "classifier": clas}
TRAINING_COMMANDS = ("pretrain", "lm-finetune", "classify")


def _resolve(stage: str, **kwargs):
    return STAGES[stage].resolve_config(**kwargs)


@pytest.mark.parametrize("stage, preset", [(s, p) for s, mod in STAGES.items() for p in mod.PRESETS])
def test_every_preset_of_every_stage_resolves_and_validates(stage: str, preset: str) -> None:
    mod = STAGES[stage]
    assert set(mod.PRESETS[preset]) <= set(mod.field_names())
    cfg = mod.resolve_config(preset)
    mod.validate(cfg)
    # Resolving is deterministic and a preset is plain data: the same preset gives an equal config again.
    assert dataclasses.asdict(mod.resolve_config(preset)) == dataclasses.asdict(cfg)


def test_both_stages_have_the_same_presets() -> None:
    # `--preset small` on classify --from-scratch takes the LM preset of the same name.
    assert list(lm.PRESETS) == list(clas.PRESETS)


def test_presets_hold_no_experiment_figures() -> None:
    for mod in STAGES.values():
        source = Path(mod.__file__).read_text(encoding="utf-8")
        block = source[source.index("PRESETS: dict"):]
        block = block[:block.index("\n}\n")]
        assert not re.search(r"\d%|seeds?\b|pass\b|docs/bench|bits/char|perplexity \d", block), mod.__name__


@pytest.mark.parametrize("spelling, value", [(s, True) for s in ("true", "True", "on", "yes", "1")]
                         + [(s, False) for s in ("false", "OFF", "no", "0")])
def test_booleans_are_spelled_the_same_for_every_stage(spelling: str, value: bool) -> None:
    assert _resolve("lm", preset="tiny", sets=[f"tie_weights={spelling}"]).tie_weights is value
    assert _resolve("classifier", preset="tiny", sets=[f"calibrate={spelling}"]).calibrate is value
    assert _resolve("classifier", preset="tiny", sets=[f"backwards={spelling}"]).backwards is value


def test_a_bad_boolean_is_the_same_error_for_every_stage() -> None:
    for stage, key in (("lm", "tie_weights"), ("classifier", "calibrate")):
        with pytest.raises(UlmfitError, match=f"config key '{key}': cannot use 'maybe' \\(expected bool\\)"):
            _resolve(stage, preset="tiny", sets=[f"{key}=maybe"])


@pytest.mark.parametrize("stage", list(STAGES))
def test_floats_lists_and_shared_keys_mean_the_same(stage: str) -> None:
    cfg = _resolve(stage, preset="tiny", sets=["drop_mult=3e-1", "wd=1e-2", "moms=0.9,0.8,0.9"])
    assert (cfg.drop_mult, cfg.wd, tuple(cfg.moms)) == (0.3, 0.01, (0.9, 0.8, 0.9))
    same = _resolve(stage, preset="tiny", sets=["drop_mult=0.3", "wd=0.01", "moms=[0.9, 0.8, 0.9]"])
    assert dataclasses.asdict(same) == dataclasses.asdict(cfg)
    assert _resolve(stage, preset="tiny", sets=["bs=1e1"]).bs == 10  # an integral number is an int
    with pytest.raises(UlmfitError, match="config key 'bs': cannot use '2.5' \\(expected int\\)"):
        _resolve(stage, preset="tiny", sets=["bs=2.5"])


def test_lists_and_optional_values() -> None:
    cfg = _resolve("classifier", preset="tiny", sets=["lin_ftrs=50,20", "head_ps=[0.1, 0.2]", "max_train=100"])
    assert (cfg.lin_ftrs, cfg.head_ps, cfg.max_train) == ([50, 20], [0.1, 0.2], 100)
    for none in ("none", "null", "None"):
        assert _resolve("classifier", preset="tiny", sets=["max_train=100", f"max_train={none}"]).max_train is None
    assert _resolve("classifier", preset="tiny", sets=["class_weights=1,3"]).class_weights == [1.0, 3.0]
    assert _resolve("classifier", preset="tiny", sets=["class_weights=[1, 3]"]).class_weights == [1.0, 3.0]


@pytest.mark.parametrize("stage", list(STAGES))
def test_unknown_keys_are_one_error_that_lists_the_valid_keys(stage: str, tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"nosuch": 1}))
    for kwargs, where in ((dict(sets=["nosuch=1"]), "--set"), (dict(config_file=f), "c.json"),
                          (dict(overrides={"nosuch": 1}), "options")):
        with pytest.raises(UlmfitError) as e:
            _resolve(stage, preset="tiny", **kwargs)
        assert e.value.message == f"unknown config key 'nosuch' in {where}"
        assert e.value.hint == "valid keys: " + ", ".join(STAGES[stage].field_names())


@pytest.mark.parametrize("stage", list(STAGES))
def test_config_file_values_are_converted_as_set_values(stage: str, tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"drop_mult": 0.3, "moms": [0.9, 0.8, 0.9], "precision": "fp32"}))
    from_file = _resolve(stage, preset="tiny", config_file=f)
    from_set = _resolve(stage, preset="tiny", sets=["drop_mult=0.3", "moms=0.9,0.8,0.9", "precision=fp32"])
    assert dataclasses.asdict(from_file) == dataclasses.asdict(from_set)
    missing, bad = tmp_path / "missing.json", tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UlmfitError, match="config file not found"):
        _resolve(stage, preset="tiny", config_file=missing)
    with pytest.raises(UlmfitError, match="cannot read config file .*not valid JSON"):
        _resolve(stage, preset="tiny", config_file=bad)


def test_resolution_order_is_the_same_for_every_stage(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"drop_mult": 0.1, "wd": 0.2}))
    for stage in STAGES:
        cfg = _resolve(stage, preset="tiny", config_file=f, sets=["wd=0.3", "bs=4"], overrides={"bs": 2})
        assert (cfg.drop_mult, cfg.wd, cfg.bs) == (0.1, 0.3, 2), stage  # file < --set < explicit options


def test_halve_batch() -> None:
    assert engine.halve_batch(64, 16, lambda bs: False) == 16
    assert engine.halve_batch(64, 16, lambda bs: bs <= 32) == 32
    assert engine.halve_batch(24, 16, lambda bs: False) == 24  # 12 would be below the floor
    assert engine.halve_batch(8, 16, lambda bs: False) == 8


# ---- the same spelling on every command, through the CLI ------------------------------------------------


def _cli_error(command: str, args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    base = {"pretrain": ["pretrain", "corpus.csv"],
            "lm-finetune": ["lm-finetune", "corpus.csv", "--pretrained", str(tmp_path / "lm")],
            "classify": ["classify", "corpus.csv", "--lm", str(tmp_path / "lm")]}[command]
    assert cli.main([*base, "--out", str(tmp_path / "out"), *args]) == 1
    assert not (tmp_path / "out").exists()  # refused before anything was read or written
    return capsys.readouterr().err


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_every_training_command_refuses_the_same_way(command: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli_error(command, ["--set", "nosuch=on"], tmp_path, capsys)
    assert err.startswith("error: unknown config key 'nosuch' in --set\nhint: valid keys: ")
    assert "drop_mult" in err
    err = _cli_error(command, ["--set", "drop_mult=lots"], tmp_path, capsys)
    assert "error: config key 'drop_mult': cannot use 'lots' (expected float)" in err
    err = _cli_error(command, ["--set", "drop_mult"], tmp_path, capsys)
    assert "error: --set 'drop_mult' is not key=value" in err
    err = _cli_error(command, ["--config", str(tmp_path / "missing.json")], tmp_path, capsys)
    assert "error: config file not found" in err


# ---- help texts: only what the command has -----------------------------------------------------------------


def _commands() -> dict[str, object]:
    cli._register()
    root = typer.main.get_command(cli.app)
    out = {}
    for name, cmd in root.commands.items():
        for sub, c in (cmd.commands.items() if hasattr(cmd, "commands") else [("", cmd)]):
            out[f"{name} {sub}".strip()] = c
    return out


def _help_texts(cmd) -> str:
    return " ".join([cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params])


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_mentions_only_options_the_command_has(name: str) -> None:
    cmd = _commands()[name]
    options = {o for p in cmd.params for o in getattr(p, "opts", [])} | {"--help"}
    text = _help_texts(cmd)
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert mentioned <= options, f"{name} --help mentions {sorted(mentioned - options)}"
    if "--preset" not in options:  # presets, min_steps and --set belong to the training commands
        assert not re.search(r"\bpresets?\b|min_steps", text), name


def test_set_help_gives_an_example_every_training_command_takes(tmp_path: Path) -> None:
    for name in TRAINING_COMMANDS:
        (set_opt,) = [p for p in _commands()[name].params if "--set" in getattr(p, "opts", [])]
        example = re.search(r"e\.g\. --set (\S+)", set_opt.help).group(1)
        key = example.split("=")[0]
        stage = "classifier" if name == "classify" else "lm"
        assert key in STAGES[stage].field_names(), (name, example)
        _resolve(stage, preset="tiny", sets=[example])


def test_one_name_for_the_chunk_length_and_old_bundles_still_load() -> None:
    from ulmfit.classify.config import config_from_dict, resolve_config
    from ulmfit.errors import UlmfitError
    from ulmfit.lm.config import resolve_config as lm_config

    assert resolve_config("small", sets=["seq_len=64"]).seq_len == lm_config("small", sets=["seq_len=64"]).seq_len
    with pytest.raises(UlmfitError, match="'bptt' in --set is now called 'seq_len'"):
        resolve_config("small", sets=["bptt=64"])
    old = resolve_config("tiny").to_dict()
    old["bptt"] = old.pop("seq_len")  # config.json of a bundle written before the rename
    assert config_from_dict(old).seq_len == 16
