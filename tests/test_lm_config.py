"""LM config: presets, --set / --config resolution, validation, schedule — and the CLI's errors for them."""

from __future__ import annotations

import csv
import json

import pytest

from ulmfit.cli.main import main
from ulmfit.errors import UlmfitError
from ulmfit.lm.config import (PRESETS, LMConfig, field_names, fit_min_steps, format_schedule, parse_sets,
                              resolve_config, schedule)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_resolves_and_validates(name):
    cfg = resolve_config(name)
    assert isinstance(cfg, LMConfig)
    assert cfg.emb_sz >= 1 and cfg.n_layers >= 1
    # every preset only names real fields
    assert set(PRESETS[name]) <= set(field_names())


def test_paper_preset_is_fastais_awd_lstm():
    from fastai.text.models.awdlstm import awd_lstm_lm_config

    cfg = resolve_config("paper")
    for k in ("emb_sz", "n_hid", "n_layers", "output_p", "hidden_p", "input_p", "embed_p", "weight_p",
              "tie_weights", "out_bias"):
        assert getattr(cfg, k) == awd_lstm_lm_config[k], k
    assert (cfg.emb_sz, cfg.n_hid, cfg.n_layers) == (400, 1152, 3)
    assert (cfg.alpha, cfg.beta) == (2.0, 1.0)
    assert cfg.moms == (0.8, 0.7, 0.8)


def test_small_is_smaller_than_paper():
    small, paper = resolve_config("small"), resolve_config("paper")
    assert small.n_hid < paper.n_hid and small.max_vocab < paper.max_vocab


def test_resolution_order_preset_file_set_options(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"emb_sz": 48, "n_hid": 96, "epochs": 5}))
    cfg = resolve_config("tiny", config_file=f, sets=["n_hid=80", "moms=0.9,0.8,0.9", "tie_weights=false"],
                         overrides={"epochs": 7, "bs": None})
    assert cfg.emb_sz == 48            # from the file
    assert cfg.n_hid == 80             # --set beats the file
    assert cfg.epochs == 7             # explicit option beats both
    assert cfg.bs == PRESETS["tiny"]["bs"]  # None = not given
    assert cfg.moms == (0.9, 0.8, 0.9) and cfg.tie_weights is False


def test_set_coerces_types():
    assert parse_sets(["lr=3e-3", "n_layers=2", "tokenizer=sentencepiece", "moms=[0.7,0.6,0.7]"]) == {
        "lr": 3e-3, "n_layers": 2, "tokenizer": "sentencepiece", "moms": (0.7, 0.6, 0.7)}


@pytest.mark.parametrize("sets, message", [
    (["bogus=1"], "unknown config key 'bogus'"),
    (["emb_sz"], "is not key=value"),
    (["emb_sz=big"], "config key 'emb_sz': cannot use"),
    (["tie_weights=maybe"], "config key 'tie_weights'"),
    (["drop_mult=-1"], "drop_mult"),
    (["hidden_p=1.5"], "hidden_p"),
    (["tokenizer=bpe"], "tokenizer"),
    (["moms=0.9,0.8"], "moms"),
])
def test_bad_settings_are_one_clear_error(sets, message):
    with pytest.raises(UlmfitError, match=message):
        resolve_config("tiny", sets=sets)


def test_unknown_key_lists_valid_keys(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"embsize": 10}))
    with pytest.raises(UlmfitError) as e:
        resolve_config("tiny", config_file=f)
    assert "embsize" in e.value.message and "emb_sz" in e.value.hint and "drop_mult" in e.value.hint


def test_unknown_preset():
    with pytest.raises(UlmfitError, match="unknown preset 'huge'") as e:
        resolve_config("huge")
    assert "tiny" in e.value.hint and "paper" in e.value.hint


