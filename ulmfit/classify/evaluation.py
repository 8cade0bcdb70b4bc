"""`evaluate`: one or more classifiers (and their ensemble) on a labelled split of a corpus.

Every task shape (`ulmfit.classify.task`): single-label (accuracy, macro-F1, NLL, ECE, confusion matrix),
multi-label (micro/macro-F1, per-label precision/recall/F1, subset accuracy, Hamming loss, mean AP, with each
model's tuned thresholds; the ensemble uses their mean) and regression (MAE, RMSE, Pearson, Spearman, R², binned
accuracy with the bundle's bins). Models of different shapes or label sets are refused.

Given a forward and a backward model, each is reported and so is their ensemble, the mean of their
probabilities (ULMFiT's bidirectional result). A model whose bundle carries the n-gram baseline is reported three
ways: its output as `predict` gives it (neural and n-gram mixed with the bundle's weight), the neural model alone and
the n-gram model alone, so the user sees what the language model adds on their data. The report is JSON-ready;
`format_report` prints it as a table.

Documents longer than `max_chars` characters are scored on their first `max_chars` (as `predict` does), with a
warning. The report path is checked before a model is loaded: an existing file that is not an earlier report
(nor its confusion plot) is replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit._io import write_json
from ulmfit._outputs import check_output_file
from ulmfit.classify.classifier import aligned, load_models
from ulmfit.classify.ngram import mix
from ulmfit.classify.predict import MAX_CHARS, check_max_chars, clip_texts, clipped_message
from ulmfit.data import SPLITS, Corpus, load_corpus
from ulmfit.errors import UlmfitError


@dataclass
class EvalReport:
    split: str
    source: str
    labels: list[str]
    # {"model": name, "direction": ..., "ngram_weight": w, **classification_report of what predict outputs,
    #  "parts": {"neural": report, "ngram": report} when the bundle has an n-gram model}
    models: list[dict[str, Any]]
    ensemble: dict[str, Any] | None = None  # the same for the mean of the models' probabilities
    files: list[Path] = field(default_factory=list)  # what was written (JSON, PNG)

    @property
    def headline(self) -> dict[str, Any]:
        """The result that matters: the ensemble when there is one, else the single model."""
        return self.ensemble if self.ensemble is not None else self.models[0]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "source": self.source, "labels": self.labels,
                "documents": self.headline["documents"], "models": self.models, "ensemble": self.ensemble}


# The keys every report has (`EvalReport.to_dict`): a JSON object holding them all is an earlier report.
_REPORT_KEYS = ("split", "source", "labels", "documents", "models", "ensemble")
_REPORT_MAX_BYTES = 64 << 20  # a report is kilobytes; a bigger file is read no further


def read_report(path: Path) -> dict[str, Any] | None:
    """The report `evaluate` wrote at `path`, or None when the file is something else."""
    try:
        if path.stat().st_size > _REPORT_MAX_BYTES:
            return None
        d = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) and all(k in d for k in _REPORT_KEYS) else None


PLOT_KINDS = {"single-label": "confusion", "multi-label": "per-label", "regression": "scatter"}


def plot_path(out: Path, kind: str = "single-label") -> Path:
    """Where the PNG of the report `out` goes: a confusion matrix, per-label bars or a scatter, by task shape."""
    return out.with_name(f"{out.stem}.{PLOT_KINDS[kind]}.png")


def check_report_paths(out: Path, overwrite: bool) -> None:
    """The report and its plot can be written, and replace nothing but an earlier report and its own plot."""
    check_output_file(out, option="--out", ours=lambda p: read_report(p) is not None, overwrite=overwrite)
    report = read_report(out)
    for kind in PLOT_KINDS:
        check_output_file(plot_path(out, kind), option="--out", overwrite=overwrite,
                          ours=lambda p: report is not None and p.name in (report.get("plot_png"),
                                                                           report.get("confusion_png")))


def _name(path: Path | None) -> str:
    if path is None:
        return "?"
    p = Path(path)
    return "/".join(p.parts[-2:]) if p.name in ("model-best", "model-last") else p.name


def evaluate(models: list[str | Path], src: str | Path | Corpus, *, split: str = "test", text_col: str | None = None,
             label_col: str | None = None, out: str | Path | None = None, bs: int | None = None,
             device: str | None = None, max_chars: int = MAX_CHARS, overwrite: bool = False,
             ngram_weight: float | None = None, task: str | None = None) -> EvalReport:
    """Evaluate classifier bundles on `split` of SRC; with `out` (a .json path) write the report and a
    confusion-matrix PNG next to it (`<out stem>.confusion.png`). Documents longer than `max_chars` characters
    (0: no limit) are scored on their first `max_chars`. Existing files at `out` that are not an earlier report
    are refused unless `overwrite`; this is checked before a model is loaded."""
    if split not in SPLITS:
        raise UlmfitError(f"unknown split {split!r}", hint=f"use one of: {', '.join(SPLITS[:3])}")
    if split == "unsup":
        raise UlmfitError("the unsup split has no labels to evaluate against", hint="use --split test or valid")
    out = Path(out) if out is not None else None
    if out is not None and out.suffix.lower() != ".json":
        raise UlmfitError(f"--out {out} must name a .json file", hint="e.g. --out report.json")
    check_max_chars(max_chars)
    if out is not None:
        check_report_paths(out, overwrite)
    clfs = load_models(models, device=device, ngram_weight=ngram_weight, task=task)
    first = clfs[0]
    labels, shape = first.labels, first.task
    # Same seed as the classifier run: a "valid" carved from train is the same one the model was selected on.
    corpus = src if isinstance(src, Corpus) else load_corpus(src, text_col=text_col, label_col=label_col,
                                                             seed=first.config.seed)
    part = corpus.select(split)
    if not len(part):
        have = ", ".join(s for s in SPLITS if s in corpus.splits)
        raise UlmfitError(f"{corpus.name} has no {split!r} split (it has: {have})",
                          hint=f"pass --split with one of: {have}")
    # multi-label: an empty cell is the empty label set; the other shapes score labelled rows only
    rows = [i for i, y in enumerate(part.labels) if y is not None or shape.kind == "multi-label"]
    if not rows or all(part.labels[i] is None for i in rows):
        raise UlmfitError(f"the {split} split of {corpus.name} has no labels to evaluate against",
                          hint="check --label-col, or evaluate on a labelled split")
    texts = [part.texts[i] for i in rows]
    gold = [part.labels[i] for i in rows]
    if shape.kind == "single-label":
        unseen = sorted(set(gold) - set(labels))
        if unseen:
            raise UlmfitError(f"the {split} data has label(s) {', '.join(unseen)} that the model never saw "
                              f"(it knows {', '.join(labels)})",
                              hint="evaluate on data with the model's labels, or retrain with these classes")
    y = shape.truth(gold, split, texts)  # a label the model never saw, or a bad number: an error naming the row
    texts, cut = clip_texts(texts, max_chars)
    if cut:
        print(f"warning: {corpus.name}: {clipped_message(cut, max_chars)}", file=sys.stderr)
    reports, each = [], []
    for clf in clfs:
        neural, ngram = (aligned(p, clf.labels, labels) if p is not None else None
                         for p in clf.predict_parts(texts, bs=bs, progress=True, max_chars=0))
        shipped = mix(neural, ngram, clf.ngram_weight)
        each.append(shipped)
        t = _aligned_thresholds(clf, labels)
        row = {"model": _name(clf.path), "direction": clf.direction, "ngram_weight": clf.ngram_weight,
               **shape.report(y, shipped, t.get("shipped"))}
        if ngram is not None:
            row["parts"] = {"neural": shape.report(y, neural, t.get("neural")),
                            "ngram": shape.report(y, ngram, t.get("ngram"))}
        reports.append(row)
    mean = np.mean(each, axis=0)
    ens = None
    if len(clfs) > 1:
        shipped_t = [_aligned_thresholds(c, labels).get("shipped") for c in clfs]
        ens_t = list(np.mean(shipped_t, axis=0)) if shape.tuned and all(t for t in shipped_t) else None
        what = "values" if shape.kind == "regression" else "probabilities"
        ens = {"model": f"ensemble (mean of {what})", "direction": "+".join(c.direction for c in clfs),
               **shape.report(y, mean, ens_t)}
    report = EvalReport(split=split, source=corpus.name, labels=labels, models=reports, ensemble=ens)
    if out is not None:
        _write(report, out, shape, y, mean if ens is not None else each[0])
    return report


def _aligned_thresholds(clf, labels: list[str]) -> dict[str, list[float] | None]:
    """A model's tuned decisions (shipped, neural, ngram): multi-label thresholds in `labels` order, a regression's
    bin cut points; {} for the other shapes."""
    if clf.task.kind == "regression":
        return {k: t for k, t in clf.part_thresholds.items() if t}
    if clf.task.kind != "multi-label":
        return {}
    return {k: [t[clf.labels.index(lab)] for lab in labels] for k, t in clf.part_thresholds.items() if t}


def _write(report: EvalReport, out: Path, shape, y: np.ndarray, outputs: np.ndarray) -> None:
    from ulmfit.classify.artifact import report_figures

    png = plot_path(out, shape.kind)
    [(_, draw)] = report_figures(shape, report.headline, y, outputs, report.split).items()
    draw(png)
    d = report.to_dict()
    d["task"] = shape.kind
    d["plot_png"] = png.name
    write_json(out, d)
    report.files = [out, png]


# Columns of the model table per task shape: (report key, header, width)
_COLUMNS = {
    "single-label": [("accuracy", "accuracy", 9), ("error_rate", "error", 7), ("macro_f1", "macro-F1", 9),
                     ("nll", "NLL", 7), ("ece", "ECE", 6)],
    "multi-label": [("macro_f1", "macro-F1", 9), ("micro_f1", "micro-F1", 9), ("subset_accuracy", "subset-acc", 10),
                    ("hamming_loss", "Hamming", 8), ("mean_average_precision", "mAP", 7)],
    "regression": [("pearson", "Pearson", 8), ("spearman", "Spearman", 9), ("mae", "MAE", 8), ("rmse", "RMSE", 8),
                   ("r2", "R2", 7), ("binned_accuracy", "binned-acc", 10)],
}


def format_report(report: EvalReport) -> str:
    """An aligned text table: one row per model (+ the ensemble), then the headline result's detail: per-class
    precision/recall and the confusion matrix, per-label scores and thresholds, or the binned confusion."""
    rows = []
    for m in report.models:  # what predict outputs, then (with an n-gram model) each part alone
        parts = m.get("parts")
        if not parts:
            rows.append(m)
            continue
        if m["ngram_weight"] > 0:
            rows.append({**m, "model": f"{m['model']} + n-gram (w {m['ngram_weight']:g})"})
        rows.append({**parts["neural"], "model": f"{m['model']} neural", "direction": m["direction"]})
        rows.append({**parts["ngram"], "model": f"{m['model']} n-gram", "direction": "-"})
    rows += [report.ensemble] if report.ensemble else []
    head = report.headline
    kind = head.get("task", "single-label")
    cols = [c for c in _COLUMNS[kind] if c[0] in head]
    name_w = max(12, *(len(r["model"]) for r in rows))
    what = "target" if kind == "regression" else f"{len(report.labels)} labels"
    lines = [f"{report.source} / {report.split}: {head['documents']:,} documents, {kind}, {what}",
             f"{'model':<{name_w}}  {'direction':<16} " + " ".join(f"{h:>{w}}" for _, h, w in cols)]
    for r in rows:
        lines.append(f"{r['model']:<{name_w}}  {r['direction']:<16} "
                     + " ".join(f"{r[k]:>{w}.4f}" for k, _, w in cols))
    if kind == "multi-label":
        return "\n".join(lines + _label_table(head["per_label"], with_threshold=True))
    if kind == "regression":
        if "binned_confusion" in head:
            n = len(head["bins"]) + 1
            lines += ["", f"binned at {head['bins']} (rows: actual bin, columns: predicted bin)"]
            lines += [f"bin {i:<4} " + " ".join(f"{v:>7,}" for v in row) for i, row in
                      zip(range(n), head["binned_confusion"])]
        return "\n".join(lines)
    lines += _label_table(head["per_class"], with_threshold=False)
    lab_w = max(8, *(len(lab) for lab in report.labels))
    cm = head["confusion"]["matrix"]
    cell = max(6, lab_w, *(len(f"{v:,}") for row in cm for v in row))
    lines += ["", "confusion (rows: actual, columns: predicted)",
              " " * (lab_w + 1) + " ".join(f"{lab:>{cell}}" for lab in report.labels)]
    for lab, row in zip(report.labels, cm):
        lines.append(f"{lab:<{lab_w}} " + " ".join(f"{v:>{cell},}" for v in row))
    return "\n".join(lines)


def _label_table(per: dict[str, dict[str, Any]], with_threshold: bool) -> list[str]:
    lab_w = max(8, *(len(lab) for lab in per))
    lines = ["", f"{'label':<{lab_w}} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"
             + (f" {'threshold':>9}" if with_threshold else "")]
    for lab, c in per.items():
        lines.append(f"{lab:<{lab_w}} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['f1']:>7.4f} {c['support']:>8,}"
                     + (f" {c['threshold']:>9.2f}" if with_threshold else ""))
    return lines
