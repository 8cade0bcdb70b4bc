"""The adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs"): the LM's cheaper output layer.

Ids are frequency ranks (the vocab holds the special tokens, then words by count; sentencepiece pieces in the
model's own order, by score or merge rank), so cutoffs c0 < c1 < ... split the vocab into a head of frequent words
and tail clusters of rarer ones::

    head       ids [0, c0) + one logit per cluster   (N, emb) @ [E[:c0]; C]^T + b        -> (N, c0 + n_clusters)
    cluster i  ids [c_i, c_i+1)                      (N, emb) @ P_i^T @ O_i^T + b_i        -> (N, n_i)
               P_i: emb -> emb / div**(i+1) (at least 1), O_i: that width -> n_i

    log p(w | h) = log p_head(w)                          for a head word
                 = log p_head(cluster i) + log p_i(w)     for a word of cluster i

That is an exact distribution over the whole vocab (it sums to 1), so the loss, perplexity, accuracy and sampling
need no approximation. Training is cheap because every position pays for the head but only the positions whose
target lies in cluster i pay for cluster i, through a matrix emb / div**(i+1) wide.

Tying: with tie_weights the head's word rows *are* the embedding's first c0 rows (`embedding` is the encoder's own
nn.Embedding, registered here too, as fastai's LinearDecoder shares the whole matrix). The tail words' output
vectors are their cluster's low-rank O_i P_i, untied: their embedding rows only feed the encoder. The cluster
logits C, the biases and the P_i, O_i are this layer's own.

fastai integration: `forward` is LinearDecoder's (dropped-out hidden states, raw, dropped-out) with the dropped-out
hidden states in the place of the logits, so RNNCallback and RNNRegularizer (AR/TAR) work unchanged, and the
learner's loss (`AdaptiveLoss`) and accuracy (`adaptive_accuracy`) call this layer on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from fastai.text.models.awdlstm import RNNDropout
from torch import nn

INIT_RANGE = 0.1  # fastai's LinearDecoder.initrange, for the weights this layer owns


class AdaptiveSoftmax(nn.Module):
    def __init__(self, vocab_size: int, n_hid: int, cutoffs: Sequence[int], div_value: float = 4.0,
                 output_p: float = 0.1, tie_encoder: nn.Embedding | None = None, bias: bool = True) -> None:
        super().__init__()
        cutoffs = [int(c) for c in cutoffs]
        if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= vocab_size:
            raise ValueError(f"cutoffs must increase within (0, {vocab_size}), got {cutoffs}")
        self.vocab_size, self.cutoffs, self.div_value = vocab_size, cutoffs, div_value
        self.shortlist = cutoffs[0]                                # head words: ids [0, shortlist)
        bounds = cutoffs + [vocab_size]
        self.clusters = list(pairwise(bounds))                     # [(lo, hi)] of each tail cluster
        self.output_dp = RNNDropout(output_p)
        if tie_encoder is not None:
            self.embedding = tie_encoder                           # the encoder's module: head words = its rows
            self.head_words = None
        else:
            self.embedding = None
            self.head_words = nn.Parameter(torch.empty(self.shortlist, n_hid).uniform_(-INIT_RANGE, INIT_RANGE))
        self.cluster_weight = nn.Parameter(torch.empty(len(self.clusters), n_hid).uniform_(-INIT_RANGE, INIT_RANGE))
        self.head_bias = nn.Parameter(torch.zeros(self.shortlist + len(self.clusters))) if bias else None
        self.tail = nn.ModuleList()
        for i, (lo, hi) in enumerate(self.clusters):
            width = max(1, int(n_hid // div_value ** (i + 1)))
            out = nn.Linear(width, hi - lo, bias=bias)
            out.weight.data.uniform_(-INIT_RANGE, INIT_RANGE)
            if bias:
                out.bias.data.zero_()
            self.tail.append(nn.Sequential(nn.Linear(n_hid, width, bias=False), out))

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fastai LinearDecoder's outputs with the softmax's input in the place of the logits: (bs, sl, emb) x 3."""
        dp_inp = self.output_dp(input)
        return dp_inp, input, dp_inp

    # -- the distribution -------------------------------------------------------------------------------------

    def _head_log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """(N, emb) -> (N, shortlist + n_clusters) log-probabilities of the head words and of each cluster."""
        words = self.embedding.weight[:self.shortlist] if self.embedding is not None else self.head_words
        logits = F.linear(h, torch.cat([words, self.cluster_weight]), self.head_bias)
        return F.log_softmax(logits.float(), -1)  # in fp32 under bf16 autocast, as the full softmax's loss

    def _full(self, h: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        parts = [head[:, :self.shortlist]]
        for i, tail in enumerate(self.tail):
            parts.append(head[:, self.shortlist + i, None] + F.log_softmax(tail(h).float(), -1))
        return torch.cat(parts, -1)

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """(..., emb) -> (..., vocab): the normalized log-probabilities of every token (each row sums to 1 in p)."""
        flat = h.reshape(-1, h.size(-1))
        return self._full(flat, self._head_log_prob(flat)).view(*h.shape[:-1], self.vocab_size)

    def target_log_prob(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(..., emb), (...) -> (...): log p(target) at every position, computing cluster i only for the positions
        whose target lies in it (the training path; equal to `log_prob(h).gather(target)`)."""
        flat, tgt = h.reshape(-1, h.size(-1)), target.reshape(-1)
        head = self._head_log_prob(flat)                                             # (N, shortlist + k)
        cluster = torch.bucketize(tgt, tgt.new_tensor(self.cutoffs), right=True)    # 0: head, i + 1: cluster i
        head_idx = torch.where(cluster == 0, tgt, self.shortlist + cluster - 1)
        out = head.gather(1, head_idx[:, None]).squeeze(1)                           # (N,)
        for i, (tail, (lo, _)) in enumerate(zip(self.tail, self.clusters)):
            # every cluster runs, on no rows if need be: each parameter gets a gradient at every step (DDP asks it)
            rows = (cluster == i + 1).nonzero().squeeze(1)                           # (n_rows,)
            tail_lp = F.log_softmax(tail(flat.index_select(0, rows)).float(), -1)   # (n_rows, n_i)
            out = out.index_add(0, rows, tail_lp.gather(1, (tgt[rows] - lo)[:, None]).squeeze(1))
        return out.view(target.shape)

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(..., emb) -> (...): the most probable token, `log_prob(h).argmax(-1)` exactly. A tail word's
        log-probability is at most its cluster's, so the tail is only computed where a cluster beats the best
        head word."""
        flat = h.reshape(-1, h.size(-1))
        head = self._head_log_prob(flat)
        best, pred = head[:, :self.shortlist].max(-1)
        need = head[:, self.shortlist:].max(-1).values > best                      # (N,)
        if need.any():
            pred[need] = self._full(flat[need], head[need]).argmax(-1)
        return pred.view(h.shape[:-1])

    def extra_repr(self) -> str:
        sizes = ", ".join(f"{hi - lo} x {t[0].out_features}" for (lo, hi), t in zip(self.clusters, self.tail))
        return (f"head {self.shortlist} words ({'tied to the embedding' if self.embedding is not None else 'untied'})"
                f" + {len(self.clusters)} cluster logits; clusters (words x width): {sizes}")


# ------------------------------------------------------------------------------- the learner's loss and metric


class AdaptiveLoss:
    """The LM learner's loss: mean negative log-likelihood of the targets, from the decoder's output (the softmax's
    input). `activation`/`decodes` are CrossEntropyLossFlat's, for `Learner.get_preds`."""

    def __init__(self, softmax: AdaptiveSoftmax) -> None:
        self.softmax = softmax

    def __call__(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -self.softmax.target_log_prob(h, target).mean()

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        return self.softmax.log_prob(h).exp()

    def decodes(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.argmax(-1)


def adaptive_accuracy(softmax: AdaptiveSoftmax):
    """fastai's `accuracy` (named so in the metrics table) with the adaptive softmax's exact argmax."""
    def accuracy(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (softmax.predict(h) == target).float().mean()

    return accuracy


# ------------------------------------------------------------------------------- state dicts


def is_adaptive_state(state: dict) -> bool:
    """Whether an LM state dict has an adaptive softmax as its output layer (fastai's LinearDecoder has
    `1.decoder.*`)."""
    return "1.cluster_weight" in state


def extend_state(state: dict[str, torch.Tensor], n_total: int) -> dict[str, torch.Tensor]:
    """Grow an adaptive LM state to `n_total` tokens, the new ids appended after the old ones: the embedding as
    `extend_embeds` does (mean row), the last tail cluster by as many output rows (its mean row and mean bias)."""
    from ulmfit.lm.wt103 import extend_embeds

    out = extend_embeds(state, n_total)
    out.pop("1.decoder.weight", None)                 # extend_embeds' full-softmax decoder: not in this model
    if "1.embedding.weight" in state:                 # the tied head: the same tensor as the encoder's
        out["1.embedding.weight"] = out["0.encoder.weight"]
    last = max(int(k.split(".")[2]) for k in state if k.startswith("1.tail."))
    grow = n_total - state["0.encoder.weight"].shape[0]
    for key in (f"1.tail.{last}.1.weight", f"1.tail.{last}.1.bias"):
        if key in state:
            t = state[key]                            # (n_last, width) or (n_last,)
            out[key] = torch.cat([t, t.mean(0, keepdim=True).expand(grow, *t.shape[1:])])
    return out
