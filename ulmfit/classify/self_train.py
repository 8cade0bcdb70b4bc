"""Self-training: a classifier labels unlabeled texts, its most confident labels join the real ones, and a second
classifier trains on both from the same LM (`ulmfit classify --self-train N`).

The recipe, top to bottom:
    pool      the unlabeled texts: `--unlabeled SRC` (every row but its test split), or SRC's own unlabeled rows
              (IMDb's `unsup`); never a text of SRC's labelled rows, never a test row
    teacher   `fit_classifier` on the labelled data -> OUT/teacher/model-best
    label     the teacher's probabilities for N texts drawn from the pool (seeded)
    keep      per predicted class, the most confident `keep * N / classes` of them (balanced, so that the
              teacher's bias toward one class is not amplified)
    student   `fit_classifier` on pseudo-labelled + labelled training documents -> OUT/model-best; the
              validation split keeps its real labels only, so model selection is as honest as without
    resume    teacher and student are separate stages, each with its checkpoint (`self_train`'s docstring)

What it gains over the teacher, measured: BENCHMARKS.md.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ulmfit._io import read_json, replace_path, write_json
from ulmfit.classify import checkpoint
from ulmfit.classify.classifier import Classifier
from ulmfit.classify.config import ClassifierConfig
from ulmfit.classify.data import prepare_corpus
from ulmfit.classify.fit import TrainResult, fit_classifier
from ulmfit.data import Corpus, load_corpus
from ulmfit.errors import UlmfitError
from ulmfit.runlog import LOG_DIR

TEACHER = "teacher"
STUDENT = "student"  # the student's working folder while the run is under way
PROGRESS = "self-train.json"  # what the run is made with and how far it got, while it is under way
PSEUDO_LABELS = "pseudo-labels.csv"


def select_confident(probs: np.ndarray, keep: float) -> np.ndarray:
    """Indices (ascending) of the rows to keep: for each predicted class, its `keep * n / n_classes` most
    confident rows (fewer when the teacher predicted that class less often)."""
    pred, conf = probs.argmax(1), probs.max(1)
    per_class = int(len(probs) * keep / probs.shape[1])
    out: list[int] = []
    for k in range(probs.shape[1]):
        idx = np.flatnonzero(pred == k)
        out += idx[np.argsort(-conf[idx], kind="stable")][:per_class].tolist()
    return np.array(sorted(out), dtype=np.int64)


def draw_texts(pool: list[str], n: int, seed: int) -> list[str]:
    """The `n` texts (all, if fewer) of `pool` the teacher labels: a seeded draw, in pool order."""
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]


def student_corpus(labelled: Corpus, texts: list[str], pseudo: list[str]) -> Corpus:
    """The student's data: the pseudo-labelled texts as training documents, then every row of `labelled`."""
    return Corpus(texts + labelled.texts, pseudo + labelled.labels, ["train"] * len(texts) + labelled.splits,
                  f"{labelled.name}+pseudo{len(texts)}")


def unlabeled_pool(src: Corpus, unlabeled: str | Path | Corpus | None, *, text_col: str | None) -> list[str]:
    """The texts self-training may label: `unlabeled` minus its test split, or else SRC's unlabeled non-test
    rows; texts of SRC's labelled rows are left out (a validation text must never come back as training data)."""
    if unlabeled is None:
        texts = [t for t, y, s in zip(src.texts, src.labels, src.splits) if y is None and s != "test"]
        where = f"{src.name} has no unlabeled documents"
    else:
        pool = unlabeled if isinstance(unlabeled, Corpus) else load_corpus(unlabeled, text_col=text_col, valid_pct=0)
        texts = [t for t, s in zip(pool.texts, pool.splits) if s != "test"]
        where = f"{pool.name} has no documents outside its test split"
    labelled = {t for t, y in zip(src.texts, src.labels) if y is not None}
    texts = [t for t in dict.fromkeys(texts) if t not in labelled]
    if not texts:
        raise UlmfitError(f"self-training needs unlabeled texts, but {where} that are not also labelled",
                          hint="pass --unlabeled SRC (a file or dataset of texts), or --self-train 0")
    return texts


