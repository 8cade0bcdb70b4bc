"""A bag-of-words classifier: TF-IDF over words and word pairs, logistic regression with its C chosen by 5-fold
cross-validation on the labels it is given (no other labels are used to tune it).

It is the baseline ULMFiT is measured against (scripts/bench_imdb.py), and self-training's second opinion
(`--self-train-tfidf`): its errors are not the LSTM's, so averaging its probabilities with the teacher's gives the
student better pseudo-labels (docs/bench/imdb.md, tenth pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ulmfit.errors import UlmfitError

C_GRID = [0.3, 1, 3, 10, 30, 100]


def fit_tfidf(texts: Sequence[str], labels: Sequence[str], seed: int = 0) -> tuple[Any, Any]:
    """(fitted GridSearchCV of a LogisticRegression, fitted TfidfVectorizer) for `texts` and their `labels`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    if len(counts) < 2 or counts.min() < 2:
        raise UlmfitError("the TF-IDF model needs at least two labels with two training documents each",
                          hint="give it more labelled documents, or turn it off")
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.9, sublinear_tf=True, strip_accents="unicode")
    x_train = vec.fit_transform(texts)
    cv = StratifiedKFold(n_splits=int(min(5, counts.min())), shuffle=True, random_state=seed)
    grid = GridSearchCV(LogisticRegression(max_iter=2000), {"C": C_GRID}, cv=cv, n_jobs=1)
    grid.fit(x_train, list(labels))
    return grid, vec


def tfidf_proba(model: tuple[Any, Any], texts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Probabilities of `model` (from `fit_tfidf`) for `texts`, one column per entry of `labels`, in that order."""
    grid, vec = model
    classes = [str(c) for c in grid.classes_]
    missing = [lab for lab in labels if lab not in classes]
    if missing:
        raise UlmfitError(f"the TF-IDF model never saw the label(s) {', '.join(missing)}")
    return grid.predict_proba(vec.transform(texts))[:, [classes.index(lab) for lab in labels]]
