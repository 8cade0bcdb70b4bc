"""What every reader returns (`Rows`: texts, labels, splits) and how bytes become text.

Decoding policy: bytes are read as UTF-8 (a BOM is dropped). Bytes that are not valid UTF-8 are replaced by
U+FFFD rather than failing, and the caller warns with the number of affected documents (`warn_not_utf8`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

FORMATS = ("folder", "csv", "tsv", "jsonl", "parquet", "text")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
                 "dev": "valid", "test": "test", "unsup": "unsup", "unlabeled": "unsup", "unlabelled": "unsup"}


@dataclass
class Rows:
    texts: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    n_replaced: int = 0  # documents that had bytes which are not UTF-8 (replaced by U+FFFD)

    def add(self, text: str, label: str | None, split: str) -> None:
        self.texts.append(text)
        self.labels.append(None if split == "unsup" else label)
        self.splits.append(split)

    def extend(self, other: Rows) -> None:
        self.texts += other.texts
        self.labels += other.labels
        self.splits += other.splits
        self.n_replaced += other.n_replaced


def decode_bytes(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="replace"), True


def warn_not_utf8(name: str, n_documents: int) -> None:
    """The one warning every command prints when input bytes were not UTF-8."""
    if n_documents:
        print(f"warning: {name}: {n_documents:,} document(s) had bytes that are not UTF-8; "
              "they were replaced by U+FFFD", file=sys.stderr)


def count_replaced(bad: bool, texts: Iterable[str]) -> int:
    # A file of many documents is decoded once; the affected documents are those holding U+FFFD.
    return sum("\ufffd" in t for t in texts) if bad else 0
