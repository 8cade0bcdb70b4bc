"""`train_classifier`: ULMFiT step 3, the public entry of `ulmfit classify`.

Checks and locks OUT (`ulmfit._rundir.run_dir`: other files in it are kept, a previous run is replaced only with
`overwrite`), then trains one classifier (`ulmfit.classify.fit`) or, with `config.self_train` > 0, a teacher and
a student (`ulmfit.classify.self_train`, which sits on top of `fit`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ulmfit import distributed
from ulmfit._rundir import run_dir
from ulmfit.classify.config import ClassifierConfig
from ulmfit.classify.fit import TrainResult, fit_classifier
from ulmfit.classify.self_train import self_train
from ulmfit.errors import UlmfitError

if TYPE_CHECKING:
    from ulmfit.data import Corpus

__all__ = ["TrainResult", "train_classifier"]


def train_classifier(src: str | Path | Corpus, *, lm: str | Path | None, out: str | Path, config: ClassifierConfig,
                     text_col: str | None = None, label_col: str | None = None, device: str | None = None,
                     unlabeled: str | Path | Corpus | None = None, overwrite: bool = False, resume: bool = False,
                     log: Callable[[str], None] = print) -> TrainResult:
    """Train a classifier on SRC (a source for `load_corpus`, or a Corpus) with the encoder, tokenizer and
    vocab of the LM bundle `lm`; write OUT/model-best and OUT/model-last.

    With `config.self_train` > 0 this is self-training: a teacher labels that many texts of `unlabeled`
    (default: SRC's unlabeled rows) and the returned student also learns from them. `resume` continues an
    interrupted run from OUT/checkpoint (same data and options)."""
    if unlabeled is not None and not config.self_train:
        raise UlmfitError("unlabeled texts are only read for self-training", hint="pass --self-train N as well")
    if resume and overwrite:
        raise UlmfitError("--resume continues the run in --out, --overwrite replaces it", hint="pass one of them")
    if config.self_train and distributed.world_size() > 1:
        raise UlmfitError("--self-train runs in one process, not under torchrun",
                          hint="run it without torchrun, or drop --self-train")
    out = Path(out)
    # under torchrun every rank runs this with the same options (checked); rank 0 alone locks OUT, writes, prints
    with distributed.session(device):
        log = distributed.main_log(log)
        distributed.check_same({"src": getattr(src, "fingerprint", str(src)), "lm": str(lm), "out": str(out),
                                "config": config.to_dict(), "text_col": text_col, "label_col": label_col,
                                "device": device, "overwrite": overwrite, "resume": resume})
        with distributed.on_main(run_dir(out, overwrite=overwrite, resume=resume, log=log), f"checking --out {out}"):
            if config.self_train:
                return self_train(src, lm=lm, out=out, config=config, unlabeled=unlabeled, text_col=text_col,
                                  label_col=label_col, device=device, resume=resume, log=log)
            return fit_classifier(src, lm=lm, out=out, config=config, text_col=text_col, label_col=label_col,
                                  device=device, resume=resume, log=log)
