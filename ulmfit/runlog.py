"""Run logs: the metrics of a training run as they happen, in OUT/logs/, for comparing runs afterwards.

    OUT/logs/metrics.csv   one row per value: time (s since the run started), stage, epoch, step, name, value
    OUT/logs/tb/           TensorBoard event files, when the `tensorboard` package is installed (`pip install
                           tensorboard`); `tensorboard --logdir OUT/logs/tb`

Per optimizer step: `train_loss` (and `lr`); per epoch: every metric of the epoch line (`valid_loss`, `accuracy`,
`perplexity`, ...; its train loss and time as `epoch_train_loss` and `epoch_seconds`). The file is written live and flushed each epoch, so a run that is still going, or was
killed, can be read; a run restarted in the same OUT (with --overwrite) starts a new file, a resumed one appends.
Under torchrun only rank 0 writes. `compare` draws several runs' curves of one metric in one PNG
(`ulmfit runs compare`).
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ulmfit.errors import UlmfitError

LOG_DIR = "logs"
CSV_FILE = "metrics.csv"
COLUMNS = ("time", "stage", "epoch", "step", "name", "value")
# Epoch-level names that would clash with the per-step ones (the epoch's smoothed train loss is not a step's)
_EPOCH_NAMES = {"train_loss": "epoch_train_loss", "seconds": "epoch_seconds"}


class RunLog:
    """Appends metric rows to OUT/logs/metrics.csv (and TensorBoard, if installed). A no-op off rank 0."""

    def __init__(self, out: Path, *, resume: bool = False) -> None:
        self.enabled = int(os.environ.get("RANK", "0")) == 0
        self.t0 = time.time()
        self.f = self.writer = self.tb = None
        if not self.enabled:
            return
        folder = Path(out) / LOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CSV_FILE
        append = resume and path.is_file() and path.stat().st_size > 0
        if append:  # a resumed run: its time goes on from the last row
            self.t0 -= _last_time(path)
        self.f = open(path, "a" if append else "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.f, lineterminator="\n")
        if not append:
            self.writer.writerow(COLUMNS)
        self.tb = _tensorboard(folder / "tb")

    def scalar(self, name: str, value: float, *, step: int, epoch: int | None = None, stage: int | None = None,
                flush: bool = False) -> None:
        if not self.enabled or value is None or not math.isfinite(float(value)):
            return
        self.writer.writerow([f"{time.time() - self.t0:.2f}", "" if stage is None else stage,
                              "" if epoch is None else epoch, step, name, f"{float(value):.6g}"])
        if self.tb is not None:
            self.tb.add_scalar(name, float(value), step)
        if flush:
            self.flush()

    def epoch(self, metrics: dict[str, Any], *, step: int) -> None:
        """Every number of one epoch's metrics dict (as the epoch line shows them), flushed."""
        for k, v in metrics.items():
            if k not in ("epoch", "stage", "phase", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.scalar(_EPOCH_NAMES.get(k, k), v, step=step, epoch=metrics.get("epoch"), stage=metrics.get("stage"))
        self.flush()

    def flush(self) -> None:
        if self.f is not None:
            self.f.flush()
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra; the CSV is always written
        return None
    return SummaryWriter(str(folder))


def _last_time(path: Path) -> float:
    try:
        rows = read_log(path.parent.parent)
    except UlmfitError:
        return 0.0
    return max((r["time"] for r in rows), default=0.0)


def read_log(run: Path) -> list[dict[str, Any]]:
    """The rows of RUN/logs/metrics.csv (RUN: a training command's --out), values as numbers."""
    path = Path(run) / LOG_DIR / CSV_FILE
    if not path.is_file():
        raise UlmfitError(f"{run} has no {LOG_DIR}/{CSV_FILE}",
                          hint="pass the --out folder of a training run (runs log there since this version)")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                rows.append({"time": float(r["time"]), "stage": r["stage"], "epoch": int(r["epoch"]) if r["epoch"] else None,
                             "step": int(r["step"]), "name": r["name"], "value": float(r["value"])})
            except (KeyError, TypeError, ValueError):
                continue  # a row cut short by a killed run
    return rows


def compare(runs: Iterable[Path], metric: str, out: Path, *, x: str = "step", smooth: int = 1) -> dict[str, int]:
    """One PNG of `metric` against `x` (step, epoch or time) for each run; returns the points drawn per run.
    `smooth` > 1 averages that many consecutive points (per-step train losses are noisy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ulmfit.classify.metrics import _save

    if x not in ("step", "epoch", "time"):
        raise UlmfitError(f"unknown x axis {x!r}", hint="use step, epoch or time")
    runs = [Path(r) for r in runs]
    if not runs:
        raise UlmfitError("no runs given", hint="pass one or more training --out folders")
    series, names = {}, set()
    for run in runs:
        rows = read_log(run)
        names |= {r["name"] for r in rows}
        pts = [(r[x], r["value"]) for r in rows if r["name"] == metric and r[x] is not None]
        series[run] = pts
    if not any(series.values()):
        raise UlmfitError(f"no run logged {metric!r}", hint=f"logged: {', '.join(sorted(names)) or 'nothing'}")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for run, pts in series.items():
            if not pts:
                continue
            xs, ys = np.array(pts, dtype=np.float64).T
            if smooth > 1 and len(ys) >= smooth:
                ys = np.convolve(ys, np.ones(smooth) / smooth, mode="valid")
                xs = xs[smooth - 1:]
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=_label(run))
        ax.set_xlabel({"step": "optimizer step", "epoch": "epoch", "time": "seconds"}[x])
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} of {len(runs)} run{'s' if len(runs) > 1 else ''}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, out)
    finally:
        plt.close(fig)
    return {str(r): len(p) for r, p in series.items()}


def _label(run: Path) -> str:
    parts = run.resolve().parts
    return "/".join(parts[-2:]) if len(parts) > 1 else str(run)
