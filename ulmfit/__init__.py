"""ulmfit: ULMFiT-style transfer learning for text.

High-level API (the CLI calls the same functions)::

    import ulmfit
    lm = ulmfit.load("models/imdb-lm")          # a LanguageModel  -> lm.generate("I liked this movie because")
    clf = ulmfit.load("models/imdb-clas")       # a Classifier     -> clf.predict(["Great film!", "Dull."])

Lower layers: `ulmfit.data` (corpora), `ulmfit.tokenize` (tokenizers, vocab), `ulmfit.store` (token store),
`ulmfit.loaders` (fastai DataLoaders), `ulmfit.lm`, `ulmfit.classify`, `ulmfit.bundle`.
Heavy libraries (torch, fastai) are imported lazily so that `import ulmfit` and `ulmfit --help` stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ulmfit.errors import UlmfitError

__version__ = "0.1.0"

__all__ = ["__version__", "UlmfitError", "load"]


def load(path: str | Path, device: str | None = None) -> Any:
    """Load a bundle (or a run directory holding `model-best/`) as the object its stage describes.

    Returns a `ulmfit.lm.LanguageModel` for a language model and a `ulmfit.classify.Classifier` for a
    classifier. Raises UlmfitError for anything that is not a readable bundle.
    """
    from ulmfit.bundle import read_bundle

    stage = read_bundle(path).stage
    if stage == "lm":
        from ulmfit.lm import LanguageModel

        return LanguageModel.load(path, device=device)
    if stage == "classifier":
        from ulmfit.classify import Classifier

        return Classifier.load(path, device=device)
    raise UlmfitError(f"{path} holds a bundle of unknown stage {stage!r}", hint="expected 'lm' or 'classifier'")
