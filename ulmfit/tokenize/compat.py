"""Clear errors when two artifacts do not share a tokenizer and vocab."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ulmfit.errors import UlmfitError

if TYPE_CHECKING:
    from ulmfit.tokenize.tokenizer import TextTokenizer
    from ulmfit.tokenize.vocab import Vocab


def check_compatible(vocab_a: Vocab, tok_a: TextTokenizer, vocab_b: Vocab, tok_b: TextTokenizer,
                     what_a: str = "the language model", what_b: str = "the data") -> None:
    """Raise UlmfitError naming both sides unless they tokenize and numericalize text the same way."""
    spec_a, spec_b = tok_a.spec, tok_b.spec
    if spec_a.kind != spec_b.kind:
        raise UlmfitError(f"{what_a} uses the {spec_a.kind!r} tokenizer but {what_b} uses {spec_b.kind!r}",
                          hint=f"tokenize {what_b} with {what_a}'s tokenizer (pass its bundle)")
    if spec_a.lang != spec_b.lang:
        raise UlmfitError(f"{what_a} tokenizes {spec_a.lang!r} text but {what_b} was tokenized as {spec_b.lang!r}",
                          hint=f"use the same language as {what_a}")
    if spec_a.kind == "sentencepiece":
        for tok, what in ((tok_a, what_a), (tok_b, what_b)):
            if tok.sp_model is None:
                raise UlmfitError(f"the sentencepiece model of {what} is missing",
                                  hint="copy the whole bundle, including tokenizer/spm.model")
        if tok_a.sp_fingerprint != tok_b.sp_fingerprint:
            raise UlmfitError(f"{what_a} and {what_b} use different sentencepiece models "
                              f"({tok_a.sp_fingerprint[:12]} vs {tok_b.sp_fingerprint[:12]})",
                              hint=f"tokenize {what_b} with {what_a}'s tokenizer")
    if vocab_a.fingerprint != vocab_b.fingerprint:
        raise UlmfitError(f"{what_a} and {what_b} have different vocabularies "
                          f"({len(vocab_a)} tokens, {vocab_a.fingerprint[:12]} vs "
                          f"{len(vocab_b)} tokens, {vocab_b.fingerprint[:12]})",
                          hint=f"numericalize {what_b} with {what_a}'s vocab (build the token store from its bundle)")
