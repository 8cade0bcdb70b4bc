"""The bag-of-n-grams baseline that every classifier bundle carries: TF-IDF (words and word pairs) + logistic
regression, fitted on the same training split as the neural classifier.

Why it is inside the tool: on a small corpus from a domain the language model has not read, this baseline can beat
the neural model, and a user should see that on their own data (`evaluate` reports both). The two models make
different mistakes, so a weighted mean of their probabilities (the weight chosen on the validation split, 0 and 1
allowed; `choose_weight`) is what `predict` and `evaluate` use when validation says it helps (Mesnil et al., 2014).

Fitting uses scikit-learn (C chosen by stratified cross-validation on the training labels only). The fitted model
is stored without pickle: the vocabulary and analyzer settings as JSON, idf / coefficients / intercepts as
safetensors, and `NgramModel.predict_proba` re-implements the analyzer and the linear model in numpy, so inference
needs neither scikit-learn nor torch.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit._io import read_json, write_json
from ulmfit.errors import UlmfitError

JSON_FILE, ARRAYS_FILE = "ngram.json", "ngram.safetensors"
# The analyzer, fixed: scikit-learn's TfidfVectorizer with these settings, re-implemented in `_analyze`.
SETTINGS = {"ngram_range": [1, 2], "min_df": 2, "max_df": 0.9, "sublinear_tf": True, "lowercase": True,
            "strip_accents": "unicode", "token_pattern": r"(?u)\b\w\w+\b", "max_features": 100_000}
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # regularisation strengths tried by cross-validation
_TOKEN = re.compile(SETTINGS["token_pattern"])


@dataclass
class NgramModel:
    classes: list[str]        # the label of each probability column, in the classifier's label order
    vocab: dict[str, int]     # n-gram -> feature column
    idf: np.ndarray           # (V,)
    coef: np.ndarray          # (K, V), or (1, V) for two classes (the second class's logit)
    intercept: np.ndarray     # (K,) or (1,)
    c: float                  # the chosen inverse regularisation strength
    cv_accuracy: float        # its mean cross-validated accuracy on the training labels

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, K) class probabilities, linear in the texts' total length."""
        scores = np.empty((len(texts), self.coef.shape[0]), dtype=np.float64)
        for i, text in enumerate(texts):
            x_idx, x_val = self._features(text)
            scores[i] = self.coef[:, x_idx] @ x_val + self.intercept
        if self.coef.shape[0] == 1:  # binary logistic regression: sigmoid of the second class's logit
            p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def _features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        counts = Counter(g for g in _analyze(text) if g in self.vocab)
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        idx = np.fromiter((self.vocab[g] for g in counts), dtype=np.int64, count=len(counts))
        tf = np.fromiter((1.0 + math.log(n) for n in counts.values()), dtype=np.float64, count=len(counts))
        val = tf * self.idf[idx]
        return idx, val / np.linalg.norm(val)

    # ---- storage: JSON + safetensors, never pickle --------------------------------------------------------

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        vocab = [""] * len(self.vocab)
        for g, j in self.vocab.items():
            vocab[j] = g
        write_json(folder / JSON_FILE, {"kind": "tfidf-logreg", "settings": SETTINGS, "classes": self.classes,
                                        "c": self.c, "cv_accuracy": self.cv_accuracy, "vocab": vocab})
        # C order: safetensors writes the raw buffer, and scikit-learn's coef_ can be Fortran-ordered
        arrays = {"idf": self.idf, "coef": self.coef, "intercept": self.intercept}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / ARRAYS_FILE))

    @classmethod
    def load(cls, folder: Path) -> NgramModel:
        from safetensors.numpy import load_file

        path, arrays_path = Path(folder) / JSON_FILE, Path(folder) / ARRAYS_FILE
        if not path.is_file() or not arrays_path.is_file():
            raise UlmfitError(f"{folder} has no complete n-gram model ({JSON_FILE} + {ARRAYS_FILE})",
                              hint="train the classifier again, or pass --ngram-weight 0 to use the neural model alone")
        meta = read_json(path)
        if meta.get("settings") != SETTINGS:
            raise UlmfitError(f"{path}: n-gram settings differ from this version's", hint="train the classifier again")
        arrays = load_file(str(arrays_path))
        return cls(classes=meta["classes"], vocab={g: j for j, g in enumerate(meta["vocab"])},
                   idf=arrays["idf"].astype(np.float64), coef=arrays["coef"].astype(np.float64),
                   intercept=arrays["intercept"].astype(np.float64), c=meta["c"], cv_accuracy=meta["cv_accuracy"])


def _analyze(text: str) -> list[str]:
    """scikit-learn's word analyzer for SETTINGS: lowercase, strip accents, \\w\\w+ tokens, uni- and bigrams."""
    text = text.lower()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    tokens = _TOKEN.findall(text)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def fit_ngram(texts: list[str], labels: list[str], classes: list[str], seed: int) -> NgramModel:
    """TF-IDF + logistic regression on the training texts; C by stratified k-fold cross-validation on them."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    kw = {k: tuple(v) if k == "ngram_range" else v for k, v in SETTINGS.items()}
    n_docs = len(texts)
    # min_df 2 / max_df 0.9 would empty the vocabulary of a handful of documents
    if n_docs < 20:
        kw.update(min_df=1, max_df=1.0)
    vec = TfidfVectorizer(**kw, dtype=np.float64)
    x = vec.fit_transform(texts)
    y = np.array([classes.index(lab) for lab in labels])
    folds = min(5, int(np.bincount(y, minlength=len(classes)).min()))
    if folds >= 2:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        grid = GridSearchCV(LogisticRegression(max_iter=2000), {"C": list(C_GRID)}, cv=cv, n_jobs=1).fit(x, y)
        model, c, cv_acc = grid.best_estimator_, float(grid.best_params_["C"]), float(grid.best_score_)
    else:  # a class with one example: nothing to cross-validate on
        model, c, cv_acc = LogisticRegression(max_iter=2000, C=1.0).fit(x, y), 1.0, float("nan")
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) < len(classes):  # a class absent from training never gets probability mass
        raise UlmfitError("the n-gram model saw fewer classes than the classifier")
    vocab = {g: int(j) for g, j in vec.vocabulary_.items()}
    return NgramModel(classes=list(classes), vocab=vocab, idf=vec.idf_.astype(np.float64),
                      coef=np.ascontiguousarray(coef, dtype=np.float64), intercept=np.asarray(intercept, dtype=np.float64),
                      c=c, cv_accuracy=cv_acc)


WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # n-gram weights tried on the validation split


def choose_weight(y: np.ndarray, p_neural: np.ndarray, p_ngram: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The n-gram model's weight w in (1-w)·neural + w·n-gram with the lowest validation log-loss (0 and 1
    included). Log-loss, not accuracy: on a small validation split accuracy moves by whole documents and ties
    often, while log-loss ranks every weight. Returns (w, {w: {"nll", "accuracy"}} for the log)."""
    table = {}
    for w in WEIGHTS:
        p = (1 - w) * p_neural + w * p_ngram
        nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean())
        table[w] = {"nll": round(nll, 5), "accuracy": round(float((p.argmax(1) == y).mean()), 5)}
    best = min(WEIGHTS, key=lambda w: (table[w]["nll"], w))
    return best, table


def mix(p_neural: np.ndarray, p_ngram: np.ndarray | None, weight: float) -> np.ndarray:
    if p_ngram is None or weight == 0:
        return p_neural
    return (1 - weight) * p_neural + weight * p_ngram
