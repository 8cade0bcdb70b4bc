"""`suggest`: which unlabeled texts to label next (active learning), ranked by one classifier or an ensemble.

The acquisition rule, top to bottom:

    score      what a label would teach the model, per text, from what `predict` outputs:
               - one single-label model: 1 - (p1 - p2), one minus the margin between its two most probable labels
                 (1: on the decision boundary; 0: certain). The margin, not the entropy: with many labels the
                 entropy is raised by the tail of unlikely ones, and what a label settles is the top two.
               - one multi-label model: 1 - the distance of the label closest to its decision threshold, that
                 distance scaled to [0, 1] on its side of the threshold ((t - p) / t below it, (p - t) / (1 - t)
                 above), so that a label whose threshold is 0.1 is judged as fairly as one at 0.5.
               - several models (an ensemble, e.g. forward + backward): their disagreement, the mean KL divergence
                 of each model's distribution from the ensemble's mean (per label and averaged over the labels for
                 multi-label); for regression models the standard deviation of their values.
               - one regression model: refused; it gives a value, not a probability to be unsure with.
    shortlist  the `candidates` highest scores (default CANDIDATES x n)
    spread     greedy k-center over the shortlist on the first model's pooled document vectors (the
               [last, max, mean] pooling of the encoder's outputs that its head reads; cosine distance): the top
               text first, then always the shortlisted text farthest from every pick so far. The texts with the
               top scores alone are often near-duplicates, one kind of ambiguous text many times over, and a
               hundred labels of one kind teach the model one thing; spread over the uncertain region, every pick
               is still uncertain and they teach it many (uncertainty, then diversity among the uncertain:
               Cluster-Margin, Citovsky et al. 2021). `candidates` = n turns the spreading off. `spread="kmeans"`
               spreads them the other way: k-means into n groups, the text nearest each group's centre (typical
               texts of every kind, where k-center reaches for the farthest ones, outliers included).
    write      the picks, highest score first, as a CSV to fill in: text, an empty label column, rank, score and
               the predicted label(s) or value (`ulmfit.data.merge` reads it back)

Texts are compared with their whitespace normalised: a text given twice in the pool is ranked once, and texts of
the `exclude` sources (already labelled) are not ranked at all. Ties are broken by pool order, so the same models
and pool give the same file.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ulmfit._io import atomic_write_text
from ulmfit._outputs import check_output_file
from ulmfit.classify.classifier import Classifier, ensemble_proba, ensemble_records, load_models
from ulmfit.classify.model import predict_ids
from ulmfit.classify.predict import MAX_CHARS, check_max_chars, clip_texts, input_format, iter_texts
from ulmfit.data import load_corpus
from ulmfit.data.merge import NO_LABEL, SUGGESTION_COLUMNS, is_suggestion_file, text_key
from ulmfit.errors import UlmfitError

SPREAD = "kcenter"  # how the picks are spread over the shortlist: a key of SPREADS
CANDIDATES = 5  # the shortlist the picks are spread over: this many times n of the highest scores
EPS = 1e-7  # keeps logarithms and divisions finite at probabilities of exactly 0 or 1


@dataclass
class Ranking:
    order: np.ndarray  # indices of the picked texts, highest score first
    scores: np.ndarray  # every text's score
    outputs: np.ndarray  # what predict outputs for every text (the ensemble's mean)
    rule: str  # the score, in words
    shortlist: int  # how many top-scoring texts the picks were spread over


@dataclass
class SuggestResult:
    out: Path
    picked: int
    ranked: int  # texts of the pool that were ranked
    excluded: int  # skipped: already in an --exclude source
    duplicates: int  # skipped: the same text earlier in the pool
    rule: str
    shortlist: int
    seconds: float


# ------------------------------------------------------------------------------------------- scores


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2) per row of single-label probabilities."""
    top2 = np.sort(probs, axis=1)[:, -2:]  # (n, 2): second, first
    return 1.0 - (top2[:, 1] - top2[:, 0])


