"""Text generation with an LM (AWD-LSTM or QRNN): feed the prompt once, then one token per step, carrying the state.

fastai's `LMLearner.predict` re-runs the whole text through the model for every new word (quadratic in the
length); here each step costs one LSTM step plus one softmax over the vocabulary (linear), and S samples run
as one batch. Only the last position of the prompt is decoded, so a long prompt costs no extra softmaxes.

Sampling: logits / temperature → top-k → top-p (nucleus) → multinomial from a seeded generator; temperature 0
(or greedy) is argmax. The logits are the full decoder's, or an adaptive softmax's normalized log-probabilities
over the whole vocabulary (`ulmfit.lm.model.next_token_scores`): softmax(log p / T) is the same tempered
distribution. Special tokens that are not text (xxpad, xxbos, xxeos, xxfld) are never produced, xxunk
only when asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ulmfit.errors import UlmfitError

if TYPE_CHECKING:
    import torch

NON_TEXT = ("xxpad", "xxbos", "xxeos", "xxfld", "xxfake")  # xxfake: vocab padding
UNK = "xxunk"
MARKERS = ("xxmaj", "xxup")        # rules tokenizer: modify the next word
REPEATS = ("xxrep", "xxwrep")      # rules tokenizer: "xxrep 4 !" — count, then the repeated token
SP_WORD_START = "\u2581"           # sentencepiece: a piece starting a new word
_SPECIALS = {"xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj", "xxfake"}


@dataclass
class SamplingOptions:
    words: int = 50
    temperature: float = 1.0
    top_k: int = 0            # 0 = off
    top_p: float = 1.0        # 1 = off
    samples: int = 1
    seed: int | None = None
    greedy: bool = False
    allow_unk: bool = False

    def validate(self) -> None:
        if self.words < 1:
            raise UlmfitError(f"--words must be at least 1 (got {self.words})")
        if self.samples < 1:
            raise UlmfitError(f"--samples must be at least 1 (got {self.samples})")
        if not self.temperature >= 0:
            raise UlmfitError(f"--temperature must be >= 0 (got {self.temperature})",
                              hint="0 means greedy; 1 samples from the model's distribution")
        if not (0.0 < self.top_p <= 1.0):
            raise UlmfitError(f"--top-p must be in (0, 1] (got {self.top_p})", hint="1 turns nucleus sampling off")
        if self.top_k < 0:
            raise UlmfitError(f"--top-k must be >= 0 (got {self.top_k})", hint="0 turns top-k off")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


class WordCounter:
    """Counts words in a generated token stream so that --words N means N words of output text.

    A marker (xxmaj, xxup) belongs to the word it modifies and "xxrep n c" / "xxwrep n w" is one word.
    rules tokenizer: every other token is a word. sentencepiece: a word starts at a piece beginning with "▁"
    (a bare "▁" starts one only if a piece without "▁" follows), or after a special token; the first pieces
    without "▁" continue the prompt's last word. `starts_word(tok)` says whether `tok` would begin a new
    word; `push(tok)` accepts it.
    """

    def __init__(self, kind: str) -> None:
        self.sp = kind == "sentencepiece"
        self.words = 0
        self._attached = 0      # tokens still belonging to the current word (after a marker / in a repeat)
        self._pending = False   # sentencepiece: a bare "▁" was seen
        self._open = True       # sentencepiece: a piece without "▁" continues the previous word

    def _bare(self, tok: str) -> bool:
        return self.sp and tok not in _SPECIALS and not tok.lstrip(SP_WORD_START)

    def starts_word(self, tok: str) -> bool:
        if self._attached:
            return False
        if tok in _SPECIALS or not self.sp:
            return True
        if self._bare(tok):
            return False
        return tok.startswith(SP_WORD_START) or self._pending or not self._open

    def push(self, tok: str) -> None:
        if self.starts_word(tok):
            self.words += 1
        bare = self._bare(tok)
        if self._attached and not bare:
            self._attached -= 1
        if tok in MARKERS:
            self._attached = 1
        elif tok in REPEATS:
            self._attached = 2
        if self.sp:
            self._pending = bare
            self._open = tok not in _SPECIALS


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """(S, V) logits with everything outside top-k / the top-p nucleus set to -inf."""
    import torch

    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]                # (S, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)    # (S, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already cover top_p; the first one always stays
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(model: torch.nn.Module, prompt_ids: list[int], itos: list[str], opts: SamplingOptions,
                  tokenizer_kind: str = "rules", banned: Iterable[int] = ()) -> list[list[str]]:
    """Generate opts.samples continuations of `prompt_ids`; returns the generated tokens of each sample.

    The model is fastai's SequentialRNN(AWD_LSTM or QRNN, LinearDecoder or AdaptiveSoftmax) and is left in eval
    mode with its state reset; both encoders carry their state from one call to the next, so each new token costs
    one step.
    """
    import torch

    from ulmfit.lm.model import next_token_scores

    encoder = model[0]
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu")
    gen.manual_seed(opts.seed if opts.seed is not None else torch.seed())
    banned_mask = torch.zeros(len(itos), dtype=torch.bool)
    banned_mask[list(banned)] = True
    banned_mask = banned_mask.to(device)
    S = opts.samples

    model.eval()
    # On CPU, oneDNN's LSTM sets up its primitive on every call: ~10x slower than ATen's kernel for the one-step,
    # small-batch calls of generation (it wins for training-sized batches, so only generation turns it off).
    no_onednn = _onednn_off() if device.type == "cpu" else contextlib.nullcontext()
    with torch.inference_mode(), no_onednn:
        model.reset()
        x = torch.tensor([prompt_ids] * S, dtype=torch.long, device=device)   # (S, L): the prompt, fed once
        counters = [WordCounter(tokenizer_kind) for _ in range(S)]
        out: list[list[str]] = [[] for _ in range(S)]
        done = [False] * S
        # generous cap on steps (markers and sub-word pieces are tokens too); normally `done` ends the loop
        for _ in range(opts.words * 8 + 16):
            h = encoder(x)[:, -1]                                 # (S, emb): last position only
            logits = next_token_scores(model, h).float()          # (S, V)
            logits = logits.masked_fill(banned_mask, float("-inf"))
            if opts.is_greedy:
                nxt = logits.argmax(-1)                           # (S,)
            else:
                logits = _filter_logits(logits / opts.temperature, opts.top_k, opts.top_p)
                probs = torch.softmax(logits, -1).cpu()
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            nxt_list = nxt.tolist()
            for s, i in enumerate(nxt_list):
                if done[s]:
                    continue
                tok = itos[i]
                c = counters[s]
                if c.starts_word(tok) and c.words >= opts.words:
                    done[s] = True                                # the N+1-th word would begin: stop here
                    continue
                c.push(tok)
                out[s].append(tok)
            if all(done):
                break
            x = nxt.view(S, 1).to(device)                         # (S, 1): one step, hidden state carried
        model.reset()
    return out


@contextlib.contextmanager
def _onednn_off():
    """torch.backends.mkldnn.flags(enabled=False), without the TF32 warning torch 2.13 prints on every switch."""
    import warnings

    import torch

    ctx = torch.backends.mkldnn.flags(enabled=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx.__enter__()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx.__exit__(None, None, None)


def banned_ids(itos: list[str], allow_unk: bool = False) -> list[int]:
    """Ids never generated: non-text specials (every copy: the vocab pads with several xxfake) and xxunk."""
    names = set(NON_TEXT) | (set() if allow_unk else {UNK})
    return [i for i, t in enumerate(itos) if t in names]