def self_train(src: str | Path | Corpus, *, lm: str | Path, out: str | Path, config: ClassifierConfig,
               unlabeled: str | Path | Corpus | None = None, text_col: str | None = None,
               label_col: str | None = None, device: str | None = None, resume: bool = False,
               log: Callable[[str], None] = print) -> TrainResult:
    """Teacher on SRC's labels; it labels `config.self_train` unlabeled texts; the student trains on the most
    confident of them plus the labels. Writes OUT/model-best and OUT/model-last (the student: returned, with
    the self-training summary in meta.json), OUT/teacher/ and OUT/pseudo-labels.csv (every kept label).

    The two classifiers are two resumable stages: while the run is under way OUT/self-train.json records what it
    was made with and how far it got, the teacher trains in OUT/teacher/ and the student in OUT/student/, each with
    its checkpoint. An interrupted run keeps them, and `resume` continues it: a finished teacher is reused, an
    interrupted one continues from its checkpoint, and so does the student (the teacher's labels are recomputed:
    the same draw, the same probabilities). The student's bundles reach OUT when it is done."""
    cfg = config
    if cfg.from_scratch:
        raise UlmfitError("self-training starts from a language model; it does not combine with --from-scratch",
                          hint="drop --self-train or --from-scratch")
    out = Path(out)
    corpus = src if isinstance(src, Corpus) else load_corpus(src, text_col=text_col, label_col=label_col,
                                                             seed=cfg.seed)
    pool = unlabeled_pool(corpus, unlabeled, text_col=text_col)  # before any training: a bad pool fails fast
    labelled, task, _ = prepare_corpus(corpus, cfg, text_col=None, label_col=None)
    if task.kind != "single-label":  # pseudo-labels are the teacher's surest class: one label per text
        raise UlmfitError(f"self-training works with single-label classifiers, not {task.kind}",
                          hint="drop --self-train")
    plain = dataclasses.replace(cfg, self_train=0, max_train=None)  # labelled is already the --max-train sample
    progress = _progress(out, resume, {"config": cfg.to_dict(), "lm": str(lm), "data": labelled.fingerprint,
                                       "pool": hashlib.sha256("\n".join(pool).encode()).hexdigest()})

    try:
        if progress.get("teacher") == "done":
            teacher = _reloaded(out / TEACHER, plain, log)
        else:
            log(f"self-training: the teacher trains on {labelled.splits.count('train'):,} labelled documents")
            (out / TEACHER).mkdir(exist_ok=True)
            teacher = fit_classifier(labelled, lm=lm, out=out / TEACHER, config=plain, device=device, log=log,
                                     resume=_has_checkpoint(out / TEACHER))
            progress["teacher"] = "done"
            write_json(out / PROGRESS, progress)

        texts = draw_texts(pool, cfg.self_train, cfg.seed)
        log(f"self-training: the teacher labels {len(texts):,} of {len(pool):,} unlabeled documents")
        probs = Classifier.load(teacher.best, device=device).predict_proba(texts, progress=True)
        keep = select_confident(probs, cfg.self_train_keep)
        if not len(keep):
            raise UlmfitError(f"self-training kept no pseudo-labels of {len(texts)} (keep {cfg.self_train_keep})",
                              hint="raise --self-train or --self-train-keep")
        pseudo = [teacher.labels[k] for k in probs[keep].argmax(1)]
        conf = probs[keep].max(1)
        counts = {lab: pseudo.count(lab) for lab in teacher.labels}
        summary: dict[str, Any] = {
            "teacher": f"{TEACHER}/model-best", "teacher_valid_accuracy": round(teacher.accuracy, 4),
            "pool": len(pool), "labelled_by_teacher": len(texts), "keep": cfg.self_train_keep, "kept": len(keep),
            "kept_per_label": counts, "min_confidence": round(float(conf.min()), 4)}
        log(f"self-training: kept {len(keep):,} ({', '.join(f'{lab} {n:,}' for lab, n in counts.items())}), "
            f"confidence >= {summary['min_confidence']:.3f}; the student trains on them and the labels")
        student_data = student_corpus(labelled, [texts[i] for i in keep], pseudo)
        work = out / STUDENT
        work.mkdir(exist_ok=True)

        def log_final(line: str) -> None:  # the student's bundles named where they end up, not in its work folder
            log(line.replace(f"{work}/model-", f"{out}/model-"))

        student = fit_classifier(student_data, lm=lm, out=work, config=plain, device=device, log=log_final,
                                 resume=_has_checkpoint(work))
        _write_pseudo_labels(work / PSEUDO_LABELS, [texts[i] for i in keep], pseudo, conf)
        for name in ("model-best", "model-last"):
            _record(work / name, summary, cfg)
        for name in ("model-best", "model-last", PSEUDO_LABELS, LOG_DIR):  # the student's entries become OUT's
            replace_path(work / name, out / name)
        shutil.rmtree(work)
        (out / PROGRESS).unlink()
    except BaseException:  # an error before anything could be resumed leaves OUT as it was
        if not _resumable(out, progress):
            _discard(out)
        raise
    log(f"self-training: student valid accuracy {student.accuracy:.4f} (teacher {teacher.accuracy:.4f}); "
        f"{out}/model-best, {out}/{TEACHER}/, {out}/{PSEUDO_LABELS}")
    return dataclasses.replace(student, out=out, best=out / "model-best", last=out / "model-last")