def threshold_scores(probs: np.ndarray, thresholds: Iterable[float]) -> np.ndarray:
    """1 - the scaled distance of the label closest to its threshold, per row of multi-label probabilities."""
    t = np.clip(np.asarray(list(thresholds), dtype=np.float64), EPS, 1 - EPS)[None, :]
    dist = np.where(probs >= t, (probs - t) / (1 - t), (t - probs) / t)  # (n, labels), each in [0, 1]
    return 1.0 - dist.min(axis=1)


def disagreement(each: list[np.ndarray], kind: str) -> np.ndarray:
    """How much the models of an ensemble disagree on each text: the mean KL divergence of each model's
    distribution from their mean (Bernoulli per label for multi-label), or the std of their values (regression)."""
    p = np.stack(each).astype(np.float64)  # (models, n, outputs)
    if kind == "regression":
        return p[:, :, 0].std(axis=0)
    if kind == "multi-label":
        p = np.stack([p, 1 - p], axis=-1)  # (models, n, labels, 2)
    p = np.clip(p, EPS, 1)
    kl = (p * np.log(p / p.mean(axis=0, keepdims=True))).sum(axis=-1)  # (models, n[, labels])
    kl = kl.mean(axis=0)
    return kl.mean(axis=-1) if kind == "multi-label" else kl


def acquisition(models: list, mean: np.ndarray, each: list[np.ndarray]) -> tuple[np.ndarray, str]:
    """(score per text, the rule in words) for these models' outputs; see the module docstring."""
    kind = models[0].task.kind if getattr(models[0], "task", None) is not None else "single-label"
    if len(models) > 1:
        what = "the std of their values" if kind == "regression" else "the mean KL divergence from their mean"
        return disagreement(each, kind), f"disagreement of {len(models)} models ({what})"
    if kind == "regression":
        raise UlmfitError("one regression model gives a value, not a probability to be unsure with",
                          hint="pass two or more regression bundles (e.g. other seeds): their disagreement ranks "
                          "the texts")
    if kind == "multi-label":
        return threshold_scores(mean, models[0].thresholds), "1 - distance of the closest label to its threshold"
    return margin_scores(mean), "1 - (p1 - p2), the margin between the two most probable labels"


# ------------------------------------------------------------------------------------------- diversity


