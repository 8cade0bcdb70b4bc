"""Language-model configuration: one typed dataclass, presets as plain data, and the resolved schedule.

Resolution order (later wins): preset → `--config file.json` → `--set key=value` → explicit options
(`--epochs`, `--bs`). Unknown keys are errors that list the valid ones. Everything is validated before any data
is read or any model is built. Only the standard library is imported here (the CLI imports it eagerly).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ulmfit.errors import UlmfitError
from ulmfit.runtime import PRECISIONS


@dataclass
class LMConfig:
    # ---- architecture: fastai's AWD_LSTM encoder + LinearDecoder (get_language_model) ---------------------
    emb_sz: int = 400          # embedding size; also the last LSTM layer's output size (tied to the decoder)
    n_hid: int = 1152          # hidden size of the inner LSTM layers
    n_layers: int = 3          # stacked LSTM layers (ULMFiT: 3)
    tie_weights: bool = True   # decoder weight = embedding matrix (Inan/Press & Wolf): fewer params, better ppl
    out_bias: bool = True      # bias on the softmax decoder
    # Dropouts are fastai's awd_lstm_lm_config; every one is multiplied by drop_mult (ULMFiT's single knob).
    drop_mult: float = 1.0
    output_p: float = 0.1      # on the last LSTM output, before the decoder
    hidden_p: float = 0.15     # between LSTM layers
    input_p: float = 0.25      # on the embedding output
    embed_p: float = 0.02      # drops whole embedding rows (words)
    weight_p: float = 0.2      # DropConnect on the hidden-to-hidden LSTM weights
    alpha: float = 2.0         # AR: penalty on the (dropped-out) activations of the last layer
    beta: float = 1.0          # TAR: penalty on the change of the raw last-layer activations between steps
    # ---- training (fastai one-cycle; Adam with beta1 cycled through moms and beta2 = 0.99) -----------------
    epochs: int = 1            # pretrain: epochs; lm-finetune: epochs after unfreezing
    bs: int = 64               # parallel streams per batch
    min_steps: int = 0         # fewer optimizer steps than this in the whole run: halve bs (not below 16)
    seq_len: int = 72          # BPTT length
    lr: float = 5e-3           # pretrain: one-cycle max learning rate
    ft_frozen_lr: float = 2e-2 # lm-finetune, phase 1: only embeddings + decoder train (body frozen)
    ft_freeze_epochs: int = 1  # lm-finetune, phase 1 length
    ft_lr: float = 2e-3        # lm-finetune, phase 2: all layers
    ft_extend_vocab: int = 0   # lm-finetune from a rules-tokenizer bundle: add up to N frequent domain words the
                               # pretrained vocab lacks (their rows start as the mean, as match_embeds does)
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)  # Adam beta1 start/middle/end of the cycle
    pct_start: float = 0.25    # fraction of the cycle spent warming up
    wd: float = 0.1            # decoupled weight decay (fastai's text tutorial uses 0.1 for the LM)
    clip: float = 0.25         # gradient-norm clipping (the AWD-LSTM paper's 0.25); 0 = off
    precision: str = "auto"    # "auto": bf16 on a GPU or CPU that has it (else fp16 / fp32) | "fp32" | "bf16" | "fp16"
    # ---- tokenizer (ulmfit.tokenize.TokenizerSpec; ignored when starting from a pretrained model) ---------
    tokenizer: str = "rules"   # "rules" (fastai/spaCy rules, word vocab) | "sentencepiece"
    lang: str = "en"
    max_vocab: int = 60000     # rules: keep at most this many words...
    min_freq: int = 3          # ...seen at least this often
    sp_vocab_size: int = 15000 # sentencepiece vocabulary size
    sp_model_type: str = "unigram"  # sentencepiece: "unigram" | "bpe"

    # -- derived views -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moms"] = list(self.moms)
        return d

    def arch(self, vocab_size: int | None = None) -> dict[str, Any]:
        """The AWD-LSTM description written into config.json["arch"] (unscaled dropouts + drop_mult)."""
        out: dict[str, Any] = {"name": "awd_lstm"}
        if vocab_size is not None:
            out["vocab_size"] = vocab_size
        out.update({k: getattr(self, k) for k in ARCH_KEYS})
        out.update(pad_token=1, bidir=False)
        return out

    def tokenizer_spec(self) -> dict[str, Any]:
        """Keyword arguments for ulmfit.tokenize.TokenizerSpec."""
        return {"kind": self.tokenizer, "lang": self.lang, "sp_model_type": self.sp_model_type,
                "sp_vocab_size": self.sp_vocab_size, "max_vocab": self.max_vocab, "min_freq": self.min_freq}


ARCH_KEYS = ("emb_sz", "n_hid", "n_layers", "tie_weights", "out_bias", "drop_mult",
             "output_p", "hidden_p", "input_p", "embed_p", "weight_p")
TOKENIZER_KEYS = ("tokenizer", "lang", "max_vocab", "min_freq", "sp_vocab_size", "sp_model_type")

# Presets change only what differs from the defaults above (which are the ULMFiT paper's model).
PRESETS: dict[str, dict[str, Any]] = {
    # Tests and smoke runs: trains in seconds on one core; no dropout so it can fit a toy corpus quickly.
    # bs x seq_len small so that a few hundred short documents still give ~150 optimizer steps per epoch.
    # fp32 everywhere: a test's numbers must not depend on whether the CPU has bf16.
    "tiny": dict(emb_sz=32, n_hid=64, n_layers=2, drop_mult=0.0, alpha=0.0, beta=0.0,
                 epochs=2, bs=8, seq_len=24, lr=2e-2, ft_frozen_lr=1e-2, ft_lr=5e-3, wd=0.01,
                 max_vocab=2000, min_freq=1, sp_vocab_size=500, precision="fp32"),
    # CPU: on 2 cores an LM sees a few million tokens an hour, so the winner is the model that learns most per
    # CPU minute (docs/bench/imdb.md, "LM quality per CPU minute"): 200/512, 2 layers, an 8k-word vocabulary
    # (the softmax dominates small models; 3x the tokens/s of the old 256/768 + 16k words: 3,044 vs 1,025 in
    # full IMDb runs), light dropout (one pass over the data does not overfit) and a higher peak lr (1e-2: 0.07
    # bits/char better than 5e-3). The batch depends on how much text there is (docs/bench/imdb.md, seventh and
    # eighth passes): on little text steps are what is short, and bs 16 wins (one epoch over 3,000 reviews, 440
    # steps at bs 32: 1.505 bits/char against 1.551 at bs 32, 1.626 at bs 64; the quickstart's perplexity 110
    # against 125); on all 73,500 IMDb reviews (10,800 steps at bs 32) bs 32 wins (perplexity 48.2 against 50.8,
    # classifier 85.9% against 85.3%). min_steps 2,000 sits between the two measured regimes: runs shorter than
    # that at bs 32 train at bs 16. Two cores run about as many tokens a second at either batch size.
    # drop_mult 0.2 even for one pass over the text: one epoch over all of IMDb at drop_mult 0 gave a better LM
    # (perplexity 47.1 against 48.2) in 53 minutes against 66, but its self-trained classifiers lost on all three
    # seeds (1,000 labels: 87.0% against 87.6%; docs/bench/imdb.md, ninth pass).
    "small": dict(emb_sz=200, n_hid=512, n_layers=2, drop_mult=0.2,
                  epochs=2, bs=32, min_steps=2000, seq_len=64, lr=1e-2, max_vocab=8000, min_freq=3,
                  sp_vocab_size=8000),
    # The ULMFiT paper (Howard & Ruder 2018) / fastai: 400/1152/3, fastai's AWD-LSTM dropouts, AR 2 / TAR 1,
    # tied weights, 60k-word vocabulary. Meant for a GPU.
    "paper": dict(),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def field_names() -> list[str]:
    return [f.name for f in fields(LMConfig)]


def _unknown(keys: Iterable[str], where: str) -> None:
    bad = [k for k in keys if k not in field_names()]
    if bad:
        raise UlmfitError(f"unknown config key{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} in {where}",
                          hint=f"valid keys: {', '.join(field_names())}")


def _coerce(name: str, value: Any) -> Any:
    """Convert a JSON value or a --set string to the field's type; errors name the key."""
    ftype = {f.name: f.type for f in fields(LMConfig)}[name]
    try:
        if isinstance(value, str):
            s = value.strip()
            if ftype == "bool":
                low = s.lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(s)
                return low in ("1", "true", "yes", "on")
            if ftype == "int":
                return int(s)
            if ftype == "float":
                return float(s)
            if ftype.startswith("tuple"):
                parts = json.loads(s) if s.startswith("[") else [p for p in s.strip("()").split(",") if p.strip()]
                return tuple(float(p) for p in parts)
            return s
        if ftype == "bool":
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if ftype == "int":
            if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float)
                                                                              and value.is_integer()):
                raise ValueError(value)
            return int(value)
        if ftype == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(value)
            return float(value)
        if ftype.startswith("tuple"):
            return tuple(float(v) for v in value)
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (ValueError, TypeError):
        raise UlmfitError(f"config key {name!r}: cannot use {value!r} (expected {ftype})",
                          hint=f"e.g. --set {name}={getattr(LMConfig(), name)!r}".replace("'", "")) from None


