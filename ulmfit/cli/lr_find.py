"""`ulmfit lr-find classify|lm`: the learning-rate range test, before training a classifier or a language model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit.cli._common import (Backwards as LmBackwards, Bs, Config, Corpus, Device, Epochs, LabelCol, LmPreset,
                                MaxDocs, Preset, Seed, Set, Task, TextCol)
from ulmfit.cli.classify import (Backwards, ClassWeights, FromScratch, LabelSmoothing, Lm, MaxTrain,
                                 config_from_options)

HELP = (
    "Find a peak learning rate before training: fastai's learning-rate range test.\n\n"
    "Builds the training of `ulmfit classify` or of `pretrain` / `lm-finetune` from the same options (data, "
    "preset, --set, batch size after min_steps, freezing), then trains one batch per learning rate, growing "
    "exponentially from --start-lr to --end-lr over --steps batches, until the smoothed loss passes 4x its "
    "minimum. Prints fastai's valley suggestion (steepest slope and minimum/10 beside it) and, as the last line, "
    "the exact --set option that trains with it; --out gets the plot of smoothed loss against learning rate. "
    "Nothing else is written: the weights are thrown away, the bundles given are only read."
)

app = typer.Typer(help=HELP, no_args_is_help=True)

PlotOut = Annotated[Path, typer.Option("--out", "-o", help="The plot (a .png file), written when the sweep is done. "
                                       "An existing file is replaced only when lr-find wrote it, or with "
                                       "--overwrite.")]
PlotOverwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out that lr-find did not "
                                             "write.")]
StartLr = Annotated[float, typer.Option("--start-lr", help="The sweep's first learning rate (fastai's 1e-7).")]
EndLr = Annotated[float, typer.Option("--end-lr", help="The sweep's last learning rate, unless the loss diverges "
                                      "first (fastai's 10).")]
Steps = Annotated[int, typer.Option("--steps", help="Batches in the sweep, one learning rate each (at least 25; "
                                    "fastai's 100). The training data repeat when they hold fewer batches.")]
ClasStage = Annotated[int, typer.Option("--stage", help="Which stage of the classifier's schedule to sweep (1 = the "
                                        "first): its freezing and its lr ratio between layer groups (lr_div). A "
                                        "later stage is swept from the starting weights, not from those the earlier "
                                        "stages would leave.")]
LmStage = Annotated[int, typer.Option("--stage", help="Which phase to sweep: with --pretrained, 1 = the frozen body "
                                      "(ft_frozen_lr; all layers when ft_freeze_epochs=0) and 2 = all layers "
                                      "(ft_lr); pretraining has one phase (lr).")]
Pretrained = Annotated[Optional[str], typer.Option(
    "--pretrained", help="Sweep lm-finetune from this LM bundle, fastai WT103 folder or wt103 (as lm-finetune's "
    "--pretrained); without it, pretraining from scratch.")]


@app.command("classify", help="The learning rate of a classifier, with `ulmfit classify`'s options. The suggestion "
             "is a schedule stage's lr: the last line is --set schedule=[...] with that stage's lr replaced.")
def classify(
    src: str = typer.Argument(..., help="Labelled corpus, as for `ulmfit classify`."),
    lm: Lm = None,
    out: PlotOut = Path("lr-find.png"),
    overwrite: PlotOverwrite = False,
    stage: ClasStage = 1,
    start_lr: StartLr = 1e-7,
    end_lr: EndLr = 10.0,
    steps: Steps = 100,
    preset: Preset = "small",
    config: Config = None,
    set_: Set = None,
    epochs: Epochs = None,
    bs: Bs = None,
    seed: Seed = None,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    task: Task = None,
    from_scratch: FromScratch = False,
    backwards: Backwards = False,
    label_smoothing: LabelSmoothing = None,
    class_weights: ClassWeights = None,
    max_train: MaxTrain = None,
    device: Device = None,
) -> None:
    cfg = config_from_options(preset, config, set_, epochs, from_scratch=from_scratch, backwards=backwards,
                              class_weights=class_weights, task=task, bs=bs, seed=seed,
                              label_smoothing=label_smoothing, max_train=max_train)
    from ulmfit.lr_find import lr_find_classifier  # torch and fastai: after the config is known to be good

    lr_find_classifier(src, lm=lm, config=cfg, out=out, stage=stage, text_col=text_col, label_col=label_col,
                       device=device, start_lr=start_lr, end_lr=end_lr, steps=steps, overwrite=overwrite,
                       log=typer.echo)


@app.command("lm", help="The learning rate of a language model, with `ulmfit pretrain`'s options (or lm-finetune's, "
             "with --pretrained). The last line is --set lr=..., ft_frozen_lr=... or ft_lr=..., the field that phase "
             "reads.")
def lm(
    src: Corpus,
    pretrained: Pretrained = None,
    out: PlotOut = Path("lr-find.png"),
    overwrite: PlotOverwrite = False,
    stage: LmStage = 1,
    start_lr: StartLr = 1e-7,
    end_lr: EndLr = 10.0,
    steps: Steps = 100,
    preset: LmPreset = "small",
    config: Config = None,
    set_: Set = None,
    epochs: Epochs = None,
    bs: Bs = None,
    seed: Seed = 42,
    backwards: LmBackwards = False,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    max_docs: MaxDocs = None,
    device: Device = None,
) -> None:
    from ulmfit.lm.config import explicit_keys, resolve_config

    overrides = {"epochs": epochs, "bs": bs}
    cfg = resolve_config(preset, config_file=config, sets=set_, overrides=overrides)
    from ulmfit.lr_find import lr_find_lm  # torch and fastai: after the config is known to be good

    lr_find_lm(src, config=cfg, out=out, pretrained=pretrained, stage=stage, seed=seed, backwards=backwards,
               text_col=text_col, label_col=label_col, max_docs=max_docs, device=device,
               explicit=explicit_keys(config, set_, overrides), start_lr=start_lr, end_lr=end_lr, steps=steps,
               overwrite=overwrite, log=typer.echo)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="lr-find")
