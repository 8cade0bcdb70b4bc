"""Self-describing artifact directories ("bundles") written by every training stage and read by the next.

A bundle is one directory, written atomically (`ulmfit._io.atomic_dir`)::

    config.json          resolved config: stage, arch, tokenizer spec, direction, preset, seed, schedule
    meta.json            stage ("lm" | "classifier"), per-epoch metrics, direction, data {source, fingerprint},
                         versions, created (+ labels for a classifier)
    vocab.json           ulmfit.tokenize.Vocab
    tokenizer/           ulmfit.tokenize.TextTokenizer (tokenizer.json [+ spm.model])
    model.safetensors    full model weights
    encoder.safetensors  (LM only) the AWD-LSTM encoder, keys as `model[0].state_dict()` (fastai `save_encoder`)
    *.png                training curve (and whatever figures the stage adds)

A training run writes `OUT/model-best/` and `OUT/model-last/`, each a complete bundle; `read_bundle(OUT)`
picks `model-best`. Weights are safetensors (never pickles); tensors shared inside a state dict (tied
embedding/decoder weights) are stored once and re-aliased on load. Nothing in a bundle holds an absolute path.

For the classifier stage::

    b = read_bundle(lm_dir)                  # a bundle dir or a run dir
    check_direction(b, backwards=False)      # refuses to mix forward and backward models
    b.arch                                   # {"emb_sz", "n_hid", "n_layers", "pad_token", dropouts, ...}
    b.vocab, b.tokenizer                     # numericalize the labelled corpus with these
    b.load_state("encoder")                  # -> dict for `AWD_LSTM.load_state_dict` (classifier's model[0].module)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulmfit._io import atomic_dir, read_json, versions, write_json
from ulmfit.errors import UlmfitError

if TYPE_CHECKING:  # heavy imports only for type checkers
    import torch

    from ulmfit.tokenize import TextTokenizer, Vocab

FORMAT_VERSION = 1
STAGES = ("lm", "classifier")
WEIGHT_NAMES = ("model", "encoder")   # <name>.safetensors inside a bundle
_ALIASES_KEY = "ulmfit.aliases"       # safetensors metadata: {alias_key: stored_key} for shared tensors


def direction_name(backwards: bool) -> str:
    """The direction string stored in config.json / meta.json."""
    return "backward" if backwards else "forward"


# --------------------------------------------------------------------------------------------- reading


@dataclass
class Bundle:
    """A bundle directory on disk. `config`, `meta` are plain dicts; vocab/tokenizer/weights load lazily."""

    path: Path
    config: dict = field(repr=False)
    meta: dict = field(repr=False)

    @property
    def stage(self) -> str:
        return self.meta["stage"]

    @property
    def direction(self) -> str:
        """"forward" or "backward"."""
        return self.meta.get("direction", self.config.get("direction", "forward"))

    @property
    def backwards(self) -> bool:
        return self.direction == "backward"

    @property
    def arch(self) -> dict:
        """AWD-LSTM sizes and dropouts, e.g. {"name": "awd_lstm", "vocab_size", "emb_sz", "n_hid", "n_layers",
        "pad_token", "bidir", "hidden_p", "input_p", "embed_p", "weight_p", "output_p", "tie_weights",
        "out_bias", "drop_mult"}; the dropouts are the unscaled ones (multiply by drop_mult)."""
        return self.config["arch"]

    @property
    def labels(self) -> list[str] | None:
        """Class names in output order (classifier bundles), else None."""
        return self.meta.get("labels")

    @cached_property
    def vocab(self) -> Vocab:
        from ulmfit.tokenize import Vocab

        p = self.path / "vocab.json"
        if not p.is_file():
            raise UlmfitError(f"bundle {self.path} has no vocab.json", hint="re-create the bundle by training again")
        try:
            return Vocab.load(p)
        except UlmfitError:
            raise
        except Exception as e:  # corrupt JSON, wrong shape, ...
            raise UlmfitError(f"cannot read {p}: {e}", hint="the file is corrupt; train the model again") from e

    @cached_property
    def tokenizer(self) -> TextTokenizer:
        from ulmfit.tokenize import TextTokenizer

        p = self.path / "tokenizer"
        if not p.is_dir():
            raise UlmfitError(f"bundle {self.path} has no tokenizer/ folder",
                              hint="re-create the bundle by training again")
        try:
            return TextTokenizer.load(p)
        except UlmfitError:
            raise
        except Exception as e:
            raise UlmfitError(f"cannot read the tokenizer in {p}: {e}",
                              hint="the files are corrupt; train the model again") from e

    def weights_path(self, name: str = "model") -> Path:
        return self.path / f"{name}.safetensors"

    def load_state(self, name: str = "model", device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Read `<name>.safetensors` ("model" = full model, "encoder" = AWD-LSTM encoder) as a state dict.

        Tied tensors come back as the same tensor under every key they had. A missing or corrupt file is a
        UlmfitError naming the file.
        """
        return load_state_file(self.weights_path(name), device=device)

    def metrics(self) -> list[dict]:
        """Per-epoch metrics recorded by the training stage (list of dicts)."""
        return list(self.meta.get("metrics", []))