class _Pooled(torch.nn.Module):
    """A classifier's pooled document vector, [last, max, mean] of its encoder's outputs: what its head reads."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        from fastai.text.models.core import masked_concat_pool

        out, mask = self.model[0](x)  # (bs, tokens, emb), (bs, tokens)
        return (masked_concat_pool(out, mask, self.model[1].bptt),)  # (bs, 3 * emb)


def pooled_vectors(clf: Classifier, texts: list[str], *, bs: int | None = None) -> np.ndarray:
    """(n_texts, 3 * emb_sz) pooled vectors, rows in input order, batched as `predict` batches."""
    return predict_ids(_Pooled(clf.model), clf.numericalize(texts), bs=bs or max(clf.config.bs, 64),
                       pad_idx=clf.vocab.pad_id, seq_len=clf.config.seq_len, backwards=clf.backwards,
                       bos_idx=clf.vocab.bos_id, device=clf.device, activation="none")


def k_center(vectors: np.ndarray, k: int) -> list[int]:
    """Greedy k-center (cosine distance): row 0 first, then always the row farthest from every pick so far;
    ties go to the lower row."""
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    picked = [0]
    dist = 1.0 - x @ x[0]
    dist[0] = -np.inf
    while len(picked) < min(k, len(x)):
        i = int(np.argmax(dist))
        picked.append(i)
        dist = np.minimum(dist, 1.0 - x @ x[i])
        dist[picked] = -np.inf
    return picked


def k_means(vectors: np.ndarray, k: int, *, iters: int = 25, seed: int = 0) -> list[int]:
    """One row per cluster of spherical k-means (cosine): the row nearest its cluster's centre. k-means++ starts
    from row 0 (seeded), so the same rows give the same picks; a cluster left empty gives no row, and the picks
    are topped up with the lowest rows not picked (the shortlist is in score order)."""
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if k >= len(x):
        return list(range(len(x)))
    rng = np.random.default_rng(seed)
    starts, dist = [0], 1.0 - x @ x[0]
    while len(starts) < k:
        w = np.maximum(dist, 0.0) ** 2
        w[starts] = 0.0
        i = int(rng.choice(len(x), p=w / w.sum())) if w.sum() > 0 else next(j for j in range(len(x)) if j not in starts)
        starts.append(i)
        dist = np.minimum(dist, 1.0 - x @ x[i])
    centres = x[starts]
    for _ in range(iters):
        assign = np.argmax(x @ centres.T, axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        filled = np.bincount(assign, minlength=k) > 0
        moved = centres.copy()
        moved[filled] = sums[filled] / np.maximum(np.linalg.norm(sums[filled], axis=1, keepdims=True), 1e-12)
        if np.allclose(moved, centres):
            break
        centres = moved
    sim = x @ centres.T
    assign = np.argmax(sim, axis=1)
    picked = []
    for j in range(k):
        members = np.flatnonzero(assign == j)
        if len(members):
            picked.append(int(members[np.argmax(sim[members, j])]))
    taken = set(picked)
    return picked + [i for i in range(len(x)) if i not in taken][:k - len(picked)]


SPREADS = {"kcenter": k_center, "kmeans": k_means}
SPREAD_WORDS = {"kcenter": "greedy k-center", "kmeans": "k-means (the text nearest each centre)"}


# ------------------------------------------------------------------------------------------- ranking


def rank_texts(models: list, texts: list[str], n: int, *, candidates: int | None = None, bs: int | None = None,
               max_chars: int = MAX_CHARS, progress: bool = False, spread: str = SPREAD) -> Ranking:
    """The `n` texts to label next of `texts` (see the module docstring), and every text's score."""
    check_counts(n, candidates)
    check_spread(spread)
    if not texts:
        raise UlmfitError("there are no texts to rank", hint="check the unlabeled file and --exclude")
    texts, _ = clip_texts(texts, max_chars)
    mean, each = ensemble_proba(models, texts, bs=bs, progress=progress, max_chars=0)
    scores, rule = acquisition(models, mean, each)
    by_score = np.argsort(-scores, kind="stable")  # ties: pool order
    short = by_score[:min(len(texts), candidates or CANDIDATES * n)]
    if len(short) > n:
        encoder = next((m for m in models if isinstance(m, Classifier)), None)
        if encoder is None:
            raise UlmfitError("spreading the picks needs a classifier bundle's encoder, and every model given is an "
                              "`ulmfit export` folder", hint=f"pass a bundle too, or --candidates {n}")
        chosen = short[SPREADS[spread](pooled_vectors(encoder, [texts[i] for i in short], bs=bs), n)]
        picked = chosen[np.argsort(-scores[chosen], kind="stable")]
    else:
        picked = short[:n]
    return Ranking(order=picked, scores=scores, outputs=mean, rule=rule, shortlist=len(short))


def check_counts(n: int, candidates: int | None) -> None:
    if n < 1:
        raise UlmfitError(f"--n must be at least 1, not {n}")
    if candidates is not None and candidates < n:
        raise UlmfitError(f"--candidates {candidates} is fewer than --n {n}",
                          hint=f"pass at least {n}; {n} ranks by score alone")


def check_spread(spread: str) -> None:
    if spread not in SPREADS:
        raise UlmfitError(f"--spread {spread}: not a way to spread the picks", hint="use " + " or ".join(SPREADS))


