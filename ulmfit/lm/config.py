"""Language-model configuration: one typed dataclass, presets as plain data, and the resolved schedule.

Resolution (`ulmfit.config`, shared with the classifier; later wins): preset → `--config file.json` →
`--set key=value` → explicit options (`--epochs`, `--bs`). Unknown keys are errors that list the valid ones.
Everything is validated before any data is read or any model is built. Only the standard library is imported
here (the CLI imports it eagerly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from ulmfit import config as engine
from ulmfit.runtime import PRECISIONS
from ulmfit.errors import UlmfitError


@dataclass
class LMConfig:
    # ---- architecture: an encoder (fastai's AWD_LSTM or ulmfit.lm.qrnn.QRNN) + an output layer (softmax) -------
    arch: str = "awd_lstm"     # "awd_lstm" (ULMFiT) | "qrnn" (MultiFiT: gates for all steps from one convolution)
    emb_sz: int = 400          # embedding size; also the last layer's output size (tied to the decoder)
    n_hid: int = 1152          # hidden size of the inner LSTM/QRNN layers
    n_layers: int = 3          # stacked LSTM/QRNN layers (ULMFiT: 3)
    tie_weights: bool = True   # decoder weight = embedding matrix (Inan/Press & Wolf): fewer params, better ppl
    out_bias: bool = True      # bias on the softmax decoder
    # The output layer. "full": one softmax over the vocabulary (fastai's LinearDecoder). "adaptive": Grave et al.
    # 2017's adaptive softmax (ulmfit.lm.adaptive): a head softmax over the frequent words + one logit per tail
    # cluster of rarer words, each cluster behind a narrower projection; cheaper to train, still an exact
    # distribution. With tie_weights its head words share the embedding's rows.
    softmax: str = "full"
    adaptive_cutoffs: tuple[int, ...] = (2000, 10000)  # ids below the first cutoff are the head; each next range a
                               # tail cluster (ids are frequency ranks); cutoffs at or past the vocab size are dropped
    adaptive_div: float = 4.0  # tail cluster i's projection is emb_sz / adaptive_div**(i+1) wide
    # Dropouts are fastai's awd_lstm_lm_config; every one is multiplied by drop_mult (ULMFiT's single knob).
    drop_mult: float = 1.0
    output_p: float = 0.1      # on the last LSTM output, before the decoder
    hidden_p: float = 0.15     # between LSTM layers
    input_p: float = 0.25      # on the embedding output
    embed_p: float = 0.02      # drops whole embedding rows (words)
    weight_p: float = 0.2      # DropConnect on the LSTM's hidden-to-hidden weights / the QRNN's convolution weights
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
        d["adaptive_cutoffs"] = list(self.adaptive_cutoffs)
        return d

    def arch_dict(self, vocab_size: int | None = None) -> dict[str, Any]:
        """The model description written into config.json["arch"]: {"name": arch, sizes, "softmax" (adaptive: the
        cutoffs this vocabulary keeps and the div value), unscaled dropouts, drop_mult}."""
        out: dict[str, Any] = {"name": self.arch}
        if vocab_size is not None:
            out["vocab_size"] = vocab_size
        out.update({k: getattr(self, k) for k in ARCH_KEYS})
        out.update(pad_token=1, bidir=False)
        if self.softmax == "adaptive":  # the cutoffs this vocabulary keeps: what the weights are shaped by
            out["adaptive_cutoffs"] = (adaptive_cutoffs(self.adaptive_cutoffs, vocab_size) if vocab_size is not None
                                       else list(self.adaptive_cutoffs))
            out["adaptive_div"] = self.adaptive_div
        return out

    def tokenizer_spec(self) -> dict[str, Any]:
        """Keyword arguments for ulmfit.tokenize.TokenizerSpec."""
        return {"kind": self.tokenizer, "lang": self.lang, "sp_model_type": self.sp_model_type,
                "sp_vocab_size": self.sp_vocab_size, "max_vocab": self.max_vocab, "min_freq": self.min_freq}


ARCH_KEYS = ("emb_sz", "n_hid", "n_layers", "tie_weights", "out_bias", "softmax", "drop_mult",
             "output_p", "hidden_p", "input_p", "embed_p", "weight_p")
ADAPTIVE_KEYS = ("adaptive_cutoffs", "adaptive_div")
TOKENIZER_KEYS = ("tokenizer", "lang", "max_vocab", "min_freq", "sp_vocab_size", "sp_model_type")
ARCHS = ("awd_lstm", "qrnn")
SOFTMAXES = ("full", "adaptive")


def adaptive_cutoffs(cutoffs: Iterable[int], vocab_size: int) -> list[int]:
    """The cutoffs a vocabulary of `vocab_size` keeps (those below it); none left is an error: the adaptive softmax
    would be a full one."""
    kept = [int(c) for c in cutoffs if c < vocab_size]
    if not kept:
        raise UlmfitError(f"adaptive_cutoffs {list(cutoffs)} leave no tail cluster in a vocabulary of {vocab_size} "
                          "tokens", hint=f"set cutoffs below {vocab_size}, e.g. --set adaptive_cutoffs="
                                         f"[{max(1, vocab_size // 4)}], or use --set softmax=full")
    return kept

# The training and vocabulary of the CPU presets (small, small-lstm, small-qrnn differ only in the model).
_SMALL_BUDGET: dict[str, Any] = dict(
    drop_mult=0.2,                    # light dropout: one or two passes over the text do not overfit, and the
                                      # classifier fine-tuned on this LM still gains from some
    epochs=2,                         # a CPU has time for few passes
    bs=32,                            # parallel streams: fewer than the paper's 64, so more optimizer steps
    min_steps=2000,                   # on little text steps are what is short: train at bs 16 below this
    seq_len=64,                       # a little shorter BPTT: cheaper steps
    lr=1e-2,                          # a higher peak lr: few epochs to learn in
    max_vocab=8000, min_freq=3,       # a small vocabulary: the output layer is still a small model's largest
    sp_vocab_size=8000,               # sentencepiece: the same vocabulary size as the word vocabulary
)

# Presets: only what differs from the defaults above (which are the ULMFiT paper's model), one reason a knob.
PRESETS: dict[str, dict[str, Any]] = {
    # Tests and smoke runs: trains in seconds on one core.
    "tiny": dict(
        emb_sz=32, n_hid=64, n_layers=2,  # the smallest model that still learns a toy corpus
        drop_mult=0.0,                    # no dropout: a toy corpus must be fitted in a few steps
        alpha=0.0, beta=0.0,              # no AR/TAR either, for the same reason
        epochs=2,                         # enough to see the loss fall in a test
        bs=8, seq_len=24,                 # small batches of short sequences: a few hundred documents give many steps
        lr=2e-2, ft_frozen_lr=1e-2, ft_lr=5e-3,  # higher than the paper's: few steps to learn in
        wd=0.01,                          # little weight decay: the model is far from overfitting
        max_vocab=2000, min_freq=1,       # a toy corpus has few words; keep every one of them
        sp_vocab_size=500,                # sentencepiece on a toy corpus: a small vocabulary
        precision="fp32",                 # a test's numbers must not depend on whether the CPU has bf16
    ),
    # A CPU (two cores see a few million tokens an hour): the model that learns most per CPU minute. A QRNN
    # (MultiFiT) computes every time step's gates in one convolution, and the adaptive softmax spends its width on
    # the frequent words: on two cores they read more text per minute than an AWD-LSTM with the full softmax, and
    # transfer better from it (BENCHMARKS.md: "What makes an IMDb LM transfer", IMDb with 1,000 labels).
    "small": dict(
        arch="qrnn",
        emb_sz=200, n_hid=512,            # a small model: more of the text is read in the time there is
        n_layers=3,                       # a QRNN layer has no hidden-to-hidden weights (its context comes from the
                                          # window and the forget gate): one layer more than small-lstm; MultiFiT 4
        softmax="adaptive",               # the output layer was most of a small LM's step (adaptive_cutoffs: the
                                          # head is the 2,000 most frequent words, one tail cluster for the rest)
        **_SMALL_BUDGET,
    ),
    # The ULMFiT paper (Howard & Ruder 2018) / fastai: 400/1152/3, fastai's AWD-LSTM dropouts, AR 2 / TAR 1,
    # tied weights, a 60k-word vocabulary: the defaults above. Meant for a GPU.
    "paper": dict(),
    # The ULMFiT recipe at small's budget: an AWD-LSTM 200/512/2 with the full softmax (`small` until 2026-12-02).
    "small-lstm": dict(emb_sz=200, n_hid=512, n_layers=2, **_SMALL_BUDGET),
    # small's QRNN with the full softmax: small-lstm's output layer, so the two encoders compare directly.
    "small-qrnn": dict(arch="qrnn", emb_sz=200, n_hid=512, n_layers=3, **_SMALL_BUDGET),
    # MultiFiT (Eisenschlos et al. 2019): 4 QRNN layers of 1550 (1552 as in fastai's AWD_QRNN config) on 400-d
    # embeddings, AWD-LSTM's dropouts and AR/TAR, tied weights; a 15k-piece sentencepiece vocabulary, as MultiFiT.
    # Meant for a GPU.
    "paper-qrnn": dict(
        arch="qrnn", n_hid=1552, n_layers=4,
        tokenizer="sentencepiece", sp_vocab_size=15000,
    ),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def field_names() -> list[str]:
    return engine.field_names(LMConfig)


def parse_sets(items: Iterable[str] | None) -> dict[str, Any]:
    """`["emb_sz=200", "drop_mult=0.3"]` → {"emb_sz": 200, "drop_mult": 0.3} (unknown keys are errors)."""
    return engine.parse_sets(LMConfig, items)


def read_config_file(path: str | Path) -> dict[str, Any]:
    return engine.read_config_file(LMConfig, path)


def resolve_config(preset: str = "small", *, config_file: str | Path | None = None,
                   sets: Iterable[str] | None = None, overrides: Mapping[str, Any] | None = None) -> LMConfig:
    """preset → config file → --set → overrides (explicit options; None values are ignored); validated."""
    engine.check_preset(PRESETS, preset)
    cfg = engine.from_preset(LMConfig, PRESETS, preset, engine.user_values(LMConfig, config_file, sets, overrides))
    validate(cfg)
    return cfg


def explicit_keys(config_file: str | Path | None, sets: Iterable[str] | None,
                  overrides: Mapping[str, Any] | None = None) -> set[str]:
    """Keys the user set explicitly (not from the preset): lm-finetune checks them against the pretrained model."""
    return set(engine.user_values(LMConfig, config_file, sets, overrides))


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
    need(cfg.arch in ARCHS, "arch", " or ".join(f'"{a}"' for a in ARCHS))
    need(cfg.softmax in SOFTMAXES, "softmax", " or ".join(f'"{a}"' for a in SOFTMAXES))
    cuts = list(cfg.adaptive_cutoffs)
    need(len(cuts) >= 1 and cuts[0] >= 1 and all(a < b for a, b in pairwise(cuts)), "adaptive_cutoffs",
         "increasing ids >= 1, e.g. [2000, 10000]")
    need(cfg.adaptive_div >= 1.0, "adaptive_div", ">= 1")
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
    model = ["arch", *ARCH_KEYS, "alpha", "beta"]
    if cfg.softmax == "adaptive":
        model[model.index("softmax") + 1:model.index("softmax") + 1] = ADAPTIVE_KEYS
    groups = (("model", model),
              ("training", ("epochs", "bs", "min_steps", "seq_len", "lr", "ft_frozen_lr", "ft_freeze_epochs", "ft_lr",
                            "ft_extend_vocab", "moms", "pct_start", "wd", "clip")),
              ("tokenizer", TOKENIZER_KEYS))
    return "\n".join(f"  {name}: " + ", ".join(f"{k}={d[k]}" for k in keys) for name, keys in groups)


def fit_softmax(cfg: LMConfig, vocab_size: int) -> tuple[LMConfig, str | None]:
    """The adaptive softmax on a vocabulary too small for any tail cluster (every cutoff at or past its size) is the
    full softmax, which costs little there: returns the config to build (and a line saying so), else `cfg`."""
    if cfg.softmax != "adaptive" or any(c < vocab_size for c in cfg.adaptive_cutoffs):
        return cfg, None
    return dataclasses.replace(cfg, softmax="full"), (
        f"a vocabulary of {vocab_size:,} tokens leaves the adaptive softmax no tail cluster (adaptive_cutoffs "
        f"{list(cfg.adaptive_cutoffs)}): the full softmax, as cheap at this size")


MIN_BS = 16  # fit_min_steps halves bs no further: smaller batches run slower per token on a CPU


def fit_min_steps(cfg: LMConfig, n_tokens: int, epochs: int, n_valid_tokens: int | None = None,
                  world_size: int = 1) -> tuple[LMConfig, str | None]:
    """More optimizer steps for little text: while `n_tokens` over `epochs` give fewer than `cfg.min_steps`
    steps, halve bs (not below MIN_BS). Then, if the training or validation text is too short for one batch of
    bs rows x seq_len (a small target corpus), the largest bs that fits. Returns the config to train with and a
    line saying what changed. With `world_size` processes a step reads world_size*bs rows (bs per process)."""
    def steps(bs: int) -> int:
        return n_tokens // (world_size * bs * cfg.seq_len) * epochs

    notes = []
    bs = engine.halve_batch(cfg.bs, MIN_BS, lambda b: cfg.min_steps <= 0 or steps(b) >= cfg.min_steps)
    if bs != cfg.bs:
        notes.append(f"{n_tokens:,} training tokens x {epochs} epoch{'s' if epochs != 1 else ''} are "
                     f"{steps(cfg.bs):,} optimizer steps at bs {cfg.bs}, fewer than min_steps {cfg.min_steps}: "
                     f"training at bs {bs} ({steps(bs):,} steps; --set min_steps=0 keeps bs {cfg.bs})")
    shortest = min(n_tokens, n_valid_tokens if n_valid_tokens is not None else n_tokens)
    fits = (shortest - 1) // cfg.seq_len // world_size  # rows of seq_len tokens per process the shorter split holds
    if 1 <= fits < bs:
        which = "validation" if n_valid_tokens is not None and n_valid_tokens < n_tokens else "training"
        per = f" for each of {world_size} processes" if world_size > 1 else ""
        notes.append(f"the {which} text has {shortest:,} tokens, too few for one batch of {bs} rows x seq_len "
                     f"{cfg.seq_len}{per}: training at bs {fits}")
        bs = fits
    if bs == cfg.bs:
        return cfg, None
    return dataclasses.replace(cfg, bs=bs), "; ".join(notes)