def locate(ref: str | Path) -> Path:
    """A local folder for `ref`: the path itself, or, for a shared archive (an http(s):// or file:// URL, or a
    .tar.gz file, optionally with #sha256=<hex>), the folder it was extracted to (`ulmfit.data.get_archive`);
    an archive of a single folder resolves to that folder."""
    from ulmfit.data.registry import get_archive, is_archive_ref

    if not is_archive_ref(ref):
        return Path(ref)
    root = get_archive(ref)
    if (root / "meta.json").is_file() or (root / "model-best").is_dir():
        return root
    inside = [d for d in root.iterdir() if not d.name.startswith(".")]
    return inside[0] if len(inside) == 1 and inside[0].is_dir() else root


def resolve_bundle(path: str | Path) -> Path:
    """A bundle directory, given a bundle dir or a run dir (which resolves to its `model-best`), or a shared
    archive of either (see `locate`)."""
    p = locate(path)
    if not p.exists():
        raise UlmfitError(f"no model at {p}", hint="pass a bundle directory or a training run's --out directory")
    if (p / "meta.json").is_file():
        return p
    if (p / "model-best" / "meta.json").is_file():
        return p / "model-best"
    if (p / "model-last" / "meta.json").is_file():
        raise UlmfitError(f"{p} has model-last but no model-best (training stopped before the first epoch ended)",
                          hint=f"use {p / 'model-last'} explicitly, or resume the training with --resume")
    raise UlmfitError(f"{p} is not a model bundle (no meta.json, no model-best/)",
                      hint="pass the --out directory of `ulmfit pretrain`/`lm-finetune`/`classify`")


def read_bundle(path: str | Path, stage: str | None = None) -> Bundle:
    """Open a bundle (or a run dir → its model-best). `stage` ("lm"/"classifier") checks what it holds."""
    p = resolve_bundle(path)
    docs = {}
    for name in ("config.json", "meta.json"):
        f = p / name
        if not f.is_file():
            raise UlmfitError(f"bundle {p} has no {name}", hint="re-create the bundle by training again")
        try:
            docs[name] = read_json(f)
        except (OSError, ValueError) as e:
            raise UlmfitError(f"cannot read {f}: {e}", hint="the file is corrupt; train the model again") from e
    meta = docs["meta.json"]
    if not isinstance(meta, dict) or meta.get("stage") not in STAGES:
        raise UlmfitError(f"{p / 'meta.json'} has no valid stage (expected one of {', '.join(STAGES)})",
                          hint="the file is corrupt; train the model again")
    if stage is not None and meta["stage"] != stage:
        what = {"lm": "a language model", "classifier": "a classifier"}
        raise UlmfitError(f"{p} holds {what[meta['stage']]}, but {what[stage]} is needed here",
                          hint="pass the output directory of `ulmfit pretrain` / `lm-finetune`" if stage == "lm"
                          else "pass the output directory of `ulmfit classify`")
    return Bundle(path=p, config=docs["config.json"], meta=meta)


def check_direction(bundle: Bundle, backwards: bool) -> None:
    """Refuse to combine a forward bundle with a backward run (or the reverse): the token order differs."""
    want = direction_name(backwards)
    if bundle.direction != want:
        flag = "add --backwards" if bundle.backwards else "drop --backwards"
        raise UlmfitError(f"{bundle.path} is a {bundle.direction} model but this run is {want}",
                          hint=f"{flag}, or use a {want} model")


# --------------------------------------------------------------------------------------------- weights


