"""TextTokenizer: one object for both tokenizers, saved to and loaded from an artifact directory."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from ulmfit._io import atomic_write_bytes, atomic_write_text, sha256_file
from ulmfit.errors import UlmfitError
from ulmfit.tokenize.spec import TokenizerSpec

TOKENIZER_JSON = "tokenizer.json"
SPM_MODEL = "spm.model"


class TextTokenizer:
    """Text -> tokens (and back) for a `TokenizerSpec`.

    "rules": fastai-identical word tokens (see ulmfit.tokenize.rules). "sentencepiece": fastai's pre-rules,
    then the trained model's pieces. Build one with `train_tokenizer` or `TextTokenizer.load`.
    """

    def __init__(self, spec: TokenizerSpec, sp_model: bytes | None = None) -> None:
        spec.validate()
        if spec.kind == "sentencepiece" and sp_model is None:
            raise UlmfitError("a sentencepiece tokenizer needs its trained model (spm.model)",
                              hint="train it with train_tokenizer() or load it from a bundle's tokenizer/ folder")
        self.spec = spec
        self.sp_model = sp_model if spec.kind == "sentencepiece" else None
        self._impl = None  # built on first use: spaCy / sentencepiece load lazily

    # The engine is rebuilt in each worker process from (spec, model bytes) rather than pickled.
    def __getstate__(self) -> dict:
        return {"spec": self.spec.to_dict(), "sp_model": self.sp_model}

    def __setstate__(self, state: dict) -> None:
        self.__init__(TokenizerSpec.from_dict(state["spec"]), state["sp_model"])

    @property
    def impl(self):
        if self._impl is None:
            if self.spec.kind == "rules":
                from ulmfit.tokenize.rules import SpacyRules

                self._impl = SpacyRules(self.spec.lang)
            else:
                from ulmfit.tokenize.sp import SentencePiece

                self._impl = SentencePiece(self.sp_model)
        return self._impl

    @property
    def sp_fingerprint(self) -> str | None:
        if self.sp_model is None:
            return None
        import hashlib

        return hashlib.sha256(self.sp_model).hexdigest()

    def tokenize(self, texts: Iterable[str]) -> Iterator[list[str]]:
        """Token lists, one per text, each starting with xxbos (fastai's lowercase rule adds it)."""
        return self.impl(texts)

    def tokenize1(self, text: str) -> list[str]:
        return next(iter(self.impl([text])))

    def decode(self, tokens: list[str]) -> str:
        """Readable text: xxmaj/xxup/xxrep/xxwrep undone, markers dropped, natural spacing."""
        from ulmfit.tokenize.decode import decode_pieces, decode_words

        decode = decode_words if self.spec.kind == "rules" else decode_pieces
        return decode(list(tokens), self.spec.lang)

    def sp_pieces(self) -> list[str]:
        """All pieces of the sentencepiece model in id order (special tokens under their plain names)."""
        if self.spec.kind != "sentencepiece":
            raise UlmfitError("only a sentencepiece tokenizer has a fixed list of pieces")
        return self.impl.pieces()

    def to_dict(self) -> dict:
        d = {"spec": self.spec.to_dict()}
        if self.sp_model is not None:
            d["sp_model"] = {"file": SPM_MODEL, "sha256": self.sp_fingerprint, "pieces": self.impl.size}
        return d

    def save(self, directory: Path) -> None:
        """tokenizer.json (+ spm.model). No absolute paths: the model is found next to tokenizer.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.sp_model is not None:
            atomic_write_bytes(directory / SPM_MODEL, self.sp_model)
        atomic_write_text(directory / TOKENIZER_JSON, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> TextTokenizer:
        directory = Path(directory)
        path = directory / TOKENIZER_JSON
        if not path.exists():
            raise UlmfitError(f"no tokenizer in {directory} ({TOKENIZER_JSON} is missing)",
                              hint="point to a bundle's tokenizer/ folder or a token store")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            spec = TokenizerSpec.from_dict(data["spec"])
        except (ValueError, KeyError, TypeError) as e:
            raise UlmfitError(f"{path} is not a tokenizer file: {e}") from None
        model = None
        if spec.kind == "sentencepiece":
            mpath = directory / SPM_MODEL
            if not mpath.exists():
                raise UlmfitError(f"the sentencepiece model is missing: {mpath} does not exist",
                                  hint="copy the whole bundle, including tokenizer/spm.model")
            want = (data.get("sp_model") or {}).get("sha256")
            if want and sha256_file(mpath) != want:
                raise UlmfitError(f"{mpath} is not the model this tokenizer was saved with",
                                  hint="restore the bundle's original spm.model")
            model = mpath.read_bytes()
        return cls(spec, model)

    def __repr__(self) -> str:
        return f"TextTokenizer({self.spec.describe()})"


def train_tokenizer(spec: TokenizerSpec, train_texts: Iterable[str]) -> TextTokenizer:
    """A tokenizer for `spec`. "rules" needs no training; "sentencepiece" trains on `train_texts` only."""
    spec.validate()
    if spec.kind == "rules":
        return TextTokenizer(spec)
    from ulmfit.tokenize.sp import train_sentencepiece

    model, _made = train_sentencepiece(train_texts, spec)
    return TextTokenizer(spec, model)
