"""`ulmfit lm-finetune`: Fine-tune a pretrained language model on a domain corpus."""

from __future__ import annotations

from typing import Annotated

import typer

from ulmfit.cli._common import (Backwards, Bs, Config, Corpus, Device, Epochs, LabelCol, LmOut, MaxDocs, Overwrite,
                                LmPreset, Resume, Seed, Set, TextCol, train_lm)

Pretrained = Annotated[str, typer.Option(
    "--pretrained", help="An LM bundle (the --out of `ulmfit pretrain`), or a folder with fastai's WikiText-103 "
    "files (lstm_fwd.pth or lstm_bwd.pth + itos_wt103.pkl), or wt103; or a shared archive of either (an "
    "http(s):// or file:// URL or a .tar.gz file, optionally ending in #sha256=<hex>).")]

HELP = (
    "Fine-tune a pretrained language model on a domain corpus.\n\n"
    "ULMFiT's schedule: ft_freeze_epochs (1) epoch training only the embeddings and decoder, then --epochs with "
    "all layers (one-cycle each, printed first). The architecture (AWD-LSTM or QRNN) comes from the pretrained "
    "model; our bundles keep their tokenizer and vocabulary (--set ft_extend_vocab=N adds frequent domain words), "
    "fastai's WT103 weights are mapped onto a domain vocabulary (overlap printed)."
)


def register(app: typer.Typer) -> None:
    @app.command("lm-finetune", help=HELP)
    def lm_finetune(
        src: Corpus,
        pretrained: Pretrained,
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
        resume: Resume = False,
        overwrite: Overwrite = False,
        device: Device = None,
    ) -> None:
        train_lm("finetune", src, out, pretrained=pretrained, preset=preset, config=config, set_=set_, epochs=epochs,
                 bs=bs, seed=seed, backwards=backwards, text_col=text_col, label_col=label_col, max_docs=max_docs,
                 resume=resume, overwrite=overwrite, device=device)
