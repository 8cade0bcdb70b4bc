"""What `finetune` starts from: the pretrained model, its architecture, and the domain vocabulary.

    open_pretrained         --pretrained → our LM bundle, or fastai's WikiText-103 checkpoint (folder or registry name)
    adopt_pretrained_arch   the config takes the pretrained architecture (and a bundle's tokenizer)
    start_from_pretrained   the domain token store and the initial weights, re-indexed to the domain vocabulary
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ulmfit.bundle import check_direction, locate, read_bundle
from ulmfit.data import Corpus, get_dataset
from ulmfit.errors import UlmfitError
from ulmfit.lm.adaptive import extend_state, is_adaptive_state
from ulmfit.lm.config import TOKENIZER_KEYS, LMConfig
from ulmfit.lm.model import arch_from_state, normalize_state
from ulmfit.lm.wt103 import extend_embeds, find_checkpoint, load_itos, load_pth_state, match_embeds
from ulmfit.store import TokenStore, build_store
from ulmfit.tokenize import TokenizerSpec, Vocab
from ulmfit.tokenize.vocab import FAKE

WT103_NAMES = ("wt103", "wt103-fwd", "wt103-bwd")   # registry names of fastai's archives


def open_pretrained(pretrained: str | Path, backwards: bool) -> dict[str, Any]:
    """Classify the --pretrained argument: our bundle, or a fastai checkpoint folder (or registry name)."""
    p = locate(pretrained)  # a shared archive (URL or .tar.gz) is fetched and extracted once
    if not p.exists() and str(pretrained) in WT103_NAMES:
        # the registry downloads (or finds) fastai's archive
        name = str(pretrained) if str(pretrained) != "wt103" else ("wt103-bwd" if backwards else "wt103-fwd")
        p = get_dataset(name)
    if not p.exists():
        raise UlmfitError(f"pretrained model not found: {p}",
                          hint="pass an LM bundle (the --out of `ulmfit pretrain`) or a folder with fastai's "
                               "lstm_fwd.pth + itos_wt103.pkl")
    if (p / "meta.json").is_file() or (p / "model-best").is_dir() or (p / "model-last").is_dir():
        b = read_bundle(p, stage="lm")
        check_direction(b, backwards)
        return {"kind": "bundle", "bundle": b, "name": b.meta.get("data", {}).get("source", p.name),
                "preset": b.config.get("preset")}
    ck = find_checkpoint(p, backwards)
    if ck is None:
        raise UlmfitError(f"{p} is neither an LM bundle nor a fastai checkpoint folder",
                          hint="pass the --out of `ulmfit pretrain`, or a folder with lstm_fwd.pth + itos_wt103.pkl")
    return {"kind": "fastai-wt103", "checkpoint": ck, "name": ck.name}


def adopt_pretrained_arch(cfg: LMConfig, source: dict, explicit: set[str] | frozenset[str]) -> LMConfig:
    """The architecture (and, for bundles, the tokenizer) comes from the pretrained model; explicit
    contradictions are errors."""
    if source["kind"] == "bundle":
        b = source["bundle"]
        arch = b.arch
        lm_cfg = b.config.get("lm_config", {})
        size_keys = ("emb_sz", "n_hid", "n_layers", "tie_weights", "out_bias")
        taken = {"arch": arch.get("name", "awd_lstm"), **{k: arch[k] for k in size_keys if k in arch},
                 "softmax": arch.get("softmax", "full")}
        if taken["softmax"] == "adaptive":  # the cutoffs the pretrained vocabulary kept
            taken.update(adaptive_cutoffs=tuple(arch["adaptive_cutoffs"]), adaptive_div=arch["adaptive_div"])
        tok_spec = b.config.get("tokenizer", {})
        tok_vals = {"tokenizer": tok_spec.get("kind"), "lang": tok_spec.get("lang"),
                    "max_vocab": tok_spec.get("max_vocab"), "min_freq": tok_spec.get("min_freq"),
                    "sp_vocab_size": tok_spec.get("sp_vocab_size"), "sp_model_type": tok_spec.get("sp_model_type")}
        tok_vals = {k: v for k, v in tok_vals.items() if v is not None}
        what = f"the pretrained model {b.path}"
    else:
        state = normalize_state(load_pth_state(source["checkpoint"].weights))
        found = arch_from_state(state)
        taken = {"arch": "awd_lstm", **{k: found[k] for k in ("emb_sz", "n_hid", "n_layers", "out_bias")}}
        taken.update(tie_weights=True, softmax="full")
        tok_vals = {"tokenizer": "rules", "lang": "en"}
        lm_cfg = {}
        what = f"fastai's checkpoint {source['name']}"
    vocab_size = source["bundle"].arch.get("vocab_size") if source["kind"] == "bundle" else None
    for k, v in {**taken, **tok_vals}.items():
        mine = getattr(cfg, k)
        if k == "adaptive_cutoffs" and vocab_size:  # cutoffs past the vocabulary were dropped from the bundle's
            mine = tuple(c for c in mine if c < vocab_size)
        if k in explicit and mine != v:
            kind = "tokenizer" if k in TOKENIZER_KEYS else "architecture"
            raise UlmfitError(f"{what} has {k}={v!r} but you asked for {k}={getattr(cfg, k)!r} ({kind} mismatch)",
                              hint=f"drop the {k} override: lm-finetune keeps the pretrained {kind}"
                                   + (" (an output layer is not converted into the other)" if k == "softmax" else ""))
    changes = dict(taken)
    changes.update(tok_vals)
    # dropouts are a fine-tuning choice (drop_mult); the base dropout ratios follow the pretrained model
    for k in ("output_p", "hidden_p", "input_p", "embed_p", "weight_p"):
        if k in lm_cfg and k not in explicit:
            changes[k] = lm_cfg[k]
    return dataclasses.replace(cfg, **changes)


def start_from_pretrained(source: dict, corpus: Corpus, cfg: LMConfig,
                          log: Callable[[str], None]) -> tuple[TokenStore, dict, list[str]]:
    """The domain token store, the initial weights for its vocabulary, and notes on how they were made.

    - Our bundle: its tokenizer and vocabulary as they are (the classifier then shares them), or extended with
      frequent domain words when cfg.ft_extend_vocab is set.
    - fastai's WT103: a rules tokenizer + vocabulary built on the domain corpus; the pretrained rows re-indexed
      with fastai's `match_embeds`; the overlap is recorded in `source["overlap"]`.
    """
    if source["kind"] == "bundle" and cfg.ft_extend_vocab:
        store, init_state, note = _extend_vocab(source, corpus, cfg.ft_extend_vocab)
        return store, init_state, [note]
    if source["kind"] == "bundle":
        b = source["bundle"]
        store = build_store(corpus, tokenizer=b.tokenizer, vocab=b.vocab)
        return store, b.load_state("model"), [f"reusing the pretrained tokenizer ({b.tokenizer.spec.kind}) and "
                                              f"vocabulary ({len(b.vocab.itos)} tokens) as they are"]
    log("building the domain vocabulary (rules tokenizer, as fastai's WT103 model) ...")
    store = build_store(corpus, spec=TokenizerSpec(**cfg.tokenizer_spec()))
    state = normalize_state(load_pth_state(source["checkpoint"].weights))
    init_state, match = match_embeds(state, load_itos(source["checkpoint"].itos), list(store.vocab.itos))
    source["overlap"] = {"found": match.n_found, "domain_vocab": match.n_new, "pretrained_vocab": match.n_old,
                         "ratio": round(match.overlap, 4)}
    return store, init_state, [match.describe()]


def _extend_vocab(source: dict, corpus: Corpus, n_max: int) -> tuple[TokenStore, dict, str]:
    """Our bundle's vocab + up to `n_max` frequent domain words it lacks (rules tokenizer only).

    The domain vocabulary is built with the bundle's own tokenizer and spec (max_vocab, min_freq); the new words
    are appended after the pretrained ids (which keep their rows) and their embedding/decoder rows start from
    the mean, as in fastai's `match_embeds`.
    """
    b = source["bundle"]
    if b.tokenizer.spec.kind != "rules":
        raise UlmfitError("ft_extend_vocab needs a rules-tokenizer model: sentencepiece has no unknown words",
                          hint="drop --set ft_extend_vocab")
    old = list(b.vocab.itos)
    domain = build_store(corpus, tokenizer=b.tokenizer)   # the domain vocab, in frequency order
    have = set(old)
    new = [w for w in domain.vocab.itos if w not in have and w != FAKE][:n_max]
    itos = old + new
    itos += [FAKE] * (-len(itos) % 8)                      # fastai keeps vocab sizes a multiple of 8
    vocab = Vocab(itos)
    state = normalize_state(b.load_state("model"))
    # an adaptive softmax: the new ids join its last (rarest) tail cluster
    state = extend_state(state, len(itos)) if is_adaptive_state(state) else extend_embeds(state, len(itos))
    source["extended"] = {"added": len(new), "pretrained_vocab": len(old), "vocab": len(itos)}
    store = build_store(corpus, tokenizer=b.tokenizer, vocab=vocab)
    return store, state, (f"extending the pretrained vocabulary of {len(old)} tokens with {len(new)} frequent "
                          f"domain words (mean embedding to start); reusing the pretrained tokenizer")
