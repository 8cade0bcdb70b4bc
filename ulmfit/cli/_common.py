"""Option types shared by the commands, so each option is spelled and explained the same everywhere.

Each command module lists its own parameters (typer reads them from the signature) with these types, and calls
one importable function of the library. Only typer and the standard library are imported here: `ulmfit --help`
must answer in well under a second, so torch and fastai are imported inside command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit import distributed
from ulmfit.lm.config import explicit_keys, resolve_config

# ---- every training command ------------------------------------------------------------------------------

_OUT = ("Output folder of the run. Only the run's own entries are written there ({entries}; each atomically); "
        "other files in it are left alone. A folder holding another run is refused unless {unless}; one run per "
        "folder at a time (a lock).")
Out = Annotated[Path, typer.Option("--out", "-o", help=_OUT.format(
    entries="model-best/, model-last/, logs/ (metrics as they happen), checkpoint/ (while the run is unfinished: "
    "--resume continues it), and teacher/ and pseudo-labels.csv with --self-train (student/ and self-train.json "
    "while it runs)",
    unless="--overwrite or --resume"))]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out (its model-best/, "
                                         "model-last/ ...; other files in the folder are kept).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same splits, batches and weights on CPU.")]
Preset = Annotated[str, typer.Option("--preset", "-p", help="Training preset: tiny (tests), small (CPU), paper (GPU, "
                                    "the ULMFiT paper's settings); small-lstm, small-qrnn and paper-qrnn are small "
                                    "and paper (the encoder's arch comes from the LM).")]
LmPreset = Annotated[str, typer.Option("--preset", "-p", help="Model/training preset: tiny (tests), small (CPU: a QRNN "
                                       "200/512/3 with the adaptive softmax), small-lstm (CPU: the ULMFiT AWD-LSTM "
                                       "200/512/2, full softmax), small-qrnn (small with the full softmax), paper "
                                       "(GPU, the ULMFiT paper's AWD-LSTM), paper-qrnn (GPU, MultiFiT's QRNN). Any "
                                       "preset takes --set arch=qrnn|awd_lstm and --set softmax=full|adaptive.")]
Epochs = Annotated[Optional[int], typer.Option("--epochs", "-e", help="Override the preset's number of epochs.")]
Bs = Annotated[Optional[int], typer.Option("--bs", help="Override the preset's batch size (a preset with min_steps halves it when the data give too few optimizer steps; --set min_steps=0 keeps it).")]
Config = Annotated[Optional[Path], typer.Option("--config", "-c", help="JSON file of config overrides (unknown keys are errors).")]
Set = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override one config field, e.g. --set drop_mult=0.3 (repeatable; an unknown "
    "key is an error that lists the valid ones). Booleans: true/false, on/off, yes/no, 1/0; lists: 0.8,0.7,0.8 or "
    "[0.8, 0.7, 0.8]; none (or null) leaves an optional field unset.")]

# ---- every command that reads a corpus or runs a model ----------------------------------------------------

TextCol = Annotated[Optional[str], typer.Option("--text-col", help="Text column(s) of a CSV/TSV/JSONL/parquet source; several joined by commas.")]
LabelCol = Annotated[Optional[str], typer.Option("--label-col", help="Label column of a CSV/TSV/JSONL/parquet source "
                                                  "(several 0/1 columns joined by commas make a multi-label task; "
                                                  "a table without a header names its columns 1, 2, ...).")]
# classify sets the task shape; predict and evaluate only check that the models have it.
TASK_HELP = ("single-label (one class per text), multi-label (a set of labels per text: a label cell holds them "
             "separated by commas, or several 0/1 label columns) or regression (a number per text)")
Task = Annotated[Optional[str], typer.Option("--task", help=f"The task shape: {TASK_HELP}. Default: from the "
                                             "training labels, printed before training (numbers with fractions: "
                                             "regression; cells holding the label delimiter: multi-label).")]
ExpectTask = Annotated[Optional[str], typer.Option("--task", help=f"Refuse models that are not this shape: "
                                                   f"{TASK_HELP}. Default: any, as long as all models share it.")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:N or mps; default: a GPU if present, else CPU.")]
# evaluate and predict: a batch size for inference only (no preset, no min_steps there).
InferBs = Annotated[Optional[int], typer.Option("--bs", help="Documents per batch when predicting (default: the "
                                                "model's training batch size, at least 64). Larger batches run "
                                                "faster on a GPU and need more memory.")]

# ---- pretrain and lm-finetune ---------------------------------------------------------------------------

LmOut = Annotated[Path, typer.Option("--out", "-o", help=_OUT.format(
    entries="model-best/, model-last/, checkpoint/, logs/ (metrics as they happen)", unless="--overwrite or --resume"))]
Corpus = Annotated[str, typer.Argument(
    help="Corpus: a registered dataset name or a path (folder, .tar.gz, .csv, .tsv, .jsonl, "
    ".parquet). Labels are ignored; the test split is never read.")]
Backwards = Annotated[bool, typer.Option(
    "--backwards", help="Train on the reversed token stream (a backward LM, for a backward classifier).")]
MaxDocs = Annotated[Optional[int], typer.Option(
    "--max-docs", help="Use at most N documents of each split (train, unsup, valid): quick runs.")]
Also = Annotated[Optional[list[str]], typer.Option(
    "--also", metavar="SRC", help="Pretrain on this corpus's non-test texts too (repeatable; any source SRC can be, "
    "its text column detected, its valid split (or 10% of its train rows) joining validation; --max-docs applies "
    "to SRC only): e.g. your own unlabeled texts beside a public corpus.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run from OUT/checkpoint (same data and options).")]


def train_lm(stage: str, src: str, out: Path, *, pretrained: str | None = None, preset: str, config: Path | None,
             set_: list[str] | None, epochs: int | None, bs: int | None, seed: int, backwards: bool,
             text_col: str | None, label_col: str | None, max_docs: int | None, resume: bool, overwrite: bool,
             device: str | None, also: list[str] | None = None) -> None:
    """The body of `pretrain` (stage "pretrain") and `lm-finetune` ("finetune"): resolve and check the config
    before any data is read, train, and print the best bundle and its validation metrics as the last line."""
    overrides = {"epochs": epochs, "bs": bs}
    cfg = resolve_config(preset, config_file=config, sets=set_, overrides=overrides)
    from ulmfit.lm.train import finetune, pretrain  # torch and fastai: after the config is known to be good

    common = dict(preset=preset, seed=seed, backwards=backwards, device=device, text_col=text_col,
                  label_col=label_col, max_docs=max_docs, resume=resume, overwrite=overwrite)
    if stage == "pretrain":
        result = pretrain(src, out, cfg, also=also or [], **common)
    else:  # the user's own keys are checked against the pretrained model's architecture and tokenizer
        result = finetune(src, pretrained, out, cfg, explicit=explicit_keys(config, set_, overrides), **common)
    best = result.metrics[result.best_epoch - 1] if result.best_epoch else {}
    if distributed.is_main():  # under torchrun every rank returns the result; one prints it
        typer.echo(f"{result.best}\tvalid_loss {best.get('valid_loss', float('nan')):.4f}\t"
                   f"accuracy {best.get('accuracy') or 0:.4f}\tperplexity {best.get('perplexity') or 0:.2f}")


# ---- options of the commands that use a trained classifier (predict, evaluate) -------------------------------
MaxChars = Annotated[int, typer.Option("--max-chars", help="Characters read per document (0: no limit). A longer "
                                       "document is still classified, from its first N characters, and a warning "
                                       "says how many were cut. Time per document grows linearly with its length.")]
NgramWeight = Annotated[Optional[float], typer.Option(
    "--ngram-weight", metavar="W", help="Each model's output is (1-W) x neural + W x its bundle's n-gram model; "
    "default: the W chosen on the validation split at training (stored in the bundle). 0: the neural model alone.")]

