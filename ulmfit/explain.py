"""`explain`: which words made a classifier choose its label, per text and across a corpus.

    res = explain_file("models/imdb-clas", "reviews.txt", "report.html")
    # report.html        each text, its words shaded green (toward the predicted label) or red (against it)
    # report.png         the top words of each label (matplotlib)
    # report.words.csv   every word's mean attribution toward each label, with counts
    # report.json        all of it: per-text words and attributions, the word table, the method

    exps = explain_texts(Classifier.load("models/imdb-clas"), ["A gem.", "Two hours I want back."])
    exps[0].label, exps[0].prob, [(w.text, w.attribution) for w in exps[0].words]

Method: integrated gradients (Sundararajan et al., 2017) on the embedding outputs. A token's attribution is
(e - b) . integral over a in [0, 1] of d f(b + a (e - b)) / d e, where e is its embedding, b the baseline (the zero
vector by default) and f the network's probability of the predicted label (temperature-scaled, as the bundle
reports it). The integral is a `steps`-point Gauss-Legendre rule. By completeness the attributions of a text sum
to f(text) - f(baseline text); the difference is the integration error, reported per text.

Why integrated gradients and not the model's own weights: the ULMFiT head has no attention. Its concat pooling
([last, max, mean] of the encoder outputs) says where the max-pool took each feature from, but not whether that
feature speaks for the label or against it, nor how much; a count of max-pool "wins" is not signed and sums to
nothing. Integrated gradients is signed, attributes the whole change of the probability, and satisfies
completeness, so its error is checkable text by text. On the synthetic task of tests/test_explain.py (the label
decided by one word among random filler) the max-pool wins almost never single out the deciding word;
integrated gradients almost always ranks it first, and deleting its top word moves the probability most.

Why zero and not the padding embedding as the baseline (`baseline="pad"` offers it): the classifier never reads
padding (it is masked out of the pooling), and fastai's embedding keeps the padding row at its random
initialisation (its gradient is always zero), so it is an arbitrary point rather than "no word here".

The forward pass here is the classifier's own computation, module by module: fastai's SentenceEncoder reads a text
in seq_len-token chunks and AWD_LSTM / QRNN detach the carried hidden state between chunks. Through that forward
a word would get no credit for its effect on later chunks (the last hidden state the head reads among them), and
the attributions would no longer sum to the change in probability. Here the state is carried with its gradient;
the dropouts are off (eval mode), and the probabilities equal `predict`'s.

Tokens to words: the tokenizer's case and repeat markers (xxmaj, xxup, xxrep N, xxwrep N) are folded into the word
they modify, which is shown as written ("Zebra", "!!!!"), and a sentencepiece word's pieces are summed into the
word. Other special tokens (xxbos, xxfld, ...) are real inputs that can carry attribution: they are shown dimmed
and left out of the word table. A backward classifier reads each text reversed; its attributions are mapped back
to reading order.

The n-gram model a bundle may carry (`--ngram-weight`) takes part in choosing the label and its probability, as in
`predict`; the attributions explain the neural network's probability of that label, which the report shows too.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ulmfit import __version__
from ulmfit._io import atomic_write_bytes, atomic_write_text, progress
from ulmfit._outputs import check_output_file
from ulmfit.classify.model import encoder_module, pad_batch
from ulmfit.classify.ngram import mix
from ulmfit.classify.predict import (
    check_max_chars,
    clip_texts,
    clipped_message,
    input_format,
    iter_texts,
)
from ulmfit.errors import UlmfitError
from ulmfit.tokenize.spec import BOS, EOS, FLD, PAD, TK_MAJ, TK_REP, TK_UP, TK_WREP, UNK

STEPS = 32  # Gauss-Legendre points of the path integral; every report shows the completeness error they leave
BASELINES = ("zero", "pad")
MAX_TEXTS = 50  # each text costs about `steps` forward and backward passes of the network
MAX_CHARS = 10_000  # a report is read by a person: a few pages of text per document
TOP_K = 15  # words per label in the page and the PNG
MIN_COUNT = 2  # a word must occur this often (in texts predicted as the label) to rank in the top words
# Path points run through the network together while (points x tokens) stays under this: a long text is split
# over several passes, so memory is bounded by the budget, not by --steps x the text's length.
TOKENS_PER_PASS = 1 << 15
GENERATOR = "ulmfit explain"  # written into every output file, so an earlier report is recognised and replaced
CSV_HEADER = ["label", "word", "mean_attribution", "count", "texts"]
WORD_START = "\u2581"  # sentencepiece's word-start mark
_MARKERS = {BOS, EOS, FLD, PAD}


@dataclass
class Word:
    """One unit shown to the user: a word (with its case/repeat markers and sentencepiece pieces), a marker such as
    xxbos, or a line break."""

    text: str
    attribution: float  # toward the predicted label, in probability units
    kind: str = "word"  # "word" | "marker" | "space"
    unknown: bool = False  # out of the vocabulary: the network read xxunk


@dataclass
class Explanation:
    index: int  # row of the input
    label: str  # the predicted label (what `predict` says)
    prob: float  # its probability (n-gram model mixed in, as `predict` reports it)
    network_prob: float  # the neural network's probability of that label: f(text), what is attributed
    baseline_prob: float  # f(baseline): the network's probability of the label with every embedding at the baseline
    words: list[Word]
    tokens: list[str] = field(repr=False)  # the tokenizer's tokens, reading order
    token_attributions: list[float] = field(repr=False)  # one per token, reading order

    @property
    def total(self) -> float:
        return float(sum(self.token_attributions))

    @property
    def error(self) -> float:
        """Completeness error: |sum of attributions - (f(text) - f(baseline))|, in probability units."""
        return abs(self.total - (self.network_prob - self.baseline_prob))


@dataclass
class ExplainResult:
    explanations: list[Explanation]
    words: list[dict[str, Any]]  # the corpus word table (CSV rows)
    outputs: dict[str, str]  # "html", "png", "csv", "json" -> path
    more: bool  # the input had more texts than max_texts
    seconds: float

    @property
    def max_error(self) -> float:
        return max((e.error for e in self.explanations), default=0.0)


# ---------------------------------------------------------------------------------- the network from embeddings

def forward_embeds(model, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (B, n_class) of a classifier (SentenceEncoder + PoolingLinearClassifier) for input embeddings
    emb (B, n, emb_sz), n a multiple of seq_len, `mask` (B, n) True at padding: `model(ids)`'s computation with the
    recurrent state carried across chunks with its gradient. The model must be in eval mode (dropouts are skipped)."""
    from fastai.text.models.core import masked_concat_pool

    sentence, head = model[0], model[1]
    enc = encoder_module(model)
    bs, n, _ = emb.shape
    state = [_zero_state(rnn, bs, emb) for rnn in enc.rnns]
    outs = []
    for i in range(0, n, sentence.bptt):
        x = emb[:, i:i + sentence.bptt]                       # (B, seq_len, emb_sz)
        for layer, rnn in enumerate(enc.rnns):
            x, state[layer] = _run_layer(rnn, x, state[layer])
        if sentence.max_len is None or n - i <= sentence.max_len:  # SentenceEncoder pools the last max_len only
            outs.append(x)
    out = torch.cat(outs, dim=1)                              # (B, kept, emb_sz)
    return head.layers(masked_concat_pool(out, mask[:, -out.shape[1]:], head.bptt))


