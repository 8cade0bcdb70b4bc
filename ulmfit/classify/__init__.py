"""ULMFiT step 3: text classifiers on a fine-tuned LM encoder, discriminative learning rates, gradual unfreezing.

    from ulmfit.classify import Classifier, train_classifier, resolve_config, evaluate, predict_file

    cfg = resolve_config("small")                               # all layers at once; "paper": gradual unfreezing
    train_classifier("imdb-sample", lm="models/lm", out="models/clas", config=cfg)
    few = resolve_config("small", overrides={"max_train": 100, "self_train": 4000})   # + IMDb's unsup texts
    train_classifier("imdb", lm="models/lm", out="models/clas-100", config=few)     # (or unlabeled=SRC)
    clf = Classifier.load("models/clas")                        # -> model-best
    clf.predict(["A gem of a film."])                           # [{"label": "positive", "probs": {...}}]
    evaluate(["models/clas", "models/clas-bwd"], "imdb", split="test", out="report.json")
    predict_file(["models/clas"], "reviews.csv", "predictions.csv")

Only the standard library is imported at package level; torch and fastai load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ulmfit.classify.config import PRESETS, ClassifierConfig, Stage, resolve_config, ulmfit_schedule

if TYPE_CHECKING:
    from ulmfit.classify.classifier import Classifier
    from ulmfit.classify.evaluation import EvalReport, evaluate
    from ulmfit.classify.predict import PredictResult, predict_file
    from ulmfit.classify.train import TrainResult, train_classifier

__all__ = ["PRESETS", "Classifier", "ClassifierConfig", "EvalReport", "PredictResult", "Stage", "TrainResult",
           "evaluate", "predict_file", "resolve_config", "train_classifier", "ulmfit_schedule"]

_LAZY = {
    "Classifier": "ulmfit.classify.classifier",
    "EvalReport": "ulmfit.classify.evaluation",
    "evaluate": "ulmfit.classify.evaluation",
    "PredictResult": "ulmfit.classify.predict",
    "predict_file": "ulmfit.classify.predict",
    "TrainResult": "ulmfit.classify.train",
    "train_classifier": "ulmfit.classify.train",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ulmfit.classify' has no attribute {name!r}")
