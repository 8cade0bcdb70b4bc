"""A synthetic corpus for smoke tests and benchmarks: numbers written in words (fastai's "human numbers").

Each document counts upward from a random start: "one hundred and five , one hundred and six , ...". The
next token is predictable from the context, so a working LM quickly beats the most-frequent-token baseline.
"""

from __future__ import annotations

import random

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """0 <= n < 1_000_000 in English words, e.g. 2041 -> "two thousand forty one"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def human_numbers(n_docs: int = 200, numbers_per_doc: int = 20, seed: int = 0, max_start: int = 9000,
                  valid_pct: float = 0.1, test_docs: int = 0, name: str = "human-numbers"):
    """A `Corpus` of counting documents with train / valid (/ test) splits; labels say whether the start was even."""
    from ulmfit.data import Corpus

    rng = random.Random(seed)
    texts, labels, splits = [], [], []
    n_valid = max(1, int(round(n_docs * valid_pct)))
    for i in range(n_docs + test_docs):
        start = rng.randrange(1, max_start)
        texts.append(" , ".join(number_words(k) for k in range(start, start + numbers_per_doc)))
        labels.append("even" if start % 2 == 0 else "odd")
        splits.append("test" if i >= n_docs else ("valid" if i < n_valid else "train"))
    return Corpus(texts, labels, splits, name)
