"""`ulmfit pretrain`: Pretrain a language model (AWD-LSTM or QRNN) from scratch on a corpus."""

from __future__ import annotations

import typer

from ulmfit.cli._common import (Also, Backwards, Bs, Config, Corpus, Device, Epochs, LabelCol, LmOut, LmPreset,
                                MaxDocs, Overwrite, Resume, Seed, Set, TextCol, train_lm)

HELP = (
    "Pretrain a language model from scratch on a corpus: a QRNN with the adaptive softmax (MultiFiT's encoder; "
    "the small preset, for a CPU) or an AWD-LSTM (ULMFiT's; --preset small-lstm or paper, or --set arch=awd_lstm)."
    "\n\n"
    "Trains the tokenizer and vocabulary on the non-test splits, then the LM on train+unsup with valid for "
    "validation (one-cycle, AR/TAR, gradient clipping); the splits used, the resolved config and the schedule "
    "are printed first. Writes OUT/model-best and OUT/model-last (bundles) and a checkpoint every epoch for "
    "--resume."
)


def register(app: typer.Typer) -> None:
    @app.command("pretrain", help=HELP)
    def pretrain(
        src: Corpus,
        out: LmOut,
        preset: LmPreset = "small",
        config: Config = None,
        set_: Set = None,
        epochs: Epochs = None,
        bs: Bs = None,
        seed: Seed = 42,
        backwards: Backwards = False,
        text_col: TextCol = None,
        label_col: LabelCol = None,
        max_docs: MaxDocs = None,
        also: Also = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
        device: Device = None,
    ) -> None:
        train_lm("pretrain", src, out, preset=preset, config=config, set_=set_, epochs=epochs, bs=bs, seed=seed,
                 backwards=backwards, text_col=text_col, label_col=label_col, max_docs=max_docs, resume=resume,
                 overwrite=overwrite, device=device, also=also)
