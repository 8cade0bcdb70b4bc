"""The bag-of-n-grams baseline that every classifier bundle carries: TF-IDF (words and word pairs) + logistic
regression, fitted on the same training split as the neural classifier.

Why it is inside the tool: on a small corpus from a domain the language model has not read, this baseline can beat
the neural model, and a user should see that on their own data (`evaluate` reports both). The two models make
different mistakes, so a weighted mean of their probabilities (the weight chosen on the validation split, 0 and 1
allowed; `choose_weight`) is what `predict` and `evaluate` use when validation says it helps (Mesnil et al., 2014).

Fitting uses scikit-learn (C chosen by stratified cross-validation on the training labels only; the single-label
model's logits then divided by the temperature that calibrates its out-of-fold predictions, `oof_temperature`).
The fitted model is stored without pickle: the vocabulary and analyzer settings as JSON, idf / coefficients /
intercepts as safetensors, and `NgramModel.predict_proba` re-implements the analyzer and the linear model in
numpy, so inference needs neither scikit-learn nor torch.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit._io import read_json, write_json
from ulmfit.classify.metrics import fit_temperature
from ulmfit.classify.task import Task
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
    c: float                  # the chosen inverse regularisation strength (ridge regression: its alpha)
    cv_accuracy: float        # its mean cross-validated score on the training labels (`cv_metric`)
    link: str = "softmax"     # softmax (one label) | sigmoid (a logistic regression per label) | identity (ridge)
    cv_metric: str = "accuracy"  # accuracy | bce (multi-label) | mse (regression)
    temperature: float = 1.0  # the logistic regression's logits were divided by it (`oof_temperature`); in coef

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, K) class probabilities (per-label ones for multi-label; (n, 1) values for a regression), linear in
        the texts' total length."""
        scores = np.empty((len(texts), self.coef.shape[0]), dtype=np.float64)
        for i, text in enumerate(texts):
            x_idx, x_val = self._features(text)
            scores[i] = self.coef[:, x_idx] @ x_val + self.intercept
        if self.link == "identity":
            return scores
        if self.link == "sigmoid":
            return 1.0 / (1.0 + np.exp(-scores))
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
        kind = {"softmax": "tfidf-logreg", "sigmoid": "tfidf-logreg-per-label", "identity": "tfidf-ridge"}[self.link]
        write_json(folder / JSON_FILE, {"kind": kind, "settings": SETTINGS, "classes": self.classes, "link": self.link,
                                        "c": self.c, "cv_accuracy": self.cv_accuracy, "cv_metric": self.cv_metric,
                                        "temperature": self.temperature, "vocab": vocab})
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
                   intercept=arrays["intercept"].astype(np.float64), c=meta["c"], cv_accuracy=meta["cv_accuracy"],
                   link=meta.get("link", "softmax"), cv_metric=meta.get("cv_metric", "accuracy"),
                   temperature=meta.get("temperature", 1.0))


def _analyze(text: str) -> list[str]:
    """scikit-learn's word analyzer for SETTINGS: lowercase, strip accents, \\w\\w+ tokens, uni- and bigrams."""
    text = text.lower()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    tokens = _TOKEN.findall(text)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def fit_ngram(texts: list[str], labels: list, classes: list[str], seed: int, task: Task | None = None) -> NgramModel:
    """TF-IDF + logistic regression on the training texts; C by stratified k-fold cross-validation on them.
    With a multi-label `task` (labels: the label cells), one logistic regression per label; with a regression
    task, ridge regression on the target (`_fit_per_label`, `_fit_ridge`)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict

    kw = {k: tuple(v) if k == "ngram_range" else v for k, v in SETTINGS.items()}
    n_docs = len(texts)
    # min_df 2 / max_df 0.9 would empty the vocabulary of a handful of documents
    if n_docs < 20:
        kw.update(min_df=1, max_df=1.0)
    vec = TfidfVectorizer(**kw, dtype=np.float64)
    x = vec.fit_transform(texts)
    vocab = {g: int(j) for g, j in vec.vocabulary_.items()}
    if task is not None and task.kind != "single-label":
        fit = _fit_per_label if task.kind == "multi-label" else _fit_ridge
        coef, intercept, c, score, metric, link = fit(x, task.truth(labels, "train"), seed)
        return NgramModel(classes=list(classes), vocab=vocab, idf=vec.idf_.astype(np.float64),
                          coef=np.ascontiguousarray(coef, dtype=np.float64),
                          intercept=np.asarray(intercept, dtype=np.float64).reshape(-1), c=c, cv_accuracy=score,
                          link=link, cv_metric=metric)
    y = np.array([classes.index(lab) for lab in labels])
    folds = min(5, int(np.bincount(y, minlength=len(classes)).min()))
    temperature = 1.0
    if folds >= 2:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        grid = GridSearchCV(LogisticRegression(max_iter=2000), {"C": list(C_GRID)}, cv=cv, n_jobs=1).fit(x, y)
        model, c, cv_acc = grid.best_estimator_, float(grid.best_params_["C"]), float(grid.best_score_)
        oof = cross_val_predict(LogisticRegression(max_iter=2000, C=c), x, y, cv=cv, method="decision_function")
        temperature = oof_temperature(oof, y)
    else:  # a class with one example: nothing to cross-validate on
        model, c, cv_acc = LogisticRegression(max_iter=2000, C=1.0).fit(x, y), 1.0, float("nan")
    if len(model.classes_) < len(classes):  # a class absent from training never gets probability mass
        raise UlmfitError("the n-gram model saw fewer classes than the classifier")
    # logits / T: the same decisions, probabilities as sure as the model was out of fold
    coef, intercept = model.coef_ / temperature, model.intercept_ / temperature
    return NgramModel(classes=list(classes), vocab=vocab, idf=vec.idf_.astype(np.float64),
                      coef=np.ascontiguousarray(coef, dtype=np.float64), intercept=np.asarray(intercept, dtype=np.float64),
                      c=c, cv_accuracy=cv_acc, temperature=temperature)


OOF_TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(32.0), 71))  # tried for the out-of-fold calibration


def oof_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The temperature (`metrics.fit_temperature`, over OOF_TEMPERATURES) of the logistic regression's
    out-of-fold decision values `scores` ((n,) for two classes: the second class's logit) on labels `y`. A model
    whose C was chosen for accuracy on a few hundred texts can be far surer than it is right (large C: logits in
    the tens); its probabilities would then outvote the neural model's in the ensemble's mean."""
    logits = np.stack([np.zeros_like(scores), scores], axis=1) if scores.ndim == 1 else scores
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return fit_temperature(y, z / z.sum(axis=1, keepdims=True), grid=OOF_TEMPERATURES)


