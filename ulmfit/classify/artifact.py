"""The classifier bundle on disk: what `classify` writes (config.json, meta.json, weights, a confusion PNG) and
what every later stage rebuilds the network from. Layout and reading of bundles in general: `ulmfit.bundle`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit.bundle import direction_name, write_bundle
from ulmfit.classify.config import ClassifierConfig
from ulmfit.classify.task import Task


def classifier_arch(lm_arch: dict[str, Any], vocab_size: int, cfg: ClassifierConfig) -> dict[str, Any]:
    """config.json["arch"] of a classifier: the LM's encoder (name and sizes), the classifier's (unscaled) dropouts
    (fastai's awd_lstm_clas_config, which fastai's QRNN classifier config shared), drop_mult."""
    from fastai.text.models.awdlstm import awd_lstm_clas_config

    arch = {"name": lm_arch.get("name", "awd_lstm"), "vocab_size": vocab_size}
    arch.update({k: lm_arch[k] for k in ("emb_sz", "n_hid", "n_layers") if k in lm_arch})
    arch.update(pad_token=lm_arch.get("pad_token", 1), bidir=lm_arch.get("bidir", False))
    arch.update({k: v for k, v in awd_lstm_clas_config.items() if k.endswith("_p")})
    arch["drop_mult"] = cfg.drop_mult
    return arch


def bundle_config(cfg: ClassifierConfig, lm_arch: dict[str, Any], vocab, tokenizer, labels: list[str],
                  task: Task | None = None) -> dict:
    """config.json of a classifier bundle: everything `Classifier.load` rebuilds the network from, with the task
    shape (single-label, multi-label or regression, and a regression's standardisation)."""
    task = task or Task(kind="single-label", labels=list(labels))
    return {"stage": "classifier", "direction": direction_name(cfg.backwards), "preset": cfg.preset,
            "seed": cfg.seed, "arch": classifier_arch(lm_arch, len(vocab.itos), cfg), "n_class": task.n_out,
            "task": task.to_dict(), "tokenizer": _spec_dict(tokenizer), "schedule": [vars(s) for s in cfg.schedule],
            "classifier": cfg.to_dict()}


def _spec_dict(tokenizer) -> dict[str, Any]:
    spec = tokenizer.spec
    return asdict(spec) if is_dataclass(spec) else dict(spec)


def portable(path: Path) -> str:
    """A path for meta.json: never absolute (artifacts move between machines)."""
    p = Path(path)
    parts = p.parts[-2:] if p.name in ("model-best", "model-last") else p.parts[-1:]
    return "/".join(parts)


def report_figures(task: Task, report: dict[str, Any], y: np.ndarray, outputs: np.ndarray,
                   split: str) -> dict[str, Callable[[Path], None]]:
    """{file name: writer} of the plot that shows a report best: a confusion matrix (single-label), per-label
    precision/recall/F1 bars (multi-label), predicted against true values (regression)."""
    from ulmfit.classify import metrics

    if task.kind == "multi-label":
        title = f"{split}: macro-F1 {report['macro_f1']:.3f}, micro-F1 {report['micro_f1']:.3f}"
        return {"per-label.png": lambda p: metrics.plot_per_label(report, p, title=title)}
    if task.kind == "regression":
        title = f"{split}: Pearson {report['pearson']:.3f}, MAE {report['mae']:.3f}"
        return {"scatter.png": lambda p: metrics.plot_scatter(y, outputs[:, 0], p, title=title)}
    cm = np.array(report["confusion"]["matrix"])
    title = f"{split} confusion (accuracy {report['accuracy']:.3f})"
    return {"confusion-matrix.png": lambda p: metrics.plot_confusion(cm, task.labels, p, title=title)}


def save_classifier(path: Path, *, config: dict, meta: dict, vocab, tokenizer, state,
                    figures: dict[str, Callable[[Path], None]] | None = None) -> None:
    """Write one classifier bundle (ulmfit.bundle layout) with its figures (`report_figures`; by default a
    confusion-matrix PNG when meta has a single-label "valid" report). meta must hold "labels"."""
    from ulmfit.classify.metrics import plot_confusion

    if figures is None:
        figures = {}
        report = meta.get("valid")
        if report and "confusion" in report:
            cm = np.array(report["confusion"]["matrix"])
            title = f"valid confusion (accuracy {report['accuracy']:.3f})"
            figures["confusion-matrix.png"] = lambda p: plot_confusion(cm, meta["labels"], p, title=title)
    write_bundle(path, config=config, meta={"stage": "classifier", **meta}, vocab=vocab, tokenizer=tokenizer,
                 weights={"model": state}, figures=figures)