def save_state_file(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors; tensors shared between keys are stored once (tied weights)."""
    from safetensors.torch import save_file

    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for k, t in state.items():
        t = t.detach()
        ident = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
                 t.dtype)
        if t.numel() and ident in seen:
            aliases[k] = seen[ident]
            continue
        seen[ident] = k
        stored[k] = t.to("cpu").contiguous()
    meta = {_ALIASES_KEY: json.dumps(aliases), "format": "pt", "keys": json.dumps(list(state.keys()))}
    save_file(stored, str(path), metadata=meta)


def load_state_file(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Inverse of `save_state_file`; key order is the saved one. Missing/corrupt → UlmfitError naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UlmfitError(f"weight file missing: {path}", hint="the bundle is incomplete; train the model again")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
        aliases = json.loads(meta.get(_ALIASES_KEY, "{}"))
        order = json.loads(meta.get("keys", "null")) or list(tensors) + list(aliases)
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError for damaged files
        raise UlmfitError(f"weight file corrupt: {path} ({type(e).__name__}: {e})",
                          hint="the file is damaged or truncated; train the model again") from e
    out: dict[str, torch.Tensor] = {}
    for k in order:
        if k in tensors:
            out[k] = tensors[k]
        elif k in aliases and aliases[k] in tensors:
            out[k] = tensors[aliases[k]]
        else:
            raise UlmfitError(f"weight file corrupt: {path} (tensor {k!r} missing)",
                              hint="the file is damaged; train the model again")
    return out


# --------------------------------------------------------------------------------------------- writing


def plot_training_curve(metrics: list[dict], path: Path, title: str = "") -> None:
    """Train/valid loss per epoch (and accuracy on a second axis when present) as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    epochs = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    for key, style in (("train_loss", "o-"), ("valid_loss", "s-")):
        ys = [m.get(key) for m in metrics]
        if any(y is not None for y in ys):
            ax.plot(epochs, [float("nan") if y is None else y for y in ys], style, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if any("accuracy" in m for m in metrics):
        ax2 = ax.twinx()
        ax2.plot(epochs, [m.get("accuracy", float("nan")) for m in metrics], "^--", color="tab:green",
                 label="accuracy")
        ax2.set_ylabel("accuracy")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(str(path))


def write_bundle(path: str | Path, *, config: dict, meta: dict, vocab: Vocab, tokenizer: TextTokenizer,
                 weights: Mapping[str, Mapping[str, torch.Tensor]],
                 figures: Mapping[str, Callable[[Path], None]] | None = None) -> Path:
    """Write a complete bundle at `path` atomically (replacing an older one) and return `path`.

    config   resolved config (JSON-serializable); must hold "stage" and "direction".
    meta     must hold "stage" ("lm" | "classifier"); "direction" is copied from config when absent;
             "versions", "created" and "format_version" are filled in. "metrics" (list of per-epoch dicts
             with train_loss/valid_loss/...) produce `training-curve.png`.
    weights  {"model": state_dict, "encoder": state_dict, ...} → <name>.safetensors
    figures  {"confusion-matrix.png": draw(path)} extra figures drawn into the bundle.
    """
    path = Path(path)
    meta = dict(meta)
    if meta.get("stage") not in STAGES:
        raise ValueError(f"meta['stage'] must be one of {STAGES}")
    if "direction" not in config:
        raise ValueError("config must record 'direction'")
    meta.setdefault("direction", config["direction"])
    meta.setdefault("versions", versions())
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    meta["format_version"] = FORMAT_VERSION
    config = dict(config)
    config.setdefault("stage", meta["stage"])
    _check_no_abs_paths(config, "config")
    _check_no_abs_paths(meta, "meta")
    with atomic_dir(path) as tmp:
        write_json(tmp / "config.json", config)
        write_json(tmp / "meta.json", meta)
        vocab.save(tmp / "vocab.json")
        (tmp / "tokenizer").mkdir()
        tokenizer.save(tmp / "tokenizer")
        for name, state in weights.items():
            save_state_file(tmp / f"{name}.safetensors", state)
        if meta.get("metrics"):
            plot_training_curve(meta["metrics"], tmp / "training-curve.png",
                                title=f"{meta['stage']} ({meta['direction']})")
        for name, draw in (figures or {}).items():
            if os.sep in name or name.startswith("."):
                raise ValueError(f"figure name must be a plain file name: {name!r}")
            draw(tmp / name)
    return path


def _check_no_abs_paths(obj: Any, where: str) -> None:
    """Artifacts must be relocatable: refuse absolute paths anywhere in config/meta."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_no_abs_paths(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_no_abs_paths(v, f"{where}[{i}]")
    elif isinstance(obj, (str, Path)) and os.path.isabs(str(obj)) and len(str(obj)) > 1:
        raise ValueError(f"{where} holds an absolute path ({obj}); artifacts must not")
