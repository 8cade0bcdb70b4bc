"""What a tokenizer is: a small, JSON-serialisable spec recorded in every artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ulmfit.errors import UlmfitError

# fastai's special tokens, in fastai's order (fastai.text.core.defaults.text_spec_tok). They come first in
# every vocab, so ids 0..8 mean the same thing in every model this package (or fastai) makes.
UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ = SPECIAL_TOKENS = (
    "xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj")

KINDS = ("rules", "sentencepiece")
SP_MODEL_TYPES = ("unigram", "bpe")


@dataclass
class TokenizerSpec:
    """Recorded in every artifact's config.json under "tokenizer"."""

    kind: str = "rules"  # "rules" (spaCy + fastai rules) | "sentencepiece"
    lang: str = "en"  # spaCy language code for spacy.blank(lang); sentencepiece: character coverage choice
    sp_model_type: str = "unigram"  # sentencepiece only: "unigram" | "bpe"
    sp_vocab_size: int = 15000  # sentencepiece only: pieces asked for (fewer if the corpus is too small)
    max_vocab: int = 60000  # rules only: most frequent tokens kept
    min_freq: int = 3  # rules only: tokens seen fewer times become xxunk

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise UlmfitError(f"unknown tokenizer {self.kind!r}", hint=f"use one of: {', '.join(KINDS)}")
        if self.sp_model_type not in SP_MODEL_TYPES:
            raise UlmfitError(f"unknown sentencepiece model type {self.sp_model_type!r}",
                              hint=f"use one of: {', '.join(SP_MODEL_TYPES)}")
        if not self.lang or not isinstance(self.lang, str):
            raise UlmfitError("tokenizer language must be a language code such as 'en'")
        for name, low in (("sp_vocab_size", len(SPECIAL_TOKENS) + 2), ("max_vocab", len(SPECIAL_TOKENS)),
                          ("min_freq", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UlmfitError(f"tokenizer {name} must be an integer >= {low}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UlmfitError(f"unknown tokenizer setting(s): {', '.join(unknown)}",
                              hint=f"known settings: {', '.join(sorted(known))}")
        return cls(**d)

    def describe(self) -> str:
        if self.kind == "rules":
            return f"rules(lang={self.lang}, max_vocab={self.max_vocab}, min_freq={self.min_freq})"
        return f"sentencepiece({self.sp_model_type}, vocab={self.sp_vocab_size}, lang={self.lang})"
