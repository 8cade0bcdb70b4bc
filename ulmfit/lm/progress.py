"""What a language-model run does and shows at every epoch, and how it reports progress.

At each epoch start every RNG is re-seeded (so a resumed run sees the same batches and dropout masks); during the
epoch the mean training loss and tokens/s are tracked; at its end one line of the metrics table is written and
`Run.end_epoch` saves model-best and the checkpoint. With a terminal, fastai's progress bar shows the batches;
without one (a log file, nohup, CI) a plain line every ULMFIT_LOG_EVERY seconds does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from fastai.callback.core import Callback
from fastai.imports import noop  # the very object ProgressCallback compares with (not fastcore's)

from ulmfit import distributed
from ulmfit.errors import UlmfitError
from ulmfit.lm.config import Phase
from ulmfit.runtime import seed_epoch

if TYPE_CHECKING:
    from ulmfit.lm.train import Run


def epoch_callback(run: Run, phase_idx: int, phase: Phase, epoch_offset: int, start_in_phase: int) -> Callback:
    """Per-epoch bookkeeping: RNG re-seed, mean train loss, the metrics table, checkpoint + model-best."""
    columns = ["epoch", "train_loss", "valid_loss", "accuracy", "perplexity", "time"]
    # without a bar (a log file, nohup, CI) an hour-long epoch would otherwise print nothing until its end
    plain_every = None if show_bars() else log_every()

    class EpochLog(Callback):
        order = 55  # after Recorder (50) has the validation metrics; before ProgressCallback (60)

        def _write(self, cells: list[str]) -> None:
            mbar = getattr(getattr(self.learn, "progress", None), "mbar", None)
            if mbar is not None:
                mbar.write(cells, table=True)
            else:
                run.log("  ".join(f"{c:>10}" for c in cells))

        def before_fit(self) -> None:
            self.learn.logger = noop  # our table replaces fastai's (whose train_loss is a smoothed value)
            self._write(columns)

        def before_epoch(self) -> None:
            self.global_epoch = epoch_offset + start_in_phase + self.epoch  # 0-based over all phases
            seed_epoch(run.seed, self.global_epoch, self.dls)
            self.loss_sum, self.n_batches, self.t0 = 0.0, 0, time.perf_counter()
            self.n_tokens = 0
            self.last_line = self.t0

        def after_batch(self) -> None:
            if self.training:
                loss = float(self.learn.loss.detach())
                run.step += 1
                if run.runlog is not None:
                    run.runlog.scalar("train_loss", loss, step=run.step, epoch=self.global_epoch + 1)
                    run.runlog.scalar("lr", float(self.opt.hypers[-1]["lr"]), step=run.step,
                                      epoch=self.global_epoch + 1)
                self.loss_sum += loss
                self.n_batches += 1
                self.n_tokens += self.xb[0].numel()
                now = time.perf_counter()
                if plain_every is not None and now - self.last_line >= plain_every:
                    self.last_line = now
                    n, done, spent = len(self.dls.train), self.n_batches, now - self.t0
                    run.log(f"  epoch {self.global_epoch + 1}: {done:,}/{n:,} batches ({done / n:.0%}), "
                            f"train_loss {self.loss_sum / done:.4f}, {self.n_tokens / spent:,.0f} tokens/s, "
                            f"~{_minutes(spent / done * (n - done))} left in the epoch")

        def after_epoch(self) -> None:
            vals = dict(zip(self.recorder.metric_names[2:], self.recorder.final_record[1:]))
            train_time = time.perf_counter() - self.t0
            # under torchrun each rank trained on its own rows: the loss and tokens of the epoch are all ranks'
            self.loss_sum, self.n_batches, self.n_tokens = distributed.sum_over_ranks(
                self.loss_sum, self.n_batches, self.n_tokens)

            def num(v):
                return None if v is None else float(v)

            row = {"epoch": self.global_epoch + 1, "phase": phase.name,
                   "train_loss": self.loss_sum / max(self.n_batches, 1),
                   "valid_loss": num(vals.get("valid_loss")), "accuracy": num(vals.get("accuracy")),
                   "perplexity": num(vals.get("perplexity")), "seconds": round(train_time, 2),
                   "train_tokens_per_s": round(self.n_tokens / max(train_time, 1e-9), 1), "step": run.step}
            if run.runlog is not None:
                run.runlog.epoch(row, step=run.step)
            self._write([str(row["epoch"])] + [f"{row[k]:.6f}" if row[k] is not None else "-"
                                               for k in columns[1:5]] + [f"{train_time:.0f}s"])
            run.end_epoch(phase_idx, start_in_phase + self.epoch + 1, row)

    return EpochLog()


def show_bars() -> bool:
    """fastai's progress bars: on a terminal, or as ULMFIT_PROGRESS says (0 = off)."""
    forced = os.environ.get("ULMFIT_PROGRESS")
    if forced is not None:
        return forced != "0"
    return sys.stderr.isatty()


def log_every() -> float:
    """Seconds between plain progress lines when no bar is shown (ULMFIT_LOG_EVERY, default 300)."""
    value = os.environ.get("ULMFIT_LOG_EVERY", "300")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise UlmfitError(f"ULMFIT_LOG_EVERY={value!r} is not a number of seconds") from None


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
