"""Corpora: readers for the formats users have, the dataset registry, and splits."""

from ulmfit.data.corpus import SPLITS, Corpus

__all__ = ["SPLITS", "Corpus"]