C_GRID_PER_LABEL = (1.0, 3.0, 10.0)  # fewer than C_GRID: each C costs one fit per label per fold
ALPHA_GRID = (0.3, 1.0, 3.0, 10.0)  # ridge penalties tried by cross-validation


def _fit_per_label(x, y: np.ndarray, seed: int):
    """One logistic regression per label (one C for all, the lowest 3-fold cross-validated binary log-loss)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    def fit(xs, ys, c):
        coef, icpt = np.zeros((ys.shape[1], xs.shape[1])), np.zeros(ys.shape[1])
        for j in range(ys.shape[1]):
            if ys[:, j].min() == ys[:, j].max():  # a label always (or never) on in these rows: a constant
                icpt[j] = 9.0 if ys[0, j] else -9.0
                continue
            m = LogisticRegression(C=c, solver="liblinear", max_iter=1000).fit(xs, ys[:, j])
            coef[j], icpt[j] = m.coef_[0], m.intercept_[0]
        return coef, icpt

    def bce(p, ys):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-(ys * np.log(p) + (1 - ys) * np.log(1 - p)).mean())

    folds = list(KFold(n_splits=3, shuffle=True, random_state=seed).split(np.arange(len(y)))) if len(y) >= 30 else []
    scores = {}
    for c in C_GRID_PER_LABEL if folds else (1.0,):
        losses = []
        for tr, te in folds:
            coef, icpt = fit(x[tr], y[tr], c)
            losses.append(bce(1 / (1 + np.exp(-(x[te] @ coef.T + icpt))), y[te]))
        scores[c] = float(np.mean(losses)) if losses else float("nan")
    c = min(scores, key=lambda k: (scores[k], k)) if folds else 1.0
    coef, icpt = fit(x, y, c)
    return coef, icpt, c, scores[c], "bce", "sigmoid"


def _fit_ridge(x, y: np.ndarray, seed: int):
    """Ridge regression, alpha by 5-fold cross-validated mean squared error."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold

    folds = min(5, len(y) // 2)
    if folds >= 2:
        grid = GridSearchCV(Ridge(), {"alpha": list(ALPHA_GRID)}, scoring="neg_mean_squared_error", n_jobs=1,
                            cv=KFold(n_splits=folds, shuffle=True, random_state=seed)).fit(x, y)
        model, alpha, mse = grid.best_estimator_, float(grid.best_params_["alpha"]), float(-grid.best_score_)
    else:
        model, alpha, mse = Ridge(alpha=1.0).fit(x, y), 1.0, float("nan")
    return model.coef_.reshape(1, -1), np.atleast_1d(model.intercept_), alpha, mse, "mse", "identity"


WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # n-gram weights tried on the validation split


def choose_weight(y: np.ndarray, p_neural: np.ndarray, p_ngram: np.ndarray,
                  loss: Callable[[np.ndarray, np.ndarray], float] | None = None) -> tuple[float, dict[str, Any]]:
    """The n-gram model's weight w in (1-w)·neural + w·n-gram with the lowest validation loss (0 and 1 included):
    `loss(y, outputs)`, by default the log-loss of class ids `y`. Log-loss, not accuracy: on a small validation
    split accuracy moves by whole documents and ties often, while log-loss ranks every weight. Returns
    (w, {w: {"nll", "accuracy"} (or {"loss"} with `loss`)} for the log)."""
    table = {}
    for w in WEIGHTS:
        p = (1 - w) * p_neural + w * p_ngram
        if loss is not None:
            table[w] = {"loss": round(loss(y, p), 6)}
            continue
        nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean())
        table[w] = {"nll": round(nll, 5), "accuracy": round(float((p.argmax(1) == y).mean()), 5)}
    key = "nll" if loss is None else "loss"
    best = min(WEIGHTS, key=lambda w: (table[w][key], w))
    return best, table


def mix(p_neural: np.ndarray, p_ngram: np.ndarray | None, weight: float) -> np.ndarray:
    if p_ngram is None or weight == 0:
        return p_neural
    return (1 - weight) * p_neural + weight * p_ngram
