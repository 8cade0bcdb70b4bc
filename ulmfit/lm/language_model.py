"""`LanguageModel`: a trained LM bundle loaded for use — generation and next-token scoring."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ulmfit.bundle import Bundle, read_bundle
from ulmfit.errors import UlmfitError
from ulmfit.generate import SamplingOptions, banned_ids, sample_tokens

if TYPE_CHECKING:
    import torch


class LanguageModel:
    """A language model (AWD-LSTM or QRNN) with its tokenizer and vocabulary, e.g.::

        lm = LanguageModel.load("runs/imdb-lm")          # a bundle or a run dir (→ model-best)
        lm.generate("This movie was", words=30, temperature=0.8, seed=1)   # -> ["This movie was ...", ...]
    """

    def __init__(self, bundle: Bundle, model: torch.nn.Module, device: torch.device) -> None:
        self.bundle = bundle
        self.model = model
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> LanguageModel:
        from ulmfit.lm.model import build_lm, load_lm_state
        from ulmfit.runtime import resolve_device, set_threads

        set_threads()  # ULMFIT_THREADS, else torch's default
        bundle = read_bundle(path, stage="lm")
        dev = resolve_device(device)
        model = build_lm(bundle.arch)
        load_lm_state(model, bundle.load_state("model"), f"the model {bundle.path}")  # a mismatch: one line
        model.to(dev).eval()
        return cls(bundle, model, dev)

    @property
    def vocab(self):
        return self.bundle.vocab

    @property
    def tokenizer(self):
        return self.bundle.tokenizer

    @property
    def backwards(self) -> bool:
        return self.bundle.backwards

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt → ids (with the tokenizer's xxbos); a prompt without any text token is an error."""
        tokens = next(iter(self.tokenizer.tokenize([prompt])))
        if not any(t not in ("xxbos", "xxeos", "xxpad", "xxfld") for t in tokens):
            raise UlmfitError(f"the prompt {prompt!r} contains no text to continue",
                              hint="give a prompt with at least one word")
        return [int(i) for i in self.vocab.encode(tokens)]

    def generate_tokens(self, prompt: str, *, words: int = 50, temperature: float = 1.0, top_k: int = 0,
                        top_p: float = 1.0, samples: int = 1, seed: int | None = None, greedy: bool = False,
                        allow_unk: bool = False) -> tuple[list[str], list[list[str]]]:
        """(prompt tokens, generated tokens per sample) — see `generate`."""
        opts = SamplingOptions(words=words, temperature=temperature, top_k=top_k, top_p=top_p, samples=samples,
                               seed=seed, greedy=greedy, allow_unk=allow_unk)
        opts.validate()
        if self.backwards:
            raise UlmfitError(f"{self.bundle.path} is a backward language model: it predicts the previous word, so "
                              "continuing a prompt is not meaningful", hint="generate with a forward model")
        ids = self.encode_prompt(prompt)
        itos = list(self.vocab.itos)
        gen = sample_tokens(self.model, ids, itos, opts, tokenizer_kind=self.tokenizer.spec.kind,
                            banned=banned_ids(itos, allow_unk=allow_unk))
        return [itos[i] for i in ids], gen

    def generate(self, prompt: str, *, words: int = 50, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, samples: int = 1, seed: int | None = None, greedy: bool = False,
                 allow_unk: bool = False) -> list[str]:
        """`samples` texts, each the prompt followed by `words` generated words, decoded to readable text.

        temperature 0 or greedy=True: argmax (every sample identical). top_k 0 / top_p 1: off. The same seed
        gives the same texts. xxunk is never generated unless allow_unk.
        """
        prompt_toks, gen = self.generate_tokens(prompt, words=words, temperature=temperature, top_k=top_k,
                                                top_p=top_p, samples=samples, seed=seed, greedy=greedy,
                                                allow_unk=allow_unk)
        keep = [t for t in prompt_toks if t not in ("xxbos", "xxpad")]
        return [self.tokenizer.decode(keep + g) for g in gen]

    def __repr__(self) -> str:
        a = self.bundle.arch
        return (f"LanguageModel({self.bundle.path.name}: {self.bundle.direction}, vocab {a.get('vocab_size')}, "
                f"{a.get('name', 'awd_lstm')} {a['n_layers']}x{a['n_hid']}, emb {a['emb_sz']})")
