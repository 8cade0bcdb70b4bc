"""Training with several processes: `torchrun --nproc-per-node N -m ulmfit pretrain|lm-finetune|classify ...`.

Every rank runs the same command with the same options; the single-process path is this one with one rank
(every function here is then a no-op, and no process group is made). What the ranks share and how:

    who       rank, world size and local rank come from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK);
              each rank trains on the device of its LOCAL_RANK (`ulmfit.runtime.resolve_device`)
    options   `check_same`: a hash of each rank's resolved options is gathered and compared before any data is
              read, so ranks started differently stop with one line instead of training different things
    data      no communication: every rank derives the epoch's order from (seed, epoch) and takes its own share
              (`ulmfit.loaders`): the same number of training batches on every rank, so no collective waits
              for a rank that has run out
    one writer  rank 0 alone takes the lock on OUT (`on_main`), builds the token store while the others wait
              (`main_first`), writes checkpoints and bundles, and prints; an error in rank 0's part is raised
              on every rank
    training  `data_parallel`: DistributedDataParallel averages the gradients during training batches;
              validation runs on the plain model and its metrics are summed (or gathered) over the ranks once
              per epoch, so they are those of the whole validation split
    failures  `session`: a rank that dies, or stalls longer than ULMFIT_DIST_TIMEOUT seconds (default 1800),
              ends the others with one line instead of a hang

Only the standard library is imported at the top: `ulmfit.runtime` (on the `--help` path) imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ulmfit.errors import UlmfitError

if TYPE_CHECKING:
    import torch

DEFAULT_TIMEOUT_S = 1800  # torch's own default for gloo; long enough for rank 0 to tokenize a large corpus


# ------------------------------------------------------------------------------------------- who am I


def _group():
    """torch.distributed when a process group is up (never imports torch itself), else None."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise UlmfitError(f"{name}={value!r} is not a number", hint="start the ranks with torchrun") from None


def world_size() -> int:
    """Processes in the job: the process group's size, else torchrun's WORLD_SIZE, else 1."""
    dist = _group()
    return dist.get_world_size() if dist else max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    dist = _group()
    return dist.get_rank() if dist else _env_int("RANK", 0)


def local_rank() -> int:
    """The rank on this machine: which of its GPUs this process takes."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """Rank 0: the one process that writes and prints."""
    return rank() == 0


def main_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` on rank 0; the other ranks stay silent (they would print the same lines)."""
    return log if is_main() else _silent


def _silent(line: str) -> None:
    pass


def timeout_s() -> float:
    """ULMFIT_DIST_TIMEOUT: seconds a rank waits for the others at any collective step before giving up."""
    value = os.environ.get("ULMFIT_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UlmfitError(f"ULMFIT_DIST_TIMEOUT={value!r} is not a positive number of seconds",
                          hint=f"unset it for the default ({DEFAULT_TIMEOUT_S} s)")
    return seconds


# ------------------------------------------------------------------------------------------- the job