def _progress(out: Path, resume: bool, made_with: dict[str, Any]) -> dict[str, Any]:
    """OUT/self-train.json for this run: read back and checked on `resume`; otherwise a fresh one, after the
    stage folders of an earlier run (OUT is already checked: --overwrite was given if there was one) are gone."""
    path, digest = out / PROGRESS, hashlib.sha256(json.dumps(made_with, sort_keys=True).encode()).hexdigest()
    if resume:
        if not path.is_file():
            raise UlmfitError(f"nothing to resume: {path} does not exist (no self-training run was interrupted in "
                              f"{out})", hint="drop --resume")
        progress = read_json(path)
        if progress.get("made_with") != digest:
            raise UlmfitError(f"{out} holds a self-training run made with other data, another LM or other options",
                              hint="resume with the same command, or pass --overwrite to start again")
        return progress
    _discard(out)
    progress = {"made_with": digest, "teacher": "training"}
    write_json(path, progress)
    return progress


def _resumable(out: Path, progress: dict[str, Any]) -> bool:
    """Whether an interrupted run left anything `--resume` can continue from."""
    return progress.get("teacher") == "done" or any(_has_checkpoint(out / name) for name in (TEACHER, STUDENT))


def _discard(out: Path) -> None:
    """Remove a self-training run's working entries: teacher/, student/ and self-train.json."""
    for name in (TEACHER, STUDENT):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / PROGRESS).unlink(missing_ok=True)


def _has_checkpoint(run: Path) -> bool:
    return (run / checkpoint.CHECKPOINT).is_dir()


def _reloaded(teacher: Path, cfg: ClassifierConfig, log: Callable[[str], None]) -> TrainResult:
    """The finished teacher of an interrupted run, as fit_classifier returned it."""
    meta = read_json(teacher / "model-best" / "meta.json")
    log(f"self-training: the teacher finished before the interruption: reusing {teacher}/model-best")
    return TrainResult(out=teacher, best=teacher / "model-best", last=teacher / "model-last",
                       labels=list(meta["labels"]), metrics=meta["metrics"], best_epoch=meta["best_epoch"],
                       valid=meta["valid"], config=cfg, seconds=meta["seconds"], ngram=meta.get("ngram"))


def _record(bundle: Path, summary: dict[str, Any], cfg: ClassifierConfig) -> None:
    """The student bundle says how it was made: the summary in meta.json, the run's own self_train settings in
    config.json (the student itself trained as a plain classifier)."""
    meta = read_json(bundle / "meta.json")
    meta["self_train"] = summary
    write_json(bundle / "meta.json", meta)
    config = read_json(bundle / "config.json")
    config["classifier"].update(self_train=cfg.self_train, self_train_keep=cfg.self_train_keep)
    write_json(bundle / "config.json", config)


def _write_pseudo_labels(path: Path, texts: list[str], labels: list[str], conf: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "confidence"])
        w.writerows((t, y, f"{c:.4f}") for t, y, c in zip(texts, labels, conf))
