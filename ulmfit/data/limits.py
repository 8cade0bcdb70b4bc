"""Limits on what one archive may unpack to: members and uncompressed bytes, counted as the archive streams.

Defaults: 1,000,000 members and 4 GiB; raise them with ULMFIT_MAX_ARCHIVE_MEMBERS and ULMFIT_MAX_ARCHIVE_BYTES
(e.g. 16G). Shared by the readers (ulmfit.data.readers), the dataset cache (ulmfit.data.registry) and the size cap
on fastai vocabularies (ulmfit.lm.wt103).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ulmfit.errors import UlmfitError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: str, name: str) -> int:
    """A positive byte count from an environment variable: "4294967296", "4G", "512M" (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", value, re.IGNORECASE)
    if not m or int(m.group(1)) <= 0:
        raise UlmfitError(f"{name} must be a positive number of bytes such as 4G or 500M, got {value!r}",
                          hint=f"fix or unset {name}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def size_spelling(n: int) -> str:
    """Bytes as parse_size reads them back: the shortest exact K/M/G/T form ("4G"), else the plain number."""
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def format_size(n: int) -> str:
    """Bytes for a message: "4 GiB", "512 MiB", "1,000 bytes"."""
    spelled = size_spelling(n)
    return f"{spelled[:-1]} {spelled[-1]}iB" if spelled[-1] in _UNITS else f"{n:,} bytes"


def _env_count(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    if not value.strip().isdigit() or int(value) <= 0:
        raise UlmfitError(f"{name} must be a positive whole number, got {value!r}", hint=f"fix or unset {name}")
    return int(value)


MEMBERS_ENV = "ULMFIT_MAX_ARCHIVE_MEMBERS"
BYTES_ENV = "ULMFIT_MAX_ARCHIVE_BYTES"


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may unpack to; `from_env()` applies the overrides (see the module docstring)."""

    max_members: int = 1_000_000
    max_bytes: int = 4 << 30

    @classmethod
    def from_env(cls) -> ArchiveLimits:
        raw = os.environ.get(BYTES_ENV)
        return cls(max_members=_env_count(MEMBERS_ENV, cls.max_members),
                   max_bytes=parse_size(raw, BYTES_ENV) if raw else cls.max_bytes)


class ArchiveBudget:
    """Counts the members and uncompressed bytes of one archive as it streams; one clear error past a limit."""

    def __init__(self, name: str, limits: ArchiveLimits | None = None) -> None:
        self.name = name
        self.limits = limits or ArchiveLimits.from_env()
        self.members = 0
        self.bytes = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UlmfitError(f"refusing {self.name}: it has more than {self.limits.max_members:,} members",
                              hint=f"if you trust the archive, raise the limit, e.g. "
                                   f"{MEMBERS_ENV}={self.limits.max_members * 10}")

    def take(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise UlmfitError(f"refusing {self.name}: it unpacks to more than {format_size(self.limits.max_bytes)}",
                              hint=f"if you trust the archive, raise the limit, e.g. "
                                   f"{BYTES_ENV}={size_spelling(self.limits.max_bytes * 4)}")
