"""Option types shared by every command, so each option is spelled and explained the same everywhere.

Only typer and the standard library are imported here: `ulmfit --help` must answer in well under a second,
so torch and fastai are imported inside command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit.errors import UlmfitError

Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder of the run. Only the run's own entries are "
                                   "written there (model-best/, model-last/, checkpoint/; each atomically); other "
                                   "files in it are left alone. A folder holding another run is refused unless "
                                   "--overwrite or --resume; one run per folder at a time (a lock).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out (its model-best/, "
                                         "model-last/, checkpoint/ ...; other files in the folder are kept).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same splits, batches and weights on CPU.")]
Preset = Annotated[str, typer.Option("--preset", "-p", help="Model/training preset: tiny (tests), small (CPU), paper (GPU, the ULMFiT paper's sizes).")]
Epochs = Annotated[Optional[int], typer.Option("--epochs", "-e", help="Override the preset's number of epochs.")]
Bs = Annotated[Optional[int], typer.Option("--bs", help="Override the preset's batch size (a preset with min_steps halves it when the data give too few optimizer steps; --set min_steps=0 keeps it).")]
TextCol = Annotated[Optional[str], typer.Option("--text-col", help="Text column(s) of a CSV/TSV/JSONL/parquet source; several joined by commas.")]
LabelCol = Annotated[Optional[str], typer.Option("--label-col", help="Label column of a CSV/TSV/JSONL/parquet source.")]
Config = Annotated[Optional[Path], typer.Option("--config", "-c", help="JSON file of config overrides (unknown keys are errors).")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:N or mps; default: a GPU if present, else CPU.")]
Set = Annotated[Optional[list[str]], typer.Option("--set", help="Override one config field, e.g. --set emb_sz=200 (repeatable; unknown keys are errors).")]


def not_landed(command: str, issue: int) -> None:
    """Commands whose implementation has not landed say so plainly and exit non-zero."""
    raise UlmfitError(f"`ulmfit {command}` is not implemented yet (tracked in issue #{issue}).")