def parse_sets(items: Iterable[str] | None) -> dict[str, Any]:
    """`["emb_sz=200", "drop_mult=0.3"]` → {"emb_sz": 200, "drop_mult": 0.3} (unknown keys are errors)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UlmfitError(f"--set {item!r} is not key=value", hint="e.g. --set emb_sz=200")
        k, v = item.split("=", 1)
        k = k.strip()
        _unknown([k], "--set")
        out[k] = _coerce(k, v)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UlmfitError(f"config file not found: {p}") from None
    except (OSError, ValueError) as e:
        raise UlmfitError(f"cannot read config file {p}: {e}", hint="it must be a JSON object of key: value") from None
    if not isinstance(data, dict):
        raise UlmfitError(f"config file {p} must hold a JSON object", hint='e.g. {"emb_sz": 200, "epochs": 3}')
    _unknown(data, str(p.name))
    return {k: _coerce(k, v) for k, v in data.items()}


def resolve_config(preset: str = "small", *, config_file: str | Path | None = None,
                   sets: Iterable[str] | None = None, overrides: Mapping[str, Any] | None = None) -> LMConfig:
    """preset → config file → --set → overrides (explicit options; None values are ignored); validated."""
    if preset not in PRESETS:
        raise UlmfitError(f"unknown preset {preset!r}", hint=f"choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    if config_file is not None:
        values.update(read_config_file(config_file))
    values.update(parse_sets(sets))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _unknown(given, "options")
    values.update({k: _coerce(k, v) for k, v in given.items()})
    cfg = LMConfig(**values)
    validate(cfg)
    return cfg


def explicit_keys(config_file: str | Path | None, sets: Iterable[str] | None,
                  overrides: Mapping[str, Any] | None = None) -> set[str]:
    """Keys the user set explicitly (not from the preset): lm-finetune checks them against the pretrained model."""
    keys = set(parse_sets(sets))
    if config_file is not None:
        keys |= set(read_config_file(config_file))
    keys |= {k for k, v in (overrides or {}).items() if v is not None}
    return keys


def validate(cfg: LMConfig) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise UlmfitError(f"config key {key!r} = {getattr(cfg, key)!r}: must be {what}")

    for k in ("emb_sz", "n_hid", "n_layers", "bs", "seq_len", "max_vocab", "min_freq", "sp_vocab_size"):
        need(getattr(cfg, k) >= 1, k, ">= 1")
    need(cfg.epochs >= 0, "epochs", ">= 0")
    need(cfg.min_steps >= 0, "min_steps", ">= 0")
    need(cfg.ft_freeze_epochs >= 0, "ft_freeze_epochs", ">= 0")
    need(cfg.ft_extend_vocab >= 0, "ft_extend_vocab", ">= 0")
    for k in ("output_p", "hidden_p", "input_p", "embed_p", "weight_p"):
        need(0.0 <= getattr(cfg, k) < 1.0, k, "in [0, 1)")
    need(cfg.drop_mult >= 0 and all(getattr(cfg, k) * cfg.drop_mult < 1.0 for k in
                                    ("output_p", "hidden_p", "input_p", "embed_p", "weight_p")),
         "drop_mult", ">= 0 and keep every dropout below 1")
    for k in ("lr", "ft_frozen_lr", "ft_lr"):
        need(getattr(cfg, k) > 0, k, "> 0")
    for k in ("alpha", "beta", "wd", "clip"):
        need(getattr(cfg, k) >= 0, k, ">= 0")
    need(0.0 < cfg.pct_start < 1.0, "pct_start", "in (0, 1)")
    need(len(cfg.moms) == 3 and all(0.0 <= m < 1.0 for m in cfg.moms), "moms", "three numbers in [0, 1)")
    need(cfg.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
    need(cfg.tokenizer in ("rules", "sentencepiece"), "tokenizer", '"rules" or "sentencepiece"')
    need(cfg.sp_model_type in ("unigram", "bpe"), "sp_model_type", '"unigram" or "bpe"')


def replace(cfg: LMConfig, **changes: Any) -> LMConfig:
    new = dataclasses.replace(cfg, **changes)
    validate(new)
    return new


# ------------------------------------------------------------------------------------------- schedule


@dataclass
class Phase:
    """One one-cycle fit of the schedule; printed before training and written into config.json."""

    name: str
    epochs: int
    lr: float
    trainable: str             # "all" | "embeddings+decoder"
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)
    pct_start: float = 0.25
    wd: float = 0.1
    clip: float = 0.25
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moms"] = list(self.moms)
        d.pop("extra")
        return d


def schedule(cfg: LMConfig, stage: str) -> list[Phase]:
    """stage "pretrain": one one-cycle over all layers. "finetune": ULMFiT's freeze then unfreeze."""
    common = dict(moms=cfg.moms, pct_start=cfg.pct_start, wd=cfg.wd, clip=cfg.clip)
    if stage == "pretrain":
        return [Phase("all layers", cfg.epochs, cfg.lr, "all", **common)] if cfg.epochs > 0 else []
    if stage == "finetune":
        phases = []
        if cfg.ft_freeze_epochs:
            phases.append(Phase("frozen body: embeddings + decoder", cfg.ft_freeze_epochs, cfg.ft_frozen_lr,
                                "embeddings+decoder", **common))
        phases.append(Phase("unfrozen: all layers", cfg.epochs, cfg.ft_lr, "all", **common))
        return [p for p in phases if p.epochs > 0]
    raise ValueError(stage)


