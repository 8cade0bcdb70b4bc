"""The "sentencepiece" tokenizer: fastai's pre-rules, then a SentencePiece unigram or BPE model.

Like fastai's SentencePieceTokenizer, the special tokens are user-defined symbols written with the
word-start mark ("▁xxbos"), so "xxbos the" becomes the pieces "▁xxbos", "▁the" and never splits a special
token. Our tokens use the plain names ("xxbos"), so vocabularies of both tokenizers start with the same
special tokens at the same ids.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator

from ulmfit.errors import UlmfitError
from ulmfit.tokenize.rules import apply_rules, pre_rules
from ulmfit.tokenize.spec import SPECIAL_TOKENS, TokenizerSpec

WORD_START = "\u2581"  # "▁", sentencepiece's mark for "a space was here"
_SP_SPECIALS = {WORD_START + t: t for t in SPECIAL_TOKENS}
# fastai's character coverage: everything for European languages, a little less for large alphabets.
_EU_LANGS = {"bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "ga", "hr", "hu", "it", "lt", "lv",
             "mt", "nl", "pl", "pt", "ro", "sk", "sl", "sv"}


# sentencepiece's training is mostly single-threaded: on all 75k IMDb train+unsup reviews (~95M characters) it
# took 8.5 minutes of one fast core before a GPU could start training. A 30M-character sample (~23k reviews)
# bounds that time; pieces frequent enough to enter a 15-30k vocabulary still occur many times in such a sample.
SP_TRAIN_CHARS = 30_000_000


def _train_model(texts: Iterable[str], spec: TokenizerSpec, vocab_size: int) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type=spec.sp_model_type, character_coverage=0.99999 if spec.lang in _EU_LANGS else 0.9998,
        unk_id=len(SPECIAL_TOKENS), pad_id=-1, bos_id=-1, eos_id=-1,
        user_defined_symbols=list(_SP_SPECIALS), hard_vocab_limit=False, minloglevel=2,
        # IMDb reviews are long "sentences"; the default 4192 characters would silently drop many.
        max_sentence_length=1 << 16, input_sentence_size=2_000_000, shuffle_input_sentence=True,
        train_extremely_large_corpus=False, num_threads=min(16, os.cpu_count() or 1),
    )
    return model.getvalue()


def train_sentencepiece(texts: Iterable[str], spec: TokenizerSpec) -> tuple[bytes, int]:
    """Train on the pre-processed texts; returns (model bytes, pieces made).

    With a small corpus sentencepiece cannot make `spec.sp_vocab_size` pieces: unigram then makes as many
    as it can (hard_vocab_limit=False); BPE refuses, so we retry with the largest size it names.
    """
    import re

    rules = pre_rules()
    texts = [t for t in map(str, texts) if t.strip()]
    total = sum(map(len, texts))
    if total > SP_TRAIN_CHARS:  # every k-th document: deterministic and spread over the whole corpus
        k = -(-total // SP_TRAIN_CHARS)
        n = len(texts)
        texts = texts[::k]
        print(f"ulmfit: training sentencepiece on {len(texts):,} of {n:,} documents, one in every {k} "
              f"({total:,} characters; the cap is {SP_TRAIN_CHARS:,})", file=sys.stderr)
    processed = [apply_rules(t, rules) for t in texts]
    if not processed:
        raise UlmfitError("cannot train a sentencepiece model on an empty corpus",
                          hint="give the tokenizer some training texts")
    size = spec.sp_vocab_size
    for _ in range(3):
        try:
            model = _train_model(processed, spec, size)
            break
        except RuntimeError as e:  # "Vocabulary size is too high ... Please set it to a value <= N."
            m = re.search(r"value <= (\d+)", str(e))
            if not m or int(m.group(1)) >= size:
                raise UlmfitError(f"sentencepiece training failed: {e}",
                                  hint="try a smaller --sp-vocab-size or more training text") from None
            size = int(m.group(1))
    else:  # pragma: no cover - sentencepiece kept refusing
        raise UlmfitError("sentencepiece training failed", hint="try a smaller vocabulary size")
    made = SentencePiece(model).size
    if made < spec.sp_vocab_size:
        print(f"ulmfit: the corpus is too small for {spec.sp_vocab_size} sentencepiece pieces; "
              f"made {made}", file=sys.stderr)
    return model, made


class SentencePiece:
    """A loaded model (from bytes, never from an absolute path)."""

    def __init__(self, model: bytes) -> None:
        import sentencepiece as spm

        self.model = model
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.size = self.sp.get_piece_size()
        self.rules = pre_rules()
        self._strings: list[str] | None = None

    @property
    def strings(self) -> list[str]:
        """The id -> token table for `ids` (sentencepiece's own ids; unknown characters are "<unk>")."""
        if self._strings is None:
            self._strings = self.pieces()
        return self._strings

    def ids(self, texts: Iterable[str]) -> Iterator[list[int]]:
        rules = self.rules
        for text in texts:
            yield self.sp.encode(apply_rules(str(text), rules), out_type=int)

    def pieces(self) -> list[str]:
        """The model's pieces in id order, special tokens in their plain names."""
        return [_SP_SPECIALS.get(p, p) for p in (self.sp.id_to_piece(i) for i in range(self.size))]

    def __call__(self, texts: Iterable[str]) -> Iterator[list[str]]:
        rules, specials = self.rules, _SP_SPECIALS
        for text in texts:
            pieces = self.sp.encode(apply_rules(str(text), rules), out_type=str)
            yield [specials.get(p, p) for p in pieces]
