"""Build the language model (fastai's `get_language_model(encoder, ...)`) from an arch description.

config.json["arch"]["name"] chooses the encoder: "awd_lstm" (fastai's AWD_LSTM, the default; bundles without a
name are AWD-LSTMs) or "qrnn" (`ulmfit.lm.qrnn.QRNN`, which has AWD_LSTM's interface). The AWD-LSTM is fastai's
own, so its weights move freely between ulmfit bundles, fastai `Learner.save` files and fastai's WikiText-103
checkpoints::

    SequentialRNN(
      0: AWD_LSTM | QRNN   encoder      (bs, sl) ids -> (bs, sl, emb_sz)
      1: LinearDecoder     decoder      (bs, sl, emb_sz) -> logits (bs, sl, vocab), raw out, dropped-out out
       | AdaptiveSoftmax                (bs, sl, emb_sz) -> its input (bs, sl, emb_sz), raw out, dropped-out out
    )

config.json["arch"]["softmax"] chooses the output layer: "full" (fastai's LinearDecoder; bundles without the key)
or "adaptive" (`ulmfit.lm.adaptive`, cutoffs in arch["adaptive_cutoffs"]). What differs between the two is kept
here: the learner's loss and metrics (`lm_loss`, `lm_metrics`) and the next-token scores (`next_token_scores`).
Weights of one architecture or output layer never load into the other: `check_state_arch` and
`check_state_softmax` say so in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ulmfit.errors import UlmfitError
from ulmfit.lm.config import ARCHS, SOFTMAXES

if TYPE_CHECKING:
    import torch
    from fastai.text.models.core import SequentialRNN

_DROPOUTS = ("output_p", "hidden_p", "input_p", "embed_p", "weight_p")
ARCH_LABELS = {"awd_lstm": "AWD-LSTM", "qrnn": "QRNN"}


def arch_name(arch: dict[str, Any]) -> str:
    """The encoder named by an arch dict ("awd_lstm" when the dict has no name: bundles from before the QRNN)."""
    name = arch.get("name", "awd_lstm")
    if name not in ARCHS:
        raise UlmfitError(f"unknown model architecture {name!r} in the model's config.json",
                          hint=f"known: {', '.join(ARCHS)}; the bundle may come from a newer ulmfit")
    return name


def arch_label(arch: dict[str, Any]) -> str:
    """e.g. "QRNN 200/512/3" (emb/hidden/layers), for logs."""
    return f"{ARCH_LABELS[arch_name(arch)]} {arch['emb_sz']}/{arch['n_hid']}/{arch['n_layers']}"


def encoder_class(arch: dict[str, Any]) -> type:
    """fastai's AWD_LSTM or ulmfit's QRNN: the encoder class `get_language_model`/`get_text_classifier` build."""
    if arch_name(arch) == "qrnn":
        from ulmfit.lm.qrnn import QRNN

        return QRNN
    from fastai.text.models.awdlstm import AWD_LSTM

    return AWD_LSTM


def state_arch(state: dict[str, Any]) -> str | None:
    """Which encoder a (LM, encoder or classifier) state dict comes from, by its keys; None when it cannot tell."""
    for k in state:
        if "rnns." in k and k.endswith(".linear.weight"):
            return "qrnn"
        if "rnns." in k and "weight_hh_l" in k:
            return "awd_lstm"
    return None


def check_state_arch(state: dict[str, Any], want: str, what: str) -> None:
    """Weights of one architecture offered to a model of the other: one clear error instead of a list of keys."""
    found = state_arch(state)
    if found is not None and found != want:
        raise UlmfitError(f"{what} holds {ARCH_LABELS[found]} weights but the model here is built as "
                          f"{ARCH_LABELS[want]} (architecture mismatch)",
                          hint=f"weights load only into the architecture they were trained as (arch={found})")


def check_state_softmax(state: dict[str, Any], want: str, what: str) -> None:
    """LM weights of one output layer offered to a model built with the other: one clear error instead of a list
    of keys (an adaptive softmax has `1.cluster_weight`, fastai's LinearDecoder `1.decoder.*`)."""
    from ulmfit.lm.adaptive import is_adaptive_state

    found = ("adaptive" if is_adaptive_state(state) else
             "full" if any(k.startswith("1.decoder.") for k in state) else None)
    if found is not None and found != want:
        layer = {"full": "a full softmax", "adaptive": "an adaptive softmax"}
        raise UlmfitError(f"{what} has {layer[found]} output layer but the model here is built with {layer[want]} "
                          f"(softmax mismatch)",
                          hint=f"weights load only into the output layer they were trained with (softmax={found})")


def module_arch(encoder: Any) -> str:
    """The arch name of an encoder module (AWD_LSTM or QRNN)."""
    from ulmfit.lm.qrnn import QRNN

    return "qrnn" if isinstance(encoder, QRNN) else "awd_lstm"


def fastai_config(arch: dict[str, Any]) -> dict[str, Any]:
    """The arch dict (config.json["arch"]) as fastai's `awd_lstm_lm_config` (dropouts still unscaled)."""
    return dict(emb_sz=arch["emb_sz"], n_hid=arch["n_hid"], n_layers=arch["n_layers"],
                pad_token=arch.get("pad_token", 1), bidir=arch.get("bidir", False),
                output_p=arch["output_p"], hidden_p=arch["hidden_p"], input_p=arch["input_p"],
                embed_p=arch["embed_p"], weight_p=arch["weight_p"],
                tie_weights=arch.get("tie_weights", True), out_bias=arch.get("out_bias", True))


def softmax_name(arch: dict[str, Any]) -> str:
    """The output layer named by an arch dict ("full" when the dict has no softmax: bundles from before it)."""
    name = arch.get("softmax", "full")
    if name not in SOFTMAXES:
        raise UlmfitError(f"unknown output layer softmax={name!r} in the model's config.json",
                          hint=f"known: {', '.join(SOFTMAXES)}; the bundle may come from a newer ulmfit")
    return name


def build_lm(arch: dict[str, Any], vocab_size: int | None = None) -> SequentialRNN:
    """A freshly initialised LM of arch["name"] with the output layer of arch["softmax"]; dropouts are multiplied by
    arch["drop_mult"] as in fastai."""
    from fastai.text.models.core import get_language_model

    vocab_size = vocab_size if vocab_size is not None else arch["vocab_size"]
    model = get_language_model(encoder_class(arch), vocab_size, config=fastai_config(arch),
                               drop_mult=arch.get("drop_mult", 1.0))
    if softmax_name(arch) == "adaptive":  # fastai's encoder as it is; only the output layer is swapped
        from ulmfit.lm.adaptive import AdaptiveSoftmax

        model[1] = AdaptiveSoftmax(vocab_size, arch["emb_sz"], arch["adaptive_cutoffs"], arch["adaptive_div"],
                                   output_p=arch["output_p"] * arch.get("drop_mult", 1.0),
                                   tie_encoder=model[0].encoder if arch.get("tie_weights", True) else None,
                                   bias=arch.get("out_bias", True))
    fix_weight_dropout(model[0])
    return model


def is_adaptive(model: torch.nn.Module) -> bool:
    """Whether the LM's output layer is an adaptive softmax."""
    from ulmfit.lm.adaptive import AdaptiveSoftmax

    return isinstance(model[1], AdaptiveSoftmax)


def lm_loss(model: torch.nn.Module) -> Any:
    """The learner's loss on the model's output: flattened cross entropy over the logits, or the adaptive softmax's
    mean NLL of its input."""
    from fastai.losses import CrossEntropyLossFlat

    if is_adaptive(model):
        from ulmfit.lm.adaptive import AdaptiveLoss

        return AdaptiveLoss(model[1])
    return CrossEntropyLossFlat()


def lm_metrics(model: torch.nn.Module) -> list:
    """accuracy (argmax of the full distribution) and perplexity (exp of the validation loss, an exact NLL with
    either output layer)."""
    from fastai.learner import AvgMetric
    from fastai.metrics import Perplexity, accuracy

    if is_adaptive(model):
        from ulmfit.lm.adaptive import adaptive_accuracy

        return [AvgMetric(adaptive_accuracy(model[1])), Perplexity()]
    return [accuracy, Perplexity()]


def next_token_scores(model: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """(..., emb) last-layer outputs -> (..., vocab) scores whose softmax is the model's next-token distribution:
    the full decoder's logits, or the adaptive softmax's normalized log-probabilities. No output dropout."""
    out = model[1]
    return out.log_prob(h) if is_adaptive(model) else out.decoder(h)


_SAFE_WD: type | None = None


def fix_weight_dropout(encoder: torch.nn.Module) -> None:
    """Two fixes to fastai's WeightDropout (DropConnect on the LSTM's hidden-to-hidden weights), in place.

    - weight_p == 0 (e.g. drop_mult=0) on current torch: `F.dropout(raw, p=0)` returns the raw Parameter
      itself; assigning it to the LSTM re-registers it as a parameter and the next `reset()` fails ("cannot
      assign FloatTensor as parameter"). A copy is used instead.
    - under no_grad/inference_mode the raw weight is used as it is instead of being cloned for every forward
      (a 1152-hidden layer copies 21 MB per call: it dominated one-token generation steps).
    The state dict and everything else are unchanged (the instances just get a subclass).
    """
    global _SAFE_WD
    from fastai.text.models.awdlstm import WeightDropout

    if _SAFE_WD is None:
        import torch
        import torch.nn.functional as F

        class SafeWeightDropout(WeightDropout):
            def _setweights(self) -> None:
                for layer in self.layer_names:
                    raw_w = getattr(self, f"{layer}_raw")
                    if self.training and self.weight_p > 0:
                        w = F.dropout(raw_w, p=self.weight_p)
                    elif torch.is_grad_enabled():
                        w = raw_w * 1.0  # a new tensor that still carries the gradient to raw_w
                    else:
                        w = raw_w.detach()  # inference: no copy of the weights at every step
                    setattr(self.module, layer, w)

        _SAFE_WD = SafeWeightDropout
    for rnn in getattr(encoder, "rnns", []):
        if type(rnn) is WeightDropout:
            rnn.__class__ = _SAFE_WD


def encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's state dict, keys as fastai's `save_encoder` (what the classifier's AWD_LSTM loads)."""
    enc = model[0]
    enc = getattr(enc, "module", enc)
    return enc.state_dict()


def normalize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring fastai v1/v2 LM checkpoints to the current key layout of `get_language_model(AWD_LSTM)`.

    - fastai v1 kept DropConnect's raw weight inside the LSTM: `0.rnns.0.module.weight_hh_l0_raw`
      → `0.rnns.0.weight_hh_l0_raw`;
    - older files also carry the dropped-out copy `0.rnns.0.module.weight_hh_l0` next to the raw one:
      dropped (fastai's `clean_raw_keys`), or renamed to the raw key when the raw one is absent;
    - the alias `0.encoder_dp.emb.weight` (and the tied `1.decoder.weight`) are filled from `0.encoder.weight`.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith("_raw") and ".module." in k:
            k = k.replace(".module.", ".", 1)
        out[k] = v
    for k in list(out):
        head, sep, tail = k.partition(".module.")
        if sep and tail.startswith("weight_hh_l") and not tail.endswith("_raw"):
            raw = f"{head}.{tail}_raw"
            v = out.pop(k)
            out.setdefault(raw, v)
    if "0.encoder.weight" in out:
        out.setdefault("0.encoder_dp.emb.weight", out["0.encoder.weight"])
    return out


def arch_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer vocab/emb/hidden sizes and layer count from a (normalized) LM state dict."""
    try:
        vocab_size, emb_sz = state["0.encoder.weight"].shape
        layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("0.rnns.")})
        n_layers = len(layers)
        n_hid = state["0.rnns.0.weight_hh_l0_raw"].shape[1] if n_layers > 1 else emb_sz
    except (KeyError, IndexError, ValueError) as e:
        raise UlmfitError(f"not an AWD-LSTM language model state dict (missing {e})",
                          hint="expected fastai's get_language_model(AWD_LSTM, ...) weights") from None
    return {"vocab_size": int(vocab_size), "emb_sz": int(emb_sz), "n_hid": int(n_hid), "n_layers": n_layers,
            "out_bias": "1.decoder.bias" in state}


def load_lm_state(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load weights by name, turning any key/shape mismatch into one clear UlmfitError."""
    arch = module_arch(model[0])
    check_state_arch(state, arch, what)
    check_state_softmax(state, "adaptive" if is_adaptive(model) else "full", what)
    state = normalize_state(state)
    own = model.state_dict()
    for tied in ("1.decoder.weight", "1.embedding.weight"):  # the tied output layer: the embedding's alias
        if tied in own and tied not in state and "0.encoder.weight" in state:
            state[tied] = state["0.encoder.weight"]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "") if unexpected else "",
            f"shape {', '.join(shapes[:2])}" if shapes else ""]))
        raise UlmfitError(f"{what} does not fit this {ARCH_LABELS[arch]} architecture ({detail})",
                          hint="the weights come from a model with other sizes; don't override emb_sz/n_hid/n_layers")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
