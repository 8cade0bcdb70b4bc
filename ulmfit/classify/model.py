"""The ULMFiT classifier network: fastai's `get_text_classifier` on the LM's encoder (AWD-LSTM or QRNN, as the LM's
config.json["arch"]["name"] says), plus batched inference.

    SequentialRNN(
      SentenceEncoder(seq_len, AWD_LSTM|QRNN) # reads a document in seq_len-token chunks, keeps the last
                                              # max_len outputs
      PoolingLinearClassifier             # concat pooling [last, max, mean] -> LinBnDrop head -> n_class logits
    )
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ulmfit.classify.config import ClassifierConfig
from ulmfit.errors import UlmfitError

# AWD-LSTM size keys taken from the LM; the dropouts come from fastai's awd_lstm_clas_config instead.
SIZE_KEYS = ("emb_sz", "n_hid", "n_layers", "bidir")


def encoder_config(arch: dict[str, Any], pad_idx: int) -> dict[str, Any]:
    """AWD_LSTM kwargs of the classifier: sizes from the LM's arch, dropouts from awd_lstm_clas_config
    (get_text_classifier multiplies every `*_p` by drop_mult)."""
    from fastai.text.models.awdlstm import awd_lstm_clas_config

    missing = [k for k in ("emb_sz", "n_hid", "n_layers") if k not in arch]
    if missing:
        raise UlmfitError(f"the LM's config lacks AWD-LSTM size(s) {', '.join(missing)}",
                          hint="is this an ulmfit LM bundle?")
    cfg = dict(awd_lstm_clas_config)
    cfg.update({k: arch[k] for k in SIZE_KEYS if k in arch})
    cfg["pad_token"] = pad_idx
    return cfg


def build_model(vocab_size: int, n_class: int, arch: dict[str, Any], cfg: ClassifierConfig, pad_idx: int):
    """A randomly initialised classifier; load an LM encoder into it with `load_encoder`."""
    from fastai.text.models.core import get_text_classifier

    from ulmfit.lm.model import encoder_class, fix_weight_dropout

    model = get_text_classifier(encoder_class(arch), vocab_size, n_class, seq_len=cfg.seq_len,
                                config=encoder_config(arch, pad_idx), drop_mult=cfg.drop_mult,
                                lin_ftrs=list(cfg.lin_ftrs), ps=list(cfg.head_ps), pad_idx=pad_idx,
                                max_len=cfg.max_len)
    fix_weight_dropout(encoder_module(model))  # weight_p = 0 (drop_mult=0) would break fastai's WeightDropout
    return model


def encoder_module(model):
    """The AWD_LSTM inside a classifier (fastai wraps it in a SentenceEncoder)."""
    return model[0].module


def load_encoder(model, state: dict[str, Any]) -> None:
    """Load an LM's encoder weights (AWD_LSTM state dict, as in encoder.safetensors) into the classifier.

    Keys may carry the prefixes fastai uses in different places ("0." from an LM SequentialRNN, "module." from
    a SentenceEncoder); the tied `encoder_dp.emb.weight` may be missing (it is the same tensor as
    `encoder.weight`). Any other difference is an error: a silently half-loaded encoder is the worst outcome.
    """
    from ulmfit.lm.model import ARCH_LABELS, check_state_arch, module_arch

    enc = encoder_module(model)
    arch = module_arch(enc)
    check_state_arch(state, arch, "the LM's encoder")
    want = enc.state_dict()
    clean: dict[str, Any] = {}
    for k, v in state.items():
        for prefix in ("0.module.", "0.", "module."):
            if k not in want and k.startswith(prefix) and k[len(prefix):] in want:
                k = k[len(prefix):]
        clean[k] = v
    if "encoder.weight" in clean and "encoder_dp.emb.weight" not in clean:
        clean["encoder_dp.emb.weight"] = clean["encoder.weight"]
    missing = sorted(set(want) - set(clean))
    unexpected = sorted(set(clean) - set(want))
    if missing or unexpected:
        raise UlmfitError(f"the LM's encoder weights do not fit the classifier's {ARCH_LABELS[arch]} "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})",
                          hint="the LM bundle may be damaged or from another architecture")
    for k, v in clean.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise UlmfitError(f"the LM's encoder weight {k} has shape {tuple(v.shape)}, the classifier expects "
                              f"{tuple(want[k].shape)}", hint="the LM's config.json and weights disagree")
    enc.load_state_dict(clean)


def snapshot(model) -> dict[str, Any]:
    """A CPU copy of the state dict (e.g. the best epoch's weights), the tied embedding kept tied."""
    sd = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if "0.module.encoder.weight" in sd and "0.module.encoder_dp.emb.weight" in sd:
        sd["0.module.encoder_dp.emb.weight"] = sd["0.module.encoder.weight"]
    return sd


def load_state(model, state: dict[str, Any]) -> None:
    state = dict(state)
    if "0.module.encoder.weight" in state:
        state.setdefault("0.module.encoder_dp.emb.weight", state["0.module.encoder.weight"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UlmfitError(f"model.safetensors does not fit the model its config.json describes ({first})",
                          hint="the bundle is damaged; retrain or copy it again") from None


def inference_model(model, quantize: bool = False):
    """Turn `model` (in place) into a prediction-only network: weight-dropout wrappers removed (no per-chunk
    weight copies), eval mode; with `quantize`, return an int8 dynamically quantized copy (LSTMs and Linear
    layers, CPU). The result can no longer be trained."""
    import torch
    from fastai.text.models.awdlstm import WeightDropout
    from torch import nn

    m = model
    enc = encoder_module(m)
    for i, rnn in enumerate(enc.rnns):
        if isinstance(rnn, WeightDropout):
            lstm = rnn.module
            for name in rnn.layer_names:
                raw = getattr(rnn, f"{name}_raw")
                delattr(lstm, name)
                setattr(lstm, name, nn.Parameter(raw.detach().clone()))
            lstm.__dict__.pop("flatten_parameters", None)  # WeightDropout disabled it
            lstm.flatten_parameters()
            enc.rnns[i] = lstm
    m.eval()
    if quantize:
        import warnings

        with warnings.catch_warnings():  # torch deprecates eager quantization in favour of torchao
            warnings.simplefilter("ignore")
            m = torch.ao.quantization.quantize_dynamic(m, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    return m


def pad_batch(docs: list[np.ndarray], pad_idx: int, seq_len: int) -> np.ndarray:
    """fastai's pad_input_chunk for a batch sorted longest first: whole seq_len-chunks of padding before the text
    (so every text starts on a chunk boundary, which SentenceEncoder relies on), the remainder after it.

    Unlike fastai, the width is rounded up to a multiple of seq_len. Then the last seq_len columns hold the end of
    every text and no leading padding, so masked_concat_pool's "last hidden state" is the last real token's
    for every row (fastai can pick an earlier one when a short text shares a batch with a long one), and a
    document's probabilities do not depend on which documents share its batch.
    """
    n = -(-max(len(d) for d in docs) // seq_len) * seq_len
    out = np.full((len(docs), n), pad_idx, dtype=np.int64)
    for i, d in enumerate(docs):
        gap = n - len(d)
        start = (gap // seq_len) * seq_len
        out[i, start:start + len(d)] = d
    return out


def predict_ids(model, docs: list[np.ndarray], *, bs: int, pad_idx: int, seq_len: int, backwards: bool = False,
                bos_idx: int | None = None, progress_desc: str | None = None, device=None,
                activation: str = "softmax") -> np.ndarray:
    """Class probabilities (n_docs, n_class) float32 for numericalized documents, in the order given.
    `activation` "sigmoid" gives one probability per label (multi-label), "none" the raw outputs (regression).

    Documents are sorted longest first and batched (little padding, and SentenceEncoder needs that order);
    results are scattered back to the caller's order. `model` should be in eval mode (see inference_model).
    """
    import torch

    from ulmfit._io import progress

    n = len(docs)
    if n == 0:
        raise UlmfitError("there are no texts to classify")
    fallback = np.array([pad_idx if bos_idx is None else bos_idx], dtype=np.int64)
    docs = [np.asarray(d, dtype=np.int64)[::-1] if backwards else np.asarray(d, dtype=np.int64) for d in docs]
    docs = [d if len(d) else fallback for d in docs]  # an empty document still gets one token to pool over
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")  # longest first
    out: np.ndarray | None = None
    starts = range(0, n, bs)
    if progress_desc:
        starts = progress(starts, total=(n + bs - 1) // bs, desc=progress_desc, unit="batch")
    with torch.inference_mode():
        for s in starts:
            idx = order[s:s + bs]
            x = torch.from_numpy(pad_batch([docs[i] for i in idx], pad_idx, seq_len))
            if device is not None:
                x = x.to(device)
            logits = model(x)[0]  # (bs, n_class)
            p = _activate(logits.float(), activation).cpu().numpy()
            if out is None:
                out = np.empty((n, p.shape[1]), dtype=np.float32)
            out[idx] = p
    assert out is not None
    return out


def _activate(logits, activation: str):
    import torch

    if activation == "softmax":
        return torch.softmax(logits, dim=-1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits
