"""`serve`'s model side: the requests' texts batched into model calls on one worker thread, and the rows a client
reads.

Dynamic batching: one model call on many texts costs far less than one call per text (the network runs over a
padded batch at once), so `Batcher` gathers requests that arrive within `max_wait_ms` of the first waiting one, up
to `max_batch` texts, and runs them as one call. Its single worker thread is the only one that touches the models:
torch is never called concurrently, and the event loop stays free to accept requests meanwhile. Each request gets
its own rows back, in order; a request is never split, so one with more than `max_batch` texts runs alone.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ulmfit.classify.classifier import Classifier

logger = logging.getLogger("ulmfit.serve")


def predict_rows(models: list[Classifier], texts: list[str]) -> list[dict[str, Any]]:
    """One response row per text, in order, from the mean of the models' outputs, by their task shape:
    {"label", "probs"} (single-label), {"labels", "probs"} (multi-label, each label's tuned threshold; the mean of
    the models' thresholds for an ensemble) or {"value"} (regression). The only place that turns model output
    into rows."""
    from ulmfit.classify.classifier import ensemble_proba, ensemble_records

    outputs, _ = ensemble_proba(models, texts, max_chars=0)  # lengths were checked when the request was read
    return ensemble_records(models, outputs)


@dataclass
class _Job:
    texts: list[str]
    future: concurrent.futures.Future
    arrived: float  # time.monotonic()


class Batcher:
    """Runs the requests' texts through `predict_rows`, several requests per call, on one worker thread."""

    def __init__(self, models: list[Classifier], *, max_batch: int, max_wait_ms: float) -> None:
        self.models = models
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[_Job | None] = queue.Queue()  # None: stop once the jobs before it are done
        self._thread = threading.Thread(target=self._work, name="ulmfit-serve-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, texts: list[str]) -> concurrent.futures.Future:
        """A future of `texts`' rows, in order."""
        if not self._thread.is_alive():  # a request would wait forever
            raise RuntimeError("the model worker is not running")
        job = _Job(texts, concurrent.futures.Future(), time.monotonic())
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Answer every request already submitted, then stop the worker."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _work(self) -> None:
        held = None  # a job that would have overfilled the last batch: it opens the next one
        while True:
            first = held if held is not None else self._queue.get()
            held = None
            if first is None:
                return
            batch, n, stop = [first], len(first.texts), False
            deadline = first.arrived + self.max_wait  # a backlog (deadline passed) is drained without waiting
            while n < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                if n + len(job.texts) > self.max_batch:
                    held = job
                    break
                batch.append(job)
                n += len(job.texts)
            self._run([j for j in batch if j.future.set_running_or_notify_cancel()])  # drop clients that left
            if stop:
                return

    def _run(self, batch: list[_Job]) -> None:
        if not batch:
            return
        texts = [t for job in batch for t in job.texts]
        t0 = time.perf_counter()
        try:
            rows = predict_rows(self.models, texts)
            if len(rows) != len(texts):
                raise RuntimeError(f"predict_rows returned {len(rows)} rows for {len(texts)} texts")
        except Exception as e:
            if len(batch) > 1:  # one request's texts may be the cause: retry each alone, so the others get answers
                logger.warning("batch of %d requests failed (%s: %s); running them one by one", len(batch),
                               type(e).__name__, e)
                for job in batch:
                    self._run([job])
                return
            logger.exception("request of %d texts failed", len(texts))
            batch[0].future.set_exception(e)
            return
        now = time.perf_counter()
        waited = (time.monotonic() - batch[0].arrived) * 1000
        logger.info("batch: %d texts, %d requests, %.1f ms model, %.1f ms since the first arrived", len(texts),
                    len(batch), (now - t0) * 1000, waited)
        i = 0
        for job in batch:
            job.future.set_result(rows[i:i + len(job.texts)])
            i += len(job.texts)
