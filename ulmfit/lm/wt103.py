"""Import fastai's pretrained WikiText-103 AWD-LSTM (the `wt103-fwd` / `wt103-bwd` downloads) and map vocabularies.

fastai's archive holds `lstm_fwd.pth` (or `lstm_bwd.pth`) — a state dict of `get_language_model(AWD_LSTM)` —
and `itos_wt103.pkl`, a pickled list of the 60k tokens. We never run arbitrary pickles: the vocabulary goes
through an Unpickler that admits only lists and strings, and the weights through `torch.load(weights_only=True)`.
The vocabulary is read whole, so it is capped: ``ULMFIT_MAX_VOCAB_BYTES`` (default 64M; fastai's file is about
1 MB) or `load_itos(max_bytes=...)`.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ulmfit.data.limits import format_size, parse_size, size_spelling
from ulmfit.errors import UlmfitError

if TYPE_CHECKING:
    import torch

WEIGHT_FILES = {False: ("lstm_fwd.pth",), True: ("lstm_bwd.pth",)}
VOCAB_FILE = "itos_wt103.pkl"
VOCAB_BYTES_ENV = "ULMFIT_MAX_VOCAB_BYTES"
MAX_VOCAB_BYTES = 64 << 20  # fastai's itos_wt103.pkl (60k tokens) is about 1 MB


class _ListOfStrUnpickler(pickle.Unpickler):
    """Admits only the opcodes of plain lists/tuples/strings: any class or function reference is refused."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only a list of strings is allowed")

    def persistent_load(self, pid):  # noqa: ANN001, ANN201 - pickle API
        raise pickle.UnpicklingError("refusing a persistent id: only a list of strings is allowed")


