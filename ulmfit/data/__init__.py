"""Corpora: readers for the formats users have, the dataset registry, and splits.

Only the standard library is imported here (pyarrow only when a parquet file is read), so the CLI stays fast.
"""

from ulmfit.data.corpus import SPLITS, Corpus
from ulmfit.data.info import corpus_info
from ulmfit.data.load import load_corpus
from ulmfit.data.registry import DATASETS, get_dataset
from ulmfit.data.splits import require_labels, subsample

__all__ = ["SPLITS", "Corpus", "DATASETS", "corpus_info", "get_dataset", "load_corpus", "require_labels",
           "subsample"]
