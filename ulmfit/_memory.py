"""Hand memory that torch has freed back to the operating system during long CPU training.

On Linux, glibc's malloc keeps the memory of freed tensors in its heap for reuse. The AWD-LSTM's per-batch
tensors (dropout masks, gate activations, weight-dropped copies: 128 KB to 32 MB, which glibc serves from the
heap once its mmap threshold has risen) fragment that heap, and the resident size of an LM epoch grows by
~0.26 GB a minute on 2 cores although nothing is kept: 21.8 GB after one 64-minute epoch over 40,000 IMDb
reviews. `malloc_trim(0)` once a minute returns the free pages: the same epoch stays flat (~0.75 GB in a
3,000-review probe, against 1.96 GB and climbing without it) for a few percent of speed
(docs/bench/memory.md). Disabling the dynamic mmap threshold instead (MALLOC_MMAP_THRESHOLD_) also keeps it
flat but costs 16%: every large tensor is then a fresh mmap whose pages fault in again.

Elsewhere (macOS, Windows, musl) there is nothing to call and this is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import time
from collections.abc import Callable

TRIM_EVERY_S: float | None = 60.0  # None turns trimming off (scripts/bench_memory.py measures both)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> bool:
    """Return free heap pages to the OS now (glibc only). True when there was something to call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trim_callback():
    """A fastai Callback that calls `release_freed_memory` after a training batch at most every
    `TRIM_EVERY_S` seconds (read when training starts), and once after each validation."""
    from fastai.callback.core import Callback

    class TrimMemory(Callback):
        order = 90  # after everything else has let go of the batch

        def before_fit(self) -> None:
            self.every, self.last = TRIM_EVERY_S, time.monotonic()

        def after_batch(self) -> None:
            if self.every is not None and time.monotonic() - self.last >= self.every:
                release_freed_memory()
                self.last = time.monotonic()

        def after_validate(self) -> None:
            if self.every is not None:
                release_freed_memory()

    return TrimMemory()