def test_schedules():
    cfg = resolve_config("paper", overrides={"epochs": 10})
    (pre,) = schedule(cfg, "pretrain")
    assert (pre.epochs, pre.lr, pre.trainable) == (10, cfg.lr, "all")
    frozen, full = schedule(cfg, "finetune")
    assert (frozen.epochs, frozen.lr, frozen.trainable) == (1, cfg.ft_frozen_lr, "embeddings+decoder")
    assert (full.epochs, full.lr, full.trainable) == (10, cfg.ft_lr, "all")
    text = format_schedule([frozen, full])
    assert "phase 1: frozen body" in text and "phase 2: unfrozen" in text and "10 epochs" in text
    no_freeze = resolve_config("paper", sets=["ft_freeze_epochs=0"])
    assert [p.trainable for p in schedule(no_freeze, "finetune")] == ["all"]


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--set", "nope=1"], "unknown config key 'nope'"),
    (["--set", "emb_sz=0"], "emb_sz"),
])
def test_cli_rejects_bad_config_before_reading_data(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    rc = main(["pretrain", str(tmp_path / "does-not-exist.csv"), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 1
    assert message in err and err.startswith("error: ")
    assert not out.exists()


def test_cli_missing_config_file(tmp_path, capsys):
    rc = main(["lm-finetune", "x.csv", "--pretrained", "p", "--out", str(tmp_path / "o"),
               "--config", str(tmp_path / "missing.json")])
    assert rc == 1 and "config file not found" in capsys.readouterr().err


def test_min_steps_halves_the_batch_for_little_text():
    small = resolve_config("small")  # bs 32, seq_len 64, min_steps 2000
    # the quickstart's corpus (252k tokens, 4 epochs: 492 steps at bs 32) trains at bs 16, never below
    cfg, note = fit_min_steps(small, 252_254, 4)
    assert cfg.bs == 16 and "492 optimizer steps at bs 32" in note and "training at bs 16 (984 steps" in note
    # all of IMDb (22M tokens: 10,800 steps at bs 32) keeps bs 32
    assert fit_min_steps(small, 22_100_000, 1) == (small, None)
    assert fit_min_steps(resolve_config("small", sets=["bs=128"]), 1_000_000, 1)[0].bs == 16  # 128 -> 64 -> 32 -> 16
    off = resolve_config("small", sets=["min_steps=0"])
    assert fit_min_steps(off, 100_000, 1) == (off, None)
    assert fit_min_steps(off, 1_000, 1)[0].bs == 15  # too short for one batch of 32 rows: what fits
    with pytest.raises(UlmfitError, match="min_steps"):
        resolve_config("small", sets=["min_steps=-1"])


def test_pretrain_trains_and_records_the_fitted_batch(tmp_path, capsys):
    from ulmfit.bundle import read_bundle
    from ulmfit.lm.synthetic import human_numbers

    corpus = human_numbers(n_docs=60, seed=1)
    src = tmp_path / "numbers.csv"
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([("text", "split"), *zip(corpus.texts, corpus.splits)])
    rc = main(["pretrain", str(src), "--out", str(tmp_path / "lm"), "--preset", "tiny", "--epochs", "1",
               "--set", "bs=64", "--set", "min_steps=100000"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "fewer than min_steps 100000: training at bs 16" in out
    cfg = read_bundle(tmp_path / "lm").config["lm_config"]
    assert cfg["bs"] == 16 and cfg["min_steps"] == 100000


def test_a_validation_split_too_short_for_one_batch_lowers_bs() -> None:
    """A small target corpus (100 labelled sentences) must still fine-tune: bs drops to what its text holds."""
    from ulmfit.lm.config import fit_min_steps, resolve_config

    cfg = resolve_config("small", sets=["min_steps=0"])  # bs 32, seq_len 64
    same, note = fit_min_steps(cfg, n_tokens=1_000_000, epochs=1, n_valid_tokens=100_000)
    assert same.bs == 32 and note is None
    small, note = fit_min_steps(cfg, n_tokens=1_000_000, epochs=1, n_valid_tokens=213)
    assert small.bs == 212 // 64 == 3 and "validation text has 213 tokens" in note
    tiny, _ = fit_min_steps(cfg, n_tokens=1_000_000, epochs=1, n_valid_tokens=30)  # not one row: the loader says so
    assert tiny.bs == 32