def _vocab_limit(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return max_bytes
    raw = os.environ.get(VOCAB_BYTES_ENV)
    return parse_size(raw, VOCAB_BYTES_ENV) if raw else MAX_VOCAB_BYTES


def _read_capped(path: Path, limit: int) -> bytes:
    # Read one byte past the limit rather than trusting stat(): a FIFO or a growing file has no honest size.
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UlmfitError(f"vocabulary {path} is larger than {format_size(limit)}: refusing to load it",
                          hint=f"fastai's itos_wt103.pkl is about 1 MB; if you trust this file, raise the limit, "
                               f"e.g. {VOCAB_BYTES_ENV}={size_spelling(limit * 4)}")
    return data


def load_itos(path: Path, max_bytes: int | None = None) -> list[str]:
    """Read fastai's `itos_*.pkl` safely; anything but a list of str, or a file over `max_bytes` (default
    $ULMFIT_MAX_VOCAB_BYTES or 64 MiB), is a UlmfitError."""
    limit = _vocab_limit(max_bytes)
    try:
        data = _ListOfStrUnpickler(io.BytesIO(_read_capped(Path(path), limit))).load()
    except FileNotFoundError:
        raise UlmfitError(f"vocabulary file missing: {path}") from None
    except UlmfitError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError ... from damaged or hostile files
        raise UlmfitError(f"cannot read vocabulary {path}: {e}",
                          hint="expected fastai's itos_wt103.pkl, a pickled list of strings") from None
    if isinstance(data, tuple):
        data = list(data)
    if not isinstance(data, list) or not data or not all(isinstance(t, str) for t in data):
        raise UlmfitError(f"vocabulary {path} is not a non-empty list of strings",
                          hint="expected fastai's itos_wt103.pkl")
    return data


def load_pth_state(path: Path) -> dict[str, torch.Tensor]:
    """A fastai `.pth` state dict (optionally wrapped as {"model": ..., "opt": ...}) with weights_only=True."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UlmfitError(f"weight file missing: {path}") from None
    except Exception as e:
        raise UlmfitError(f"weight file corrupt or not a plain state dict: {path} ({type(e).__name__})",
                          hint="expected fastai's lstm_fwd.pth / lstm_bwd.pth") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise UlmfitError(f"{path} does not hold a state dict of tensors", hint="expected fastai's lstm_fwd.pth")
    return dict(state)


@dataclass
class FastaiCheckpoint:
    """A fastai LM checkpoint folder: weights + its token list."""

    weights: Path
    itos: Path
    backwards: bool

    @property
    def name(self) -> str:
        return f"{self.weights.parent.name}/{self.weights.name}"


def find_checkpoint(folder: Path, backwards: bool) -> FastaiCheckpoint | None:
    """The fastai checkpoint in `folder` for this direction; None when `folder` does not look like one."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    pths = sorted(folder.glob("*.pth"))
    pkls = sorted(folder.glob("*.pkl"))
    if not pths and not pkls:
        return None
    itos = folder / VOCAB_FILE if (folder / VOCAB_FILE).is_file() else (pkls[0] if len(pkls) == 1 else None)
    if itos is None:
        raise UlmfitError(f"{folder} has no {VOCAB_FILE}", hint="the folder must hold fastai's wt103 files: "
                          "lstm_fwd.pth (or lstm_bwd.pth) and itos_wt103.pkl")
    for name in WEIGHT_FILES[backwards]:
        if (folder / name).is_file():
            return FastaiCheckpoint(folder / name, itos, backwards)
    other = [n for n in WEIGHT_FILES[not backwards] if (folder / n).is_file()]
    if other:
        want = "backward" if backwards else "forward"
        raise UlmfitError(f"{folder} holds a {'forward' if backwards else 'backward'} model ({other[0]}) but this "
                          f"run is {want}", hint=("drop" if backwards else "add") + " --backwards, or use wt103-" +
                          ("bwd" if backwards else "fwd"))
    if len(pths) == 1:  # a renamed single checkpoint: trust the caller's direction
        return FastaiCheckpoint(pths[0], itos, backwards)
    raise UlmfitError(f"{folder} has no {WEIGHT_FILES[backwards][0]}",
                      hint="the folder must hold lstm_fwd.pth (or lstm_bwd.pth) and itos_wt103.pkl")


@dataclass
class VocabMatch:
    """How a pretrained vocabulary maps onto the domain vocabulary (fastai's `match_embeds`)."""

    n_new: int        # domain vocabulary size
    n_found: int      # domain tokens that exist in the pretrained vocabulary
    n_old: int        # pretrained vocabulary size

    @property
    def overlap(self) -> float:
        return self.n_found / max(self.n_new, 1)

    def describe(self) -> str:
        return (f"vocabulary overlap: {self.n_found}/{self.n_new} domain tokens ({self.overlap:.1%}) found in the "
                f"pretrained vocabulary of {self.n_old}; the other {self.n_new - self.n_found} start from the mean "
                f"embedding and mean decoder bias")


def match_embeds(state: dict[str, torch.Tensor], old_itos: list[str], new_itos: list[str]
                 ) -> tuple[dict[str, torch.Tensor], VocabMatch]:
    """fastai's `match_embeds`: re-index embedding/decoder rows from `old_itos` to `new_itos`.

    Rows of tokens unknown to the pretrained model get the mean embedding and the mean decoder bias. The
    returned state has independent (tied-by-value) encoder/decoder tensors; loading into a tied model ties them.
    """
    import torch

    wgts = state["0.encoder.weight"]                                # (n_old, emb)
    if wgts.shape[0] != len(old_itos):
        raise UlmfitError(f"pretrained embedding has {wgts.shape[0]} rows but its vocabulary {len(old_itos)} tokens",
                          hint="the weights and the itos file do not belong together")
    bias = state.get("1.decoder.bias")                              # (n_old,)
    old_o2i = {w: i for i, w in enumerate(old_itos)}
    idx = torch.tensor([old_o2i.get(w, -1) for w in new_itos], dtype=torch.long)
    found = idx >= 0
    new_w = wgts.mean(0, keepdim=True).repeat(len(new_itos), 1)     # (n_new, emb)
    new_w[found] = wgts[idx[found]]
    out = dict(state)
    out["0.encoder.weight"] = new_w
    out["0.encoder_dp.emb.weight"] = new_w
    out["1.decoder.weight"] = new_w.clone()
    if bias is not None:
        new_b = bias.mean().repeat(len(new_itos))
        new_b[found] = bias[idx[found]]
        out["1.decoder.bias"] = new_b
    return out, VocabMatch(n_new=len(new_itos), n_found=int(found.sum()), n_old=len(old_itos))


def extend_embeds(state: dict[str, torch.Tensor], n_total: int) -> dict[str, torch.Tensor]:
    """Grow the embedding/decoder rows to `n_total`: existing ids keep their rows exactly, appended ids get the
    mean embedding and mean decoder bias (match_embeds' rule for unknown words)."""
    wgts = state["0.encoder.weight"]                                # (n_old, emb)
    n_old = wgts.shape[0]
    new_w = wgts.mean(0, keepdim=True).repeat(n_total, 1)           # (n_total, emb)
    new_w[:n_old] = wgts
    out = dict(state)
    out["0.encoder.weight"] = new_w
    out["0.encoder_dp.emb.weight"] = new_w
    out["1.decoder.weight"] = new_w.clone()
    bias = state.get("1.decoder.bias")
    if bias is not None:
        new_b = bias.mean().repeat(n_total)
        new_b[:n_old] = bias
        out["1.decoder.bias"] = new_b
    return out