def format_schedule(phases: list[Phase]) -> str:
    lines = []
    for i, p in enumerate(phases, 1):
        lines.append(f"  phase {i}: {p.name}: {p.epochs} epoch{'s' if p.epochs != 1 else ''}, one-cycle lr_max "
                     f"{p.lr:g} (warm-up {p.pct_start:.0%}), Adam moms {tuple(p.moms)} beta2 0.99, wd {p.wd:g}, "
                     f"clip {p.clip:g}")
    return "\n".join(lines)


def format_config(cfg: LMConfig) -> str:
    d = cfg.to_dict()
    groups = (("model", ARCH_KEYS + ("alpha", "beta")),
              ("training", ("epochs", "bs", "min_steps", "seq_len", "lr", "ft_frozen_lr", "ft_freeze_epochs", "ft_lr", "ft_extend_vocab", "moms",
                            "pct_start", "wd", "clip")),
              ("tokenizer", TOKENIZER_KEYS))
    return "\n".join(f"  {name}: " + ", ".join(f"{k}={d[k]}" for k in keys) for name, keys in groups)


MIN_BS = 16  # fit_min_steps halves bs no further (bs 8 learns a little more per token but runs 25% slower)


def fit_min_steps(cfg: LMConfig, n_tokens: int, epochs: int) -> tuple[LMConfig, str | None]:
    """More optimizer steps for little text: while `n_tokens` over `epochs` give fewer than `cfg.min_steps`
    steps, halve bs (not below MIN_BS). Returns the config to train with and a line saying what changed."""
    def steps(bs: int) -> int:
        return n_tokens // (bs * cfg.seq_len) * epochs

    bs = cfg.bs
    while cfg.min_steps > 0 and bs // 2 >= MIN_BS and steps(bs) < cfg.min_steps:
        bs //= 2
    if bs == cfg.bs:
        return cfg, None
    return dataclasses.replace(cfg, bs=bs), (
        f"{n_tokens:,} training tokens x {epochs} epoch{'s' if epochs != 1 else ''} are {steps(cfg.bs):,} optimizer "
        f"steps at bs {cfg.bs}, fewer than min_steps {cfg.min_steps}: training at bs {bs} ({steps(bs):,} steps; "
        f"--set min_steps=0 keeps bs {cfg.bs})")
