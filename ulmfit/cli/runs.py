"""`ulmfit runs compare RUN [RUN ...]`: several training runs' curves of one metric in one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Compare training runs from their logs (OUT/logs/metrics.csv, written by every training "
                  "command).", no_args_is_help=True)

Metric = Annotated[str, typer.Option("--metric", "-m", help="The logged metric to draw: valid_loss, train_loss, "
                                     "accuracy, macro_f1, perplexity, lr, ... (an unknown one lists those logged).")]
X = Annotated[str, typer.Option("--x", help="Horizontal axis: step (optimizer steps), epoch or time (seconds).")]
Smooth = Annotated[int, typer.Option("--smooth", min=1, help="Average this many consecutive points (per-step "
                                     "train losses are noisy); 1: as logged.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="The PNG to write (atomically; an existing file is replaced).")]


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., metavar="RUN [RUN ...]", help="Training --out folders (pretrain, "
                                      "lm-finetune or classify)."),
    metric: Metric = "valid_loss",
    x: X = "step",
    smooth: Smooth = 1,
    out: Out = Path("runs.png"),
) -> None:
    """Draw one metric of several runs against steps, epochs or time, one line per run."""
    from ulmfit.errors import UlmfitError
    from ulmfit.runlog import compare

    if out.suffix.lower() != ".png":
        raise UlmfitError(f"--out {out} must name a .png file", hint="e.g. --out runs.png")
    drawn = compare(runs, metric, out, x=x, smooth=smooth)
    for run, n in drawn.items():
        typer.echo(f"{run}\t{n} points" + ("" if n else f" (no {metric} logged)"))
    typer.echo(f"wrote {out}")


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="runs")
