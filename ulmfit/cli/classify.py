"""`ulmfit classify`: Train a text classifier on a fine-tuned LM encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit import distributed
from ulmfit.classify.config import resolve_config
from ulmfit.cli._common import (Bs, Config, Device, Epochs, LabelCol, Out, Overwrite, Preset, Resume, Seed, Set, Task,
                                TextCol)
from ulmfit.errors import UlmfitError

Lm = Annotated[Optional[str], typer.Option(
    "--lm", help="LM bundle (the --out of `ulmfit lm-finetune` or `pretrain`) whose encoder, tokenizer and "
    "vocab the classifier uses; or a shared archive of one (an http(s):// or file:// URL or a .tar.gz file, "
    "optionally ending in #sha256=<hex>), fetched and extracted once into $ULMFIT_DATA/models.")]
FromScratch = Annotated[bool, typer.Option(
    "--from-scratch", help="Baseline: no LM, a randomly initialised encoder and a vocab built from SRC.")]
Backwards = Annotated[bool, typer.Option(
    "--backwards", help="Read texts right to left; needs a backward LM (ensemble it with a forward one).")]
LabelSmoothing = Annotated[Optional[float], typer.Option(
    "--label-smoothing", help="Label smoothing of the cross-entropy, e.g. 0.1 (default 0).")]
ClassWeights = Annotated[Optional[str], typer.Option(
    "--class-weights", help="none, balanced (n/(k*count) for imbalanced labels), or one weight per label "
    "in sorted label order, comma-separated.")]
MaxTrain = Annotated[Optional[int], typer.Option(
    "--max-train", help="Train on a stratified subsample of N training documents (the low-shot setting).")]

SelfTrain = Annotated[Optional[int], typer.Option(
    "--self-train", metavar="N", help="Self-training: a first classifier (the teacher, kept in OUT/teacher) labels "
    "N unlabeled texts, and the classifier written to OUT trains on its most confident labels as well as "
    "the real ones; validation uses real labels only. The texts come from --unlabeled, or else SRC's own "
    "unlabeled rows (e.g. IMDb's unsup); never from a test split. Costs a second classifier's training and "
    "the labelling of N texts. Default 0 (off).")]
SelfTrainKeep = Annotated[Optional[float], typer.Option(
    "--self-train-keep", metavar="FRAC", help="With --self-train: the fraction of the N pseudo-labels kept, the "
    "most confident, the same number per predicted class (default 0.5). OUT/pseudo-labels.csv lists them.")]
Unlabeled = Annotated[Optional[str], typer.Option(
    "--unlabeled", help="With --self-train: unlabeled texts to draw from (a dataset name or a path, as SRC; "
    "labels in it are ignored, its test split is never read).")]

Patience = Annotated[Optional[int], typer.Option(
    "--patience", metavar="N", help="Early stopping: stop after N epochs whose validation metric (accuracy; the "
    "valid loss for multi-label and regression) did not beat the best by more than --min-delta; the rest of the "
    "schedule is skipped and the log says when and why. model-best and model-last keep their meaning. Default 0 "
    "(off).")]
MinDelta = Annotated[Optional[float], typer.Option(
    "--min-delta", help="With --patience: the improvement that counts (default 0: any).")]


def config_from_options(preset: str, config, set_, epochs, *, from_scratch: bool, backwards: bool,
                        class_weights: str | None, **options):
    """The ClassifierConfig of the options `classify` and `lr-find classify` share: the preset, --config, --set,
    then the explicit options (flags that are off and options not given leave the config's value), then --epochs."""
    overrides = dict(options, from_scratch=from_scratch or None, backwards=backwards or None,
                     class_weights=_class_weights(class_weights))
    return resolve_config(preset, config_file=config, sets=set_, overrides=overrides, epochs=epochs)


def _class_weights(value: str | None):
    if value is None or value in ("none", "balanced"):
        return value
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise UlmfitError(f"--class-weights {value!r}: expected none, balanced or numbers like 1,3") from None


def register(app: typer.Typer) -> None:
    @app.command("classify", help=(
        "Train a text classifier on a fine-tuned LM encoder, with discriminative learning rates (lr/2.6 per "
        "layer group) and, in the paper preset, gradual unfreezing.\n\n"
        "The schedule is printed before training. paper: the fastai course's on IMDb, the head alone, then one "
        "more layer group per stage, then all layers (--set schedule=gradual). small: every layer from the start "
        "for 5 epochs (--set schedule=all-at-once). "
        "Task shapes (--task, chosen from the labels when not given and printed): single-label, multi-label "
        "(sigmoid outputs, binary cross-entropy, a decision threshold per label tuned on the validation split) "
        "and regression (a standardised target, MSE or Huber loss; --set bins=0.2,0.4,0.6,0.8 also reports the "
        "binned accuracy). "
        "--config FILE may give any list of stages. --epochs N keeps one epoch per unfreezing stage and gives "
        "the rest to the last one. With few training "
        "documents (fewer than min_steps optimizer steps in the whole schedule; 130 in the small and paper "
        "presets) the batch is halved down to 8 and the last stage lengthened, and the log says so; "
        "--set min_steps=0 turns that off. Writes OUT/model-best "
        "and OUT/model-last: bundles with per-epoch metrics, labels and a confusion matrix. model-best is the "
        "best epoch by validation accuracy only when it beats the last by more than 2 standard errors "
        "(best_margin; a small validation split is noise), otherwise the last epoch. With 200 or more validation "
        "documents a softmax temperature is fitted on them (calibrate), so that predicted probabilities match "
        "observed accuracy; the ranking and accuracy are unchanged."))
    def classify(
        src: str = typer.Argument(..., help="Labelled corpus: a registered dataset name or a path (folder, "
                                  ".tar.gz, .csv, .tsv, .jsonl, .parquet)."),
        lm: Lm = None,
        out: Out = Path("models/classifier"),
        overwrite: Overwrite = False,
        resume: Resume = False,
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
        patience: Patience = None,
        min_delta: MinDelta = None,
        self_train: SelfTrain = None,
        self_train_keep: SelfTrainKeep = None,
        unlabeled: Unlabeled = None,
        device: Device = None,
    ) -> None:
        cfg = config_from_options(preset, config, set_, epochs, from_scratch=from_scratch, backwards=backwards,
                                  class_weights=class_weights, task=task, bs=bs, seed=seed,
                                  label_smoothing=label_smoothing, max_train=max_train, patience=patience,
                                  min_delta=min_delta, self_train=self_train, self_train_keep=self_train_keep)
        from ulmfit.classify.train import train_classifier  # torch and fastai: after the config is known to be good

        result = train_classifier(src, lm=lm, out=out, config=cfg, text_col=text_col, label_col=label_col,
                                  device=device, unlabeled=unlabeled, overwrite=overwrite, resume=resume)
        from ulmfit.classify.fit import describe_report, headline

        line = f"{result.best}\tvalid {describe_report(result.valid)}"
        if result.ngram:  # the line's figures are the ensemble's; each part's headline after it
            key, _ = headline(result.valid)
            line += (f"\t(n-gram weight {result.ngram['weight']:g}: neural "
                     f"{result.ngram['neural_valid'][key]:.4f}, n-gram {result.ngram['valid'][key]:.4f})")
        if distributed.is_main():  # under torchrun every rank returns the result; one prints it
            typer.echo(line)