def _zero_state(rnn, bs: int, like: torch.Tensor):
    from ulmfit.lm.qrnn import QRNNLayer

    if isinstance(rnn, QRNNLayer):
        return rnn.zero_state(bs, like)
    lstm = getattr(rnn, "module", rnn)  # fastai's WeightDropout wraps the LSTM of a model still set up to train
    h = like.new_zeros(2 if lstm.bidirectional else 1, bs, lstm.hidden_size)
    return h, h.clone()


def _run_layer(rnn, x: torch.Tensor, state):
    from ulmfit.lm.qrnn import QRNNLayer

    if isinstance(rnn, QRNNLayer):  # time-major inside
        h, state = rnn(x.transpose(0, 1), state)
        return h.transpose(0, 1), state
    return rnn(x, state)  # a batch-first LSTM


# ------------------------------------------------------------------------------------- integrated gradients

def _probs(model, emb: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(forward_embeds(model, emb, mask).float() / temperature, dim=-1)


def integrated_gradients(model, emb: torch.Tensor, base: torch.Tensor, mask: torch.Tensor, target: int, *,
                         temperature: float = 1.0, steps: int = STEPS) -> tuple[np.ndarray, float, float]:
    """(attribution per position (n,), f(emb), f(base)) for one text: emb and base (1, n, emb_sz), equal at its
    padding, f the probability of class `target`."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]; mapped to [0, 1] below
    alphas = torch.tensor((nodes + 1) / 2, dtype=emb.dtype, device=emb.device)
    weights = torch.tensor(weights / 2, dtype=emb.dtype, device=emb.device)
    diff = emb - base                                         # (1, n, emb_sz)
    grad = torch.zeros_like(emb[0])                           # (n, emb_sz): the weighted sum of path gradients
    per_pass = max(1, TOKENS_PER_PASS // emb.shape[1])
    # cuDNN computes an RNN's backward pass only in training mode; the native kernels have no such limit.
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        for s in range(0, steps, per_pass):
            a, w = alphas[s:s + per_pass], weights[s:s + per_pass]
            path = (base + a[:, None, None] * diff).requires_grad_()  # (k, n, emb_sz)
            p = _probs(model, path, mask.expand(len(a), -1), temperature)[:, target]
            (g,) = torch.autograd.grad(p.sum(), path)
            grad += (w[:, None, None] * g).sum(0)
    with torch.no_grad():
        f_x = float(_probs(model, emb, mask, temperature)[0, target])
        f_b = float(_probs(model, base, mask, temperature)[0, target])
    return (grad * diff[0]).sum(-1).cpu().numpy(), f_x, f_b


def explain_texts(clf, texts: list[str], *, steps: int = STEPS, baseline: str = "zero") -> list[Explanation]:
    """One Explanation per text: the label `clf` predicts and each word's attribution toward it. `clf`: a
    `Classifier` loaded without int8 quantization."""
    check_method(steps, baseline)
    kind = getattr(getattr(clf, "task", None), "kind", "single-label")  # Classifier.task: bundles since multi-label
    if kind != "single-label":
        raise UlmfitError(f"explain handles single-label classifiers; {clf.path or 'this model'} is {kind}",
                          hint="attributions toward each of several labels or a number are not implemented yet")
    if clf.quantized:
        raise UlmfitError("an int8-quantized classifier cannot be explained (it has no gradients)",
                          hint="load it without --int8")
    model = clf.model.eval()  # dropouts off: the network that predicts is the one explained
    enc, vocab = encoder_module(model), clf.vocab
    seq_len = model[0].bptt
    sentencepiece = clf.tokenizer.spec.kind == "sentencepiece"
    token_lists = list(clf.tokenizer.tokenize(texts))
    ngram = clf.ngram.predict_proba(texts) if clf.ngram is not None and clf.ngram_weight > 0 else None
    out = []
    for i, tokens in progress(enumerate(token_lists), total=len(token_lists), desc="explain", unit="text"):
        ids = np.asarray(vocab.encode(tokens), dtype=np.int64)  # as Classifier.numericalize
        if not len(ids):  # as predict_ids: an empty document still gets one token to pool over
            tokens, ids = [BOS], np.array([vocab.bos_id], dtype=np.int64)
        read = ids[::-1].copy() if clf.backwards else ids
        x = torch.from_numpy(pad_batch([read], vocab.pad_id, seq_len)).to(clf.device)  # (1, n), text first
        mask = x == vocab.pad_id
        with torch.no_grad():
            emb = enc.encoder(x)                              # (1, n, emb_sz)
            fill = torch.zeros_like(emb[0, 0]) if baseline == "zero" else enc.encoder.weight[vocab.pad_id]
            base = torch.where(mask[..., None], emb, fill)    # padding stays padding on the whole path
            network = _probs(model, emb, mask, clf.temperature)[0].cpu().numpy()
        probs = mix(network[None], None if ngram is None else ngram[i:i + 1], clf.ngram_weight)[0]
        target = int(np.argmax(probs))
        attr, f_x, f_b = integrated_gradients(model, emb, base, mask, target, temperature=clf.temperature,
                                              steps=steps)
        attr = attr[:len(ids)]
        if clf.backwards:
            attr = attr[::-1]  # back to reading order
        attr = [float(a) for a in attr]
        out.append(Explanation(index=i, label=clf.labels[target], prob=float(probs[target]),
                               network_prob=f_x, baseline_prob=f_b,
                               words=words_of(tokens, attr, ids == vocab.unk_id, sentencepiece=sentencepiece),
                               tokens=list(tokens), token_attributions=attr))
    return out


def check_method(steps: int, baseline: str) -> None:
    if not 1 <= steps <= 1000:
        raise UlmfitError(f"--steps must be between 1 and 1000, not {steps}", hint=f"the default is {STEPS}")
    if baseline not in BASELINES:
        raise UlmfitError(f"unknown baseline {baseline!r}", hint=f"use one of: {', '.join(BASELINES)}")


# ------------------------------------------------------------------------------------------- tokens to words

def words_of(tokens: list[str], attr: list[float], unknown: np.ndarray, *, sentencepiece: bool = False) -> list[Word]:
    """The units shown to the user, their attributions summed from the tokens they are made of (see the module
    docstring). `unknown[i]`: token i is out of the vocabulary."""
    words: list[Word] = []
    case, pending = None, 0.0  # a case marker waiting for its word, and the attribution it carries
    open_word = False  # may the next sentencepiece piece continue the last word?
    i, n = 0, len(tokens)
    while i < n:
        t, a = tokens[i], attr[i]
        if t in (TK_MAJ, TK_UP):
            case, pending = t, pending + a
            i += 1
            continue
        if t in (TK_REP, TK_WREP) and i + 2 < n and tokens[i + 1].isdigit():
            count, what = int(tokens[i + 1]), tokens[i + 2].lstrip(WORD_START)
            shown = _case(what, case)
            text = shown * count if t == TK_REP else " ".join([shown] + [what] * (count - 1))
            words.append(Word(text, pending + a + attr[i + 1] + attr[i + 2], unknown=bool(unknown[i + 2])))
            case, pending, open_word = None, 0.0, False
            i += 3
            continue
        piece = t.lstrip(WORD_START) if sentencepiece else t
        if t in _MARKERS:
            words.append(Word(t, a, kind="marker"))
            open_word = False
        elif not piece.strip():
            words.append(Word(t, a, kind="space"))
            open_word = False
        elif sentencepiece and open_word and case is None and not t.startswith(WORD_START):
            words[-1].text += piece
            words[-1].attribution += a
            words[-1].unknown |= bool(unknown[i])
        else:
            words.append(Word(_case(piece, case), pending + a, unknown=bool(unknown[i])))
            case, pending, open_word = None, 0.0, True
        i += 1
    if case is not None:  # a marker at the very end (a cut text): keep its attribution visible
        words.append(Word(case, pending, kind="marker"))
    return words


def _case(word: str, case: str | None) -> str:
    if case == TK_UP:
        return word.upper()
    if case == TK_MAJ:
        return word[:1].upper() + word[1:]
    return word


# --------------------------------------------------------------------------------------- the corpus word table

def word_table(explanations: list[Explanation], labels: list[str]) -> list[dict[str, Any]]:
    """For each label, every word of the texts predicted as that label: its mean attribution toward the label,
    how often it occurs and in how many texts. Words are compared in lower case, and words out of the vocabulary
    count as "xxunk": the network cannot tell them apart. Rows grouped by label (in `labels` order), best mean
    first."""
    seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    docs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for e in explanations:
        for w in e.words:
            if w.kind == "word":
                key = (e.label, UNK if w.unknown else w.text.lower())
                seen[key].append(w.attribution)
                docs[key].add(e.index)
    rows = [{"label": lab, "word": word, "mean_attribution": float(np.mean(v)), "count": len(v),
             "texts": len(docs[(lab, word)])} for (lab, word), v in seen.items()]
    order = {lab: i for i, lab in enumerate(labels)}
    return sorted(rows, key=lambda r: (order[r["label"]], -r["mean_attribution"], r["word"]))


def top_words(rows: list[dict[str, Any]], label: str, k: int = TOP_K, min_count: int = MIN_COUNT) -> list[dict]:
    return [r for r in rows if r["label"] == label and r["count"] >= min_count][:k]


# ------------------------------------------------------------------------------------------------ the command

def explain_file(bundle: str | Path, input: str | Path, out: str | Path, *, text_col: str | None = None,
                 in_fmt: str | None = None, max_texts: int = MAX_TEXTS, max_chars: int = MAX_CHARS,
                 steps: int = STEPS, baseline: str = "zero", top_k: int = TOP_K, min_count: int = MIN_COUNT,
                 ngram_weight: float | None = None, device: str | None = None,
                 overwrite: bool = False) -> ExplainResult:
    """Explain the classifier `bundle`'s predictions for the first `max_texts` texts of `input` (a file read as
    `predict` reads it, or "-" for stdin): write the report `out` (.html) and, next to it, its .png, .words.csv
    and .json. Everything is checked before the model is loaded; an existing output that explain did not write
    is refused unless `overwrite`."""
    from ulmfit.classify.classifier import Classifier
    from ulmfit.explain_report import (
        csv_text,
        is_ours,
        json_text,
        output_paths,
        render_html,
        render_png,
    )

    t0 = time.time()
    input = str(input)
    fmt = input_format(input, in_fmt)
    check_method(steps, baseline)
    check_max_chars(max_chars)
    for name, value, low in (("--max-texts", max_texts, 1), ("--top", top_k, 1), ("--min-count", min_count, 1)):
        if value < low:
            raise UlmfitError(f"{name} must be at least {low}, not {value}")
    paths = output_paths(out)
    for p in paths.values():
        check_output_file(p, option="--out", ours=is_ours, overwrite=overwrite)
    if input != "-" and not Path(input).is_file():
        raise UlmfitError(f"no such input file: {input}", hint="check the path, or pass --input - for stdin")
    texts, more = _read_texts(input, fmt, text_col, max_texts)
    if not texts:
        raise UlmfitError(f"{input} has no texts to explain", hint="check the file, or --input-format")
    texts, cut = clip_texts(texts, max_chars)
    clf = Classifier.load(bundle, device=device, ngram_weight=ngram_weight)
    exps = explain_texts(clf, texts, steps=steps, baseline=baseline)
    rows = word_table(exps, clf.labels)
    png = render_png(rows, clf.labels, k=top_k, min_count=min_count)
    name = _bundle_name(clf.path or Path(bundle))
    method = {"name": "integrated gradients", "steps": steps, "baseline": baseline, "target": "probability",
              "temperature": clf.temperature, "ngram_weight": clf.ngram_weight, "direction": clf.direction,
              "bundle": name, "max_chars": max_chars, "version": __version__}
    page = render_html(exps, rows, clf.labels, png, bundle=name, steps=steps, baseline=baseline,
                       temperature=clf.temperature, ngram_weight=clf.ngram_weight, k=top_k, min_count=min_count,
                       more=more)
    atomic_write_bytes(paths["png"], png)
    atomic_write_text(paths["csv"], csv_text(rows))
    atomic_write_text(paths["json"], json_text(exps, rows, method))
    atomic_write_text(paths["html"], page)  # last: the report appears when everything it refers to exists
    if cut:
        print(f"warning: {clipped_message(cut, max_chars).replace('classified', 'explained')}", file=sys.stderr)
    return ExplainResult(explanations=exps, words=rows, outputs={k: str(v) for k, v in paths.items()}, more=more,
                         seconds=time.time() - t0)


def _bundle_name(path: Path) -> str:
    """"imdb-clas", or "run/model-best" for a bundle inside a `ulmfit classify` run."""
    return f"{path.parent.name}/{path.name}" if path.name in ("model-best", "model-last") else path.name


def _read_texts(input: str, fmt: str, text_col: str | None, max_texts: int) -> tuple[list[str], bool]:
    """The first `max_texts` texts, and whether there are more. Bytes that are not UTF-8 become U+FFFD."""
    name = "stdin" if input == "-" else Path(input).name
    if input == "-":
        rows = iter_texts(sys.stdin, fmt, text_col=text_col, name=name)
        texts = list(itertools.islice(rows, max_texts + 1))
    else:
        with open(input, encoding="utf-8-sig", errors="replace", newline="") as f:
            texts = list(itertools.islice(iter_texts(f, fmt, text_col=text_col, name=name), max_texts + 1))
    return texts[:max_texts], len(texts) > max_texts
