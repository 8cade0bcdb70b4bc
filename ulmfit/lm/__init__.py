"""AWD-LSTM and QRNN language models: presets, pretraining, fine-tuning (incl. fastai's WikiText-103), generation.

    from ulmfit.lm import pretrain, finetune, LanguageModel, resolve_config
    res = pretrain("imdb-sample", "runs/lm", resolve_config("small", sets=["epochs=1"]))
    lm = LanguageModel.load(res.best); lm.generate("The film", words=20, seed=0)

Heavy modules (torch, fastai) load on first use of `pretrain`/`finetune`/`LanguageModel`.
"""

from __future__ import annotations

from typing import Any

from ulmfit.lm.config import PRESETS, LMConfig, Phase, resolve_config, schedule

__all__ = ["PRESETS", "LMConfig", "LMResult", "LanguageModel", "Phase", "build_lm", "finetune", "pretrain",
           "resolve_config", "schedule"]

_LAZY = {"pretrain": "ulmfit.lm.train", "finetune": "ulmfit.lm.train", "LMResult": "ulmfit.lm.train",
         "LanguageModel": "ulmfit.lm.language_model", "build_lm": "ulmfit.lm.model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ulmfit.lm' has no attribute {name!r}")
