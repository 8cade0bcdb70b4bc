"""What `ulmfit data info` reports: documents, class counts and length statistics per split."""

from __future__ import annotations

import math

from ulmfit.data.corpus import SPLITS, Corpus


def _rank(sorted_values: list[int], q: float) -> int:
    # Nearest-rank percentile: an actual document length, no interpolation.
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def length_stats(texts: list[str]) -> dict[str, float]:
    """Whitespace-token counts: min, median, p95, max, mean."""
    if not texts:
        return {}
    n = sorted(len(t.split()) for t in texts)
    return {"min": n[0], "median": _rank(n, 0.5), "p95": _rank(n, 0.95), "max": n[-1],
            "mean": round(sum(n) / len(n), 1)}


def corpus_info(corpus: Corpus) -> dict:
    """Per split: documents, labeled counts per class, unlabeled count, length stats (JSON-ready)."""
    labels = corpus.label_names()
    out = {"name": corpus.name, "documents": len(corpus), "labels": labels, "fingerprint": corpus.fingerprint,
           "splits": {}}
    for split, s in corpus.summary().items():
        texts = [t for t, sp in zip(corpus.texts, corpus.splits) if sp == split]
        out["splits"][split] = {"documents": s["documents"], "labels": s["labels"],
                                "unlabeled": s["documents"] - sum(s["labels"].values()),
                                "tokens": length_stats(texts)}
    return out


def format_info(info: dict) -> str:
    """A plain aligned table of `corpus_info`."""
    labels = info["labels"]
    shown = labels if len(labels) <= 12 else labels[:12]  # wide label sets: first 12 columns, the rest summed
    header = ["split", "documents", *shown, *(["other"] if len(labels) > 12 else []), "unlabeled",
              "tok min", "median", "p95", "max"]
    rows = [header]
    for split in SPLITS:
        s = info["splits"].get(split)
        if s is None:
            continue
        counts = [s["labels"].get(y, 0) for y in shown]
        other = [sum(s["labels"].values()) - sum(counts)] if len(labels) > 12 else []
        tok = s["tokens"]
        rows.append([split, s["documents"], *counts, *other, s["unlabeled"],
                     tok["min"], tok["median"], tok["p95"], tok["max"]])
    cells = [[c if isinstance(c, str) else f"{c:,}" for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"{info['name']}: {info['documents']:,} documents, "
             f"{len(labels)} label(s){': ' + ', '.join(labels) if labels and len(labels) <= 20 else ''}"]
    for r in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    lines.append("tokens = whitespace-separated words per document (median and p95 are nearest-rank)")
    return "\n".join(lines)