def read_pool(path: str | Path, *, text_col: str | None = None, in_fmt: str | None = None,
              exclude: Iterable[str | Path] = ()) -> tuple[list[str], int, int]:
    """(the texts to rank, texts skipped as already in `exclude`, texts skipped as repeated in the pool). The pool
    is read as `predict` reads its input; each `exclude` source as `classify` reads a corpus (every split)."""
    path = str(path)
    fmt = input_format(path, in_fmt)
    if not Path(path).is_file():
        raise UlmfitError(f"no such unlabeled file: {path}", hint="check the path")
    known = set()
    for src in exclude:
        known |= {text_key(t) for t in load_corpus(src, valid_pct=0).texts}
    texts, seen, excluded, repeated = [], set(), 0, 0
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        for text in iter_texts(f, fmt, text_col=text_col, name=Path(path).name):
            key = text_key(text)
            if not key:
                continue
            if key in known:
                excluded += 1
            elif key in seen:
                repeated += 1
            else:
                seen.add(key)
                texts.append(text)
    return texts, excluded, repeated


def suggest(models: list[str | Path], unlabeled: str | Path, out: str | Path, *, n: int = 100,
            candidates: int | None = None, spread: str | None = None, exclude: Iterable[str | Path] = (),
            text_col: str | None = None,
            in_fmt: str | None = None, bs: int | None = None, device: str | None = None,
            max_chars: int = MAX_CHARS, overwrite: bool = False,
            log: Callable[[str], None] = print) -> SuggestResult:
    """Rank the texts of `unlabeled` (minus those of the `exclude` sources) with `models` and write the `n` to
    label next to `out`, a CSV (see the module docstring). `out` is checked before any model is loaded; an
    existing file is replaced only when suggest wrote it, or with `overwrite`."""
    t0 = time.time()
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise UlmfitError(f"--out {out} is not a .csv file", hint="name the file to fill in, e.g. --out to_label.csv")
    check_output_file(out, option="--out", ours=is_suggestion_file, overwrite=overwrite)
    check_max_chars(max_chars)
    check_counts(n, candidates)
    spread = spread or SPREAD
    check_spread(spread)
    texts, excluded, repeated = read_pool(unlabeled, text_col=text_col, in_fmt=in_fmt, exclude=exclude)
    clfs = load_models(list(models), device=device)
    ranking = rank_texts(clfs, texts, n, candidates=candidates, bs=bs, max_chars=max_chars, progress=True,
                         spread=spread)
    write_suggestions(out, clfs, texts, ranking)
    result = SuggestResult(out=out, picked=len(ranking.order), ranked=len(texts), excluded=excluded,
                           duplicates=repeated, rule=ranking.rule, shortlist=ranking.shortlist,
                           seconds=round(time.time() - t0, 1))
    skipped = [f"{excluded:,} already in --exclude" if excluded else "", f"{repeated:,} repeated" if repeated else ""]
    log(f"ranked {len(texts):,} texts" + (f" (skipped: {', '.join(s for s in skipped if s)})" if any(skipped) else "")
        + f" by {ranking.rule}")
    how = ("by score alone" if ranking.shortlist <= result.picked else
           f"spread over the {ranking.shortlist:,} highest scores by {SPREAD_WORDS[spread]} on the encoder's pooled "
           "vectors")
    log(f"picked {result.picked:,}, {how}; wrote {out} ({result.seconds:g}s)")
    log(f"fill in its label column (leave a cell empty to skip a text; {NO_LABEL} for none of the labels), then: "
        f"ulmfit data merge LABELLED.csv {out} --out ALL.csv")
    return result


def write_suggestions(out: Path, models: list, texts: list[str], ranking: Ranking) -> None:
    """SUGGESTION_COLUMNS, one row per pick, highest score first; written atomically."""
    records = ensemble_records(models, ranking.outputs[ranking.order])
    kind = models[0].task.kind if getattr(models[0], "task", None) is not None else "single-label"
    delimiter = getattr(getattr(models[0], "task", None), "delimiter", ",")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUGGESTION_COLUMNS)
    for rank, (i, rec) in enumerate(zip(ranking.order, records), 1):
        predicted = (f"{rec['value']:.6g}" if kind == "regression" else
                     delimiter.join(rec["labels"]) if kind == "multi-label" else rec["label"])
        w.writerow([texts[i], "", rank, f"{ranking.scores[i]:.6f}", predicted])
    atomic_write_text(out, buf.getvalue())