@contextlib.contextmanager
def session(device: str | torch.device | None) -> Iterator[None]:
    """This process's part of a torchrun job, for one training command: the process group is set up (gloo on
    CPUs, NCCL on CUDA GPUs) unless the caller already did, and taken down after. Losing the other ranks (one
    died, or stalled past the timeout) becomes one UlmfitError line. With one process: nothing at all."""
    if world_size() == 1:
        yield
        return
    import torch
    import torch.distributed as dist

    from ulmfit.runtime import resolve_device

    ours = not dist.is_initialized()
    if ours:
        dev = resolve_device(device)
        backends = {"cpu": "gloo", "cuda": "nccl"}
        if dev.type not in backends:
            raise UlmfitError(f"training with several processes runs on CPUs or CUDA GPUs, not {dev.type}",
                              hint="pass --device cpu or cuda, or run one process")
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(var):
                raise UlmfitError(f"WORLD_SIZE is {world_size()} but {var} is not set",
                                  hint="start the ranks with torchrun --nproc-per-node N -m ulmfit ...")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        try:
            dist.init_process_group(backends[dev.type], timeout=timedelta(seconds=timeout_s()))
        except (RuntimeError, ValueError) as e:
            raise UlmfitError(f"rank {rank()} could not join the other processes: {_first_line(e)}",
                              hint="check MASTER_ADDR/MASTER_PORT, or ULMFIT_DIST_TIMEOUT if a rank starts late"
                              ) from None
    try:
        yield
        if ours:  # every rank past its last collective before any tears its connections down (gloo can abort the
            dist.barrier()  # process at exit otherwise: "terminate called without an active exception")
    except dist.DistError as e:
        raise _lost(e) from None
    except RuntimeError as e:  # gloo raises a plain RuntimeError when a peer goes away or times out
        if not _is_peer_failure(e):
            raise
        raise _lost(e) from None
    finally:
        if ours:
            dist.destroy_process_group()


def _lost(e: BaseException) -> UlmfitError:
    # gloo's text: "[pair.cc:537] Read error [host]:port: Connection reset by peer. This is typically ..."
    reason = re.sub(r"^\[[^\]]*\]\s*", "", _first_line(e)).split(". ")[0]
    return UlmfitError(f"rank {rank()} of {world_size()} lost contact with the other processes ({reason})",
                       hint=f"another rank failed or was stopped (its own output says why), or stalled longer than "
                            f"ULMFIT_DIST_TIMEOUT={timeout_s():g} s")


def _is_peer_failure(e: BaseException) -> bool:
    text = str(e).lower()
    return any(s in text for s in ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout",
                                   "broken pipe"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _device() -> torch.device:
    """Where collective tensors live: NCCL moves CUDA tensors only."""
    import torch

    dist = _group()
    if dist is not None and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_same(values: dict[str, Any], what: str = "options") -> None:
    """Every rank must have been started with the same `values` (resolved config, data, OUT ...): a hash of each
    rank's is gathered and compared; a difference is the same one-line error on every rank, naming the keys."""
    dist = _group()
    if dist is None or world_size() == 1:
        return
    plain = json.loads(json.dumps(values, sort_keys=True, default=str))
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()
    digests: list[Any] = [None] * world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) == 1:
        return
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, plain)
    keys = sorted({k for v in everyone for k in v if any(w.get(k) != everyone[0].get(k) for w in everyone)})
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    raise UlmfitError(f"the {world_size()} processes were started with different {what}: "
                      f"{', '.join(keys)} (rank 0 vs rank {', '.join(map(str, odd))})",
                      hint="start every rank with the same command, data and files (torchrun passes the same "
                           "arguments to all)")


# ------------------------------------------------------------------------------------------- rank 0's part


def _outcome(payload: dict[str, Any] | None) -> dict[str, Any]:
    """Rank 0 sends `payload`; every other rank receives it (None on rank 0's side: it is the sender)."""
    box = [payload]
    _group().broadcast_object_list(box, src=0, device=_device())
    return box[0]


def _failure(e: BaseException, what: str) -> dict[str, Any]:
    if isinstance(e, UlmfitError):
        return {"error": (e.message, e.hint)}
    return {"error": (f"rank 0 failed while {what}: {type(e).__name__}: {_first_line(e)}",
                      "rank 0's own output shows the cause")}


