"""Tokenizers (fastai-identical spaCy rules, sentencepiece), the vocab and the decoder.

Light to import: spaCy, sentencepiece and fastai load on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ulmfit.tokenize.compat import check_compatible
from ulmfit.tokenize.spec import SPECIAL_TOKENS, TokenizerSpec
from ulmfit.tokenize.tokenizer import TextTokenizer, train_tokenizer
from ulmfit.tokenize.vocab import Vocab, make_itos

__all__ = ["SPECIAL_TOKENS", "TextTokenizer", "TokenizerSpec", "Vocab", "build_vocab", "check_compatible",
           "make_itos", "train_tokenizer"]


def build_vocab(tokenizer: TextTokenizer, counts: Mapping[str, int] | None = None,
                token_lists: Iterable[list[str]] | None = None) -> Vocab:
    """The vocab for `tokenizer`.

    "rules": fastai's make_vocab over token counts (give `counts` in first-occurrence order, or
    `token_lists` to count), with the spec's max_vocab and min_freq. "sentencepiece": the special tokens,
    then every piece of the model in id order (the model already chose its vocabulary), padded like fastai.
    """
    spec = tokenizer.spec
    if spec.kind == "sentencepiece":
        specials = set(SPECIAL_TOKENS)
        pieces = [p for p in tokenizer.sp_pieces() if p not in specials and p != "<unk>"]
        itos = list(SPECIAL_TOKENS) + pieces
        return Vocab(itos + ["xxfake"] * (8 - len(itos) % 8))
    if counts is None:
        if token_lists is None:
            raise ValueError("build_vocab needs counts or token_lists for a rules tokenizer")
        from collections import Counter

        counts = Counter()
        for toks in token_lists:
            counts.update(toks)
    return Vocab(make_itos(counts, max_vocab=spec.max_vocab, min_freq=spec.min_freq))
