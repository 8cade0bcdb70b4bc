"""A QRNN encoder (Bradbury et al. 2017) as MultiFiT (Eisenschlos et al. 2019) uses it, a drop-in for fastai's AWD_LSTM.

An LSTM computes its gates from the previous hidden state, so every time step is a small matrix product that
waits for the one before. A QRNN computes all gates of a sequence from the input alone, with one convolution over
time (one large matrix product per layer and batch); only the element-wise forget-mult (`ulmfit.lm.forget_mult`)
runs step by step::

    z, f, o = tanh, sigmoid, sigmoid of  W [x[t-1], x[t]] + b      (window 2 on layer 0, [x[t]] on the others)
    c[t]    = f[t] * z[t] + (1 - f[t]) * c[t-1]
    h[t]    = o[t] * c[t]

`QRNN` has AWD_LSTM's constructor arguments, attributes and behaviour, so everything built around AWD_LSTM works
unchanged: fastai's `get_language_model` / `get_text_classifier` (registered below), `SequentialRNN.reset()`, the
`awd_lstm_lm_split` / `awd_lstm_clas_split` layer groups (they read `encoder`, `encoder_dp`, `rnns`, `hidden_dps`),
fastai's `SentenceEncoder` and pooling, and the RNNCallback/RNNRegularizer pair (AR/TAR on the decoder's raw and
dropped-out inputs, as for the LSTM). The regularization is AWD-LSTM's, as in MultiFiT: embedding dropout, locked
(variational) dropout on the input and between layers, DropConnect on the convolution weights, tied embeddings.

The state carried from one BPTT batch to the next (detached, as AWD_LSTM's) is, per layer, the last cell state
c[-1] and, on the window-2 layer, the last input x[-1]: so a text read in pieces, or one token at a time during
generation, gives the same outputs as the whole text at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastai.text.models import core as fastai_core
from fastai.text.models.awdlstm import (EmbeddingDropout, RNNDropout, awd_lstm_clas_config, awd_lstm_clas_split,
                                        awd_lstm_lm_config, awd_lstm_lm_split)
from torch import nn

from ulmfit.errors import UlmfitError
from ulmfit.lm.forget_mult import forget_mult

State = tuple[torch.Tensor, torch.Tensor | None]   # (c: (bs, n_out), last input x: (bs, n_in) or None)


class QRNNLayer(nn.Module):
    """One QRNN layer over time-major input (seq_len, bs, n_in) -> (seq_len, bs, n_out)."""

    def __init__(self, n_in: int, n_out: int, window: int = 1, weight_p: float = 0.0) -> None:
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"window must be 1 or 2, not {window}")
        self.n_in, self.n_out, self.window, self.weight_p = n_in, n_out, window, weight_p
        # The convolution over time as one Linear on the concatenated window: one GEMM for the whole sequence, and
        # a plain nn.Linear, so int8 dynamic quantization (torch.ao quantize_dynamic) applies to it as it is.
        self.linear = nn.Linear(window * n_in, 3 * n_out)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        c0, x_prev = state
        src = x
        if self.window == 2:  # [x[t-1], x[t]]: the first step's x[t-1] is the last input of the previous batch
            shifted = torch.cat([x_prev.to(x.dtype).unsqueeze(0), x[:-1]])
            src = torch.cat([shifted, x], dim=-1)
        gates = self._gates(src)
        if gates.dtype in (torch.float16, torch.bfloat16):  # autocast: the recurrence's rounding errors would add
            gates = gates.float()                            # up over the steps, so it runs in float32
        z, f, o = gates.chunk(3, dim=-1)
        c = forget_mult(z.tanh(), f.sigmoid(), c0)
        h = o.sigmoid() * c
        return h, (c[-1], x[-1] if self.window == 2 else None)

    def _gates(self, src: torch.Tensor) -> torch.Tensor:
        if self.training and self.weight_p > 0:
            # DropConnect on the convolution weights (AWD-LSTM drops the LSTM's hidden-to-hidden weights instead)
            return F.linear(src, F.dropout(self.linear.weight, self.weight_p), self.linear.bias)
        return self.linear(src)

    def zero_state(self, bs: int, like: torch.Tensor) -> State:
        x_prev = like.new_zeros(bs, self.n_in) if self.window == 2 else None
        return like.new_zeros(bs, self.n_out, dtype=torch.promote_types(like.dtype, torch.float32)), x_prev

    def extra_repr(self) -> str:
        return f"window={self.window}, weight_p={self.weight_p}"


class QRNN(nn.Module):
    """The QRNN encoder: token ids (bs, seq_len) -> the last layer's output (bs, seq_len, emb_sz), as AWD_LSTM."""

    initrange = 0.1

    def __init__(self, vocab_sz: int, emb_sz: int, n_hid: int, n_layers: int, pad_token: int = 1,
                 hidden_p: float = 0.2, input_p: float = 0.6, embed_p: float = 0.1, weight_p: float = 0.5,
                 bidir: bool = False) -> None:
        super().__init__()
        if bidir:
            raise UlmfitError("a bidirectional QRNN is not supported", hint="use bidir=False (the default)")
        self.emb_sz, self.n_hid, self.n_layers, self.pad_token = emb_sz, n_hid, n_layers, pad_token
        self.bs = 1
        self.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=pad_token)
        self.encoder_dp = EmbeddingDropout(self.encoder, embed_p)
        # MultiFiT: a window of 2 on the first layer sees bigrams of the input; the upper layers see one step.
        self.rnns = nn.ModuleList([
            QRNNLayer(emb_sz if i == 0 else n_hid, n_hid if i != n_layers - 1 else emb_sz,
                      window=2 if i == 0 else 1, weight_p=weight_p)
            for i in range(n_layers)])
        self.encoder.weight.data.uniform_(-self.initrange, self.initrange)
        self.input_dp = RNNDropout(input_p)
        self.hidden_dps = nn.ModuleList([RNNDropout(hidden_p) for _ in range(n_layers)])
        self.reset()

    def forward(self, inp: torch.Tensor, from_embeds: bool = False) -> torch.Tensor:
        bs = inp.shape[0]
        x = self.input_dp(inp if from_embeds else self.encoder_dp(inp))      # (bs, sl, emb)
        if bs != self.bs or self.hidden[0][0].device != x.device:
            self._change_hidden(bs, x)
        if self.hidden[0][0].is_inference() and not torch.is_inference_mode_enabled():
            # a state left by generation or prediction (inference_mode) cannot be saved for a backward pass
            self.hidden = [tuple(None if t is None else t.clone() for t in s) for s in self.hidden]
        # Time-major inside: each forget-mult step then reads one contiguous (bs, hidden) block, and the gate
        # convolution of a time-major input yields time-major gates without a copy.
        x = x.transpose(0, 1)                                                  # (sl, bs, emb)
        new_hidden = []
        for i, (rnn, hid_dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            x, state = rnn(x, self.hidden[i])
            new_hidden.append(state)
            if i != self.n_layers - 1:  # locked dropout: one mask per sequence, RNNDropout's (bs, 1, n) layout
                x = hid_dp(x.transpose(0, 1)).transpose(0, 1)
        self.hidden = [tuple(None if t is None else t.detach() for t in s) for s in new_hidden]
        return x.transpose(0, 1).contiguous()                                 # (bs, sl, emb)

    def _change_hidden(self, bs: int, like: torch.Tensor) -> None:
        """A batch of another size (the classifier's SentenceEncoder drops finished documents, generation runs
        S samples): rows that continue keep their state, new rows start from zeros, as in AWD_LSTM."""
        old = self.hidden
        fresh = [rnn.zero_state(bs, like) for rnn in self.rnns]
        self.hidden = []
        for s_old, s_new in zip(old, fresh):
            keep = min(bs, s_old[0].shape[0]) if s_old[0].device == like.device else 0
            merged = []
            for t_old, t_new in zip(s_old, s_new):
                if t_new is not None and keep:
                    t_new[:keep] = t_old[:keep].to(t_new.dtype)
                merged.append(t_new)
            self.hidden.append(tuple(merged))
        self.bs = bs

    def reset(self) -> None:
        """Forget the carried state (a new text, or a new epoch)."""
        like = next(self.parameters())
        self.hidden = [rnn.zero_state(self.bs, like) for rnn in self.rnns]


# fastai's model registry: `get_language_model(QRNN, ...)` and `get_text_classifier(QRNN, ...)` read the hidden-size
# name, the default configs and the layer-group splitters from here. As in the AWD_QRNN configs of earlier fastai 2
# releases (the current one no longer ships a QRNN): AWD-LSTM's dropouts, MultiFiT's 4 layers of 1550 (as 1552).
qrnn_lm_config = dict(awd_lstm_lm_config, n_hid=1552, n_layers=4)
qrnn_clas_config = dict(awd_lstm_clas_config, n_hid=1552, n_layers=4)
fastai_core._model_meta[QRNN] = {"hid_name": "emb_sz", "url": None, "config_lm": qrnn_lm_config,
                                 "split_lm": awd_lstm_lm_split, "config_clas": qrnn_clas_config,
                                 "split_clas": awd_lstm_clas_split}
