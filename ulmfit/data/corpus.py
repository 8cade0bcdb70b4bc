"""The one canonical corpus form every stage reads: text, optional label, split."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

SPLITS = ("train", "valid", "test", "unsup")


def fingerprint(texts: list[str], labels: list[str | None], splits: list[str]) -> str:
    """sha256 over the rows; the cache key of token stores, recorded in every artifact."""
    h = hashlib.sha256()
    for t, y, s in zip(texts, labels, splits):
        h.update(s.encode())
        h.update(b"\x1f")
        h.update(b"\x00" if y is None else str(y).encode("utf-8"))
        h.update(b"\x1f")
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


@dataclass
class Corpus:
    texts: list[str]
    labels: list[str | None]  # None = unlabeled (always None in "unsup")
    splits: list[str]  # one of SPLITS per row
    name: str  # short description of the source; never an absolute path
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not (len(self.texts) == len(self.labels) == len(self.splits)):
            raise ValueError("texts, labels and splits must have the same length")
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.texts, self.labels, self.splits)

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, splits: str | Iterable[str]) -> Corpus:
        """Rows of the given split(s), in their original order."""
        wanted = {splits} if isinstance(splits, str) else set(splits)
        idx = [i for i, s in enumerate(self.splits) if s in wanted]
        return Corpus([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                      [self.splits[i] for i in idx], self.name)

    def label_names(self) -> list[str]:
        """Sorted distinct labels (unlabeled rows ignored)."""
        return sorted({y for y in self.labels if y is not None})

    def summary(self) -> dict[str, dict]:
        """Per split: number of documents and class counts."""
        out: dict[str, dict] = {}
        for s in SPLITS:
            ys = [y for y, sp in zip(self.labels, self.splits) if sp == s]
            if ys:
                counts = Counter(y for y in ys if y is not None)
                out[s] = {"documents": len(ys), "labels": dict(sorted(counts.items()))}
        return out
