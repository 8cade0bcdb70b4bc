"""Vocab: token <-> id, special tokens first, built exactly like fastai's ``make_vocab``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ulmfit._io import atomic_write_text
from ulmfit.errors import UlmfitError
from ulmfit.tokenize.spec import BOS, PAD, SPECIAL_TOKENS, UNK

if TYPE_CHECKING:
    import numpy as np

FAKE = "xxfake"  # padding entries; never produced by a tokenizer, so never looked up


def make_itos(counts: Mapping[str, int] | Iterable[tuple[str, int]], max_vocab: int = 60000,
              min_freq: int = 3) -> list[str]:
    """fastai's ``make_vocab``, entry for entry.

    `counts` in first-occurrence order (as a ``Counter`` filled in corpus order is): the `max_vocab` most
    frequent tokens, ties broken by first occurrence, those seen at least `min_freq` times; special tokens
    moved to the front; cut to `max_vocab`; then padded with "xxfake" to a multiple of 8 (fastai's choice
    for GPU-friendly embedding sizes, kept so that a vocab built here equals the one fastai builds from the
    same corpus and fastai checkpoints import without remapping). Like fastai, a size that is already a
    multiple of 8 still gets 8 fakes.
    """
    items = list(counts.items()) if isinstance(counts, Mapping) else list(counts)
    # sorted() is stable: equal counts keep first-occurrence order, as Counter.most_common does.
    ranked = sorted(items, key=lambda kv: kv[1], reverse=True)[:max_vocab]
    vocab = [w for w, c in ranked if c >= min_freq]
    specials = set(SPECIAL_TOKENS)
    vocab = list(SPECIAL_TOKENS) + [w for w in vocab if w not in specials]
    vocab = vocab[:max_vocab]
    return vocab + [FAKE] * (8 - len(vocab) % 8)


class Vocab:
    """Token strings <-> ids. Tokens not in the vocab map to xxunk (id 0)."""

    def __init__(self, itos: list[str]) -> None:
        itos = list(itos)
        if itos[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise UlmfitError("this vocab does not start with the special tokens "
                              f"{' '.join(SPECIAL_TOKENS)}", hint="it was not made by ulmfit or fastai")
        self.itos = itos
        # The first occurrence wins, and padding entries are not real tokens (fastai does the same).
        self.stoi: dict[str, int] = {}
        for i, w in enumerate(itos):
            if w != FAKE:
                self.stoi.setdefault(w, i)
        self.unk_id, self.pad_id, self.bos_id = self.stoi[UNK], self.stoi[PAD], self.stoi[BOS]
        self.fingerprint = hashlib.sha256("\n".join(itos).encode("utf-8", "surrogatepass")).hexdigest()

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.itos == self.itos

    def __repr__(self) -> str:
        return f"Vocab({len(self.itos)} tokens, {self.fingerprint[:12]})"

    @property
    def dtype(self):
        """The smallest integer type a token store of this vocab needs."""
        import numpy as np

        return np.uint16 if len(self.itos) <= 65535 else np.int32

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        import numpy as np

        get, unk = self.stoi.get, self.unk_id
        return np.fromiter((get(t, unk) for t in tokens), dtype=np.int64)

    def decode_ids(self, ids: Iterable[int]) -> list[str]:
        itos = self.itos
        return [itos[int(i)] for i in ids]

    def oov_rate(self, token_lists: Iterable[Iterable[str]]) -> float:
        """Share of tokens (special tokens included) that map to xxunk."""
        n = unk = 0
        stoi = self.stoi
        for toks in token_lists:
            for t in toks:
                n += 1
                unk += t not in stoi or t == UNK
        return unk / n if n else 0.0

    def save(self, path: Path) -> None:
        """vocab.json: {"itos": [...], "fingerprint": ...}."""
        atomic_write_text(Path(path), json.dumps({"itos": self.itos, "fingerprint": self.fingerprint},
                                                 ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocab:
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.json"
        if not path.exists():
            raise UlmfitError(f"no vocab at {path}", hint="point to a bundle or token store that has vocab.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            itos = data["itos"] if isinstance(data, dict) else data
        except (ValueError, KeyError, TypeError) as e:
            raise UlmfitError(f"{path} is not a vocab file: {e}") from None
        vocab = cls(itos)
        if isinstance(data, dict) and data.get("fingerprint") not in (None, vocab.fingerprint):
            raise UlmfitError(f"{path} is corrupt: its fingerprint does not match its tokens",
                              hint="rebuild it")
        return vocab