def _tell_others(payload: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # the others may be gone already; rank 0's own error matters more
        _outcome(payload)


def _raise_if_failed(received: dict[str, Any]) -> Any:
    if "error" in received:
        message, hint = received["error"]
        raise UlmfitError(message, hint=hint)
    return received.get("value")


@contextlib.contextmanager
def main_first(what: str) -> Iterator[None]:
    """Rank 0 runs the block first (say, builds the token store), the other ranks after it (and find the store
    built). An error in rank 0's block is raised on every rank."""
    if _group() is None or world_size() == 1:
        yield
        return
    if is_main():
        try:
            yield
        except BaseException as e:
            _tell_others(_failure(e, what))
            raise
        _outcome({"ok": True})
    else:
        _raise_if_failed(_outcome(None))
        yield


@contextlib.contextmanager
def on_main(cm: contextlib.AbstractContextManager, what: str) -> Iterator[Any]:
    """Enter `cm` on rank 0 alone (the lock on OUT: one holder per run); an error entering it is raised on every
    rank. The others get None."""
    if _group() is None or world_size() == 1:
        with cm as value:
            yield value
        return
    with contextlib.ExitStack() as stack:
        value = None
        if is_main():
            try:
                value = stack.enter_context(cm)
            except BaseException as e:
                _tell_others(_failure(e, what))
                raise
            _outcome({"ok": True})
        else:
            _raise_if_failed(_outcome(None))
        yield value


def from_main(fn: Callable[[], Any], what: str) -> Any:
    """`fn()` run by rank 0 alone (choosing and saving the bundles); every rank returns its result, or raises
    its error."""
    if _group() is None or world_size() == 1:
        return fn()
    if not is_main():
        return _raise_if_failed(_outcome(None))
    try:
        value = fn()
    except BaseException as e:
        _tell_others(_failure(e, what))
        raise
    _outcome({"value": value})
    return value


def sum_over_ranks(*values: float) -> list[float]:
    """Each value summed over the ranks (itself with one process)."""
    if _group() is None or world_size() == 1:
        return [float(v) for v in values]
    import torch

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    _group().all_reduce(t)
    return t.tolist()


# ------------------------------------------------------------------------------------------- training


def data_parallel(learn):
    """`learn` trained by every rank together (see the module doc); with one process, `learn` as it was. The
    Learner's loaders must already be each rank's share (`ulmfit.loaders` makes them so under torchrun)."""
    if world_size() == 1:
        return learn
    if _group() is None:
        raise UlmfitError(f"WORLD_SIZE is {world_size()} but no process group is set up",
                          hint="train inside ulmfit.distributed.session(device), as the ulmfit commands do")
    from fastai.callback.progress import ProgressCallback

    cbs = _callbacks()
    learn.add_cbs([cbs["DataParallel"](), cbs["ReduceMetrics"]()])
    if not is_main():
        learn.remove_cbs(ProgressCallback)
    return learn


def unwrap(model):
    """The model itself, also while it is wrapped for a training batch (say, when Ctrl-C interrupts one)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def describe(bs: int, unit: str) -> str | None:
    """The line printed with the schedule under torchrun: the batch every optimizer step sees, and what happens
    to the learning rates (kept, and why). None with one process."""
    n = world_size()
    if n == 1:
        return None
    dist = _group()
    backend = dist.get_backend() if dist is not None else "?"
    return (f"distributed: {n} processes ({backend}), bs {bs} {unit} each: every optimizer step averages the "
            f"gradients of {n * bs} {unit}, as one process with bs {n * bs} would; learning rates kept as "
            f"configured, not scaled by {n}: Adam divides each step by the gradient's own scale, so a bigger batch "
            f"gives a less noisy step of the same size (the linear scaling rule is SGD's); an epoch has 1/{n} of "
            f"the optimizer steps (--set lr=... to change)")


def rank_seed(seed: int) -> int:
    """A seed for this rank's dropout masks: `seed` itself on rank 0 (so one process is unchanged), another
    stream on every other rank (identical masks on all ranks would make their rows' noise the same). The step is
    a large prime, so nearby seeds of different ranks do not meet. The LM re-seeds with it at every epoch
    (`ulmfit.runtime.seed_epoch`), the classifier at every epoch of a torchrun job (DataParallel)."""
    return (seed + 104_729 * rank()) % (2**31 - 1)


@functools.cache
def _callbacks() -> dict[str, type]:
    import torch
    from fastai.callback.core import Callback
    from torch.nn.parallel import DistributedDataParallel

    class _DDP(DistributedDataParallel):
        """fastai's ModelResetter calls model.reset() (the RNN's hidden state): pass it through."""

        def reset(self) -> None:
            if hasattr(self.module, "reset"):
                self.module.reset()

    class DataParallel(Callback):
        """DDP around the model for the training batches, the plain model everywhere else.

        Wrapped again at every fit: freeze/unfreeze between fits changes which parameters have gradients, and
        DDP registers those once. Validation runs on the plain model: no collective per batch, so ranks may
        hold different numbers of validation batches. Buffers (the classifier's BatchNorm statistics) are rank
        0's: DDP sends them before every training step, and they are sent once more before validation and at
        the end (each rank's last step updated its own)."""

        order = 11  # after TrainEvalCallback (-10) has set train/eval mode on the plain model

        def before_fit(self) -> None:
            model = unwrap(self.learn.model)
            dev = next(model.parameters()).device
            # every parameter DDP registers gets a gradient in every step (AWD-LSTM and QRNN, LM and classifier;
            # frozen groups are not registered), so DDP need not search each step's graph for unused ones
            self.ddp = _DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                            find_unused_parameters=False)
            self.learn.model = model

        def before_epoch(self) -> None:
            # Every rank was seeded alike (same initial weights); each needs its own dropout masks. Ranks > 0 seed
            # theirs from a number drawn from rank 0's stream at every epoch start: rank 0's RNG state is what a
            # checkpoint keeps, so a resumed run repeats every rank's masks.
            seed = torch.randint(2**31 - 1, (1,), dtype=torch.int64).to(_device())
            _group().broadcast(seed, src=0)
            if rank() > 0:
                torch.manual_seed(rank_seed(int(seed.item())))

        def before_train(self) -> None:
            self.learn.model = self.ddp

        def after_train(self) -> None:
            self.learn.model = self.ddp.module

        def before_validate(self) -> None:
            self.learn.model = self.ddp.module
            _broadcast_buffers(self.ddp.module)

        def after_fit(self) -> None:
            self.learn.model = self.ddp.module
            _broadcast_buffers(self.ddp.module)
            del self.ddp

    class ReduceMetrics(Callback):
        """Each rank validated its share; before the Recorder reads the values, every rank gets those of the
        whole split: averages by summing (total, count) over the ranks, predictions (F1) by gathering them."""

        order = 49  # the Recorder (50) reads the metrics in its own after_validate

        def after_validate(self) -> None:
            dist, dev = _group(), _device()
            for m in [self.learn.recorder.loss, *self.learn.metrics]:
                if hasattr(m, "total") and hasattr(m, "count"):  # AvgLoss, AvgMetric, Perplexity
                    t = torch.tensor([float(m.total), float(m.count)], dtype=torch.float64, device=dev)
                    dist.all_reduce(t)
                    m.total, m.count = t[0].cpu(), float(t[1])
                elif hasattr(m, "preds") and hasattr(m, "targs"):  # AccumMetric (macro-F1)
                    mine = (torch.cat(m.preds) if m.preds else None, torch.cat(m.targs) if m.targs else None)
                    everyone: list[Any] = [None] * dist.get_world_size()
                    dist.all_gather_object(everyone, mine)
                    m.preds = [p for p, _ in everyone if p is not None]
                    m.targs = [t for _, t in everyone if t is not None]
                else:
                    raise UlmfitError(f"metric {type(m).__name__} cannot be combined over the ranks",
                                      hint="use fastai's AvgMetric, AvgLoss or AccumMetric")

    def _broadcast_buffers(model) -> None:
        for b in model.buffers():
            _group().broadcast(b, src=0)

    return {"DataParallel": DataParallel, "ReduceMetrics": ReduceMetrics}
