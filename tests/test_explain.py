"""`ulmfit explain`: integrated gradients find the word that decides a synthetic task, in every chunk and either
reading direction; the network explained is the one that predicts; tokens fold into the words shown; the report is
self-contained and escaped, and its outputs are checked before any work."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ulmfit.classify import Classifier, resolve_config, train_classifier
from ulmfit.cli.main import main
from ulmfit.data import Corpus
from ulmfit.explain import Explanation, Word, explain_texts, word_table, words_of

FILLER = ("the a this that movie film plot story acting cast scene ending director actor script music and of to in "
          "it was is with for on at by camera light night city house car dog road").split()
DECIDING = {"pos": "zebra", "neg": "quokka"}


def zq_text(rng: random.Random, label: str, lo: int = 6, hi: int = 60, at: int | None = None) -> str:
    """Random filler words with the label's deciding word inserted (at position `at`, or anywhere)."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(lo, hi))]
    words.insert(rng.randint(0, len(words)) if at is None else at, DECIDING[label])
    return " ".join(words)


def zq_texts(n: int, seed: int, **kw) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    labels = ["pos" if i % 2 else "neg" for i in range(n)]
    return [zq_text(rng, y, **kw) for y in labels], labels


def train_zq(out: Path, backwards: bool = False) -> Path:
    """A tiny classifier trained from scratch on the zebra/quokka task (~4 s on one core), no n-gram model."""
    texts, labels = zq_texts(600, seed=0)
    splits = ["valid" if i % 5 == 0 else "train" for i in range(len(texts))]
    cfg = resolve_config("tiny", overrides={"seed": 0, "from_scratch": True, "ngram": False, "backwards": backwards})
    train_classifier(Corpus(texts, labels, splits, "zebra-quokka"), lm=None, out=out, config=cfg, log=lambda s: None)
    return out / "model-best"


@pytest.fixture(scope="module")
def fwd(tmp_path_factory) -> Path:
    return train_zq(tmp_path_factory.mktemp("zq") / "fwd")


@pytest.fixture(scope="module")
def fwd_clf(fwd) -> Classifier:
    return Classifier.load(fwd, device="cpu")


def _deciding_first(e: Explanation) -> bool:
    best = max((w for w in e.words if w.kind == "word"), key=lambda w: w.attribution)
    return best.text in DECIDING.values()


def test_the_deciding_word_ranks_first_and_deleting_it_matters_most(fwd_clf) -> None:
    texts, labels = zq_texts(30, seed=11)
    exps = explain_texts(fwd_clf, texts)
    assert np.mean([e.label == y for e, y in zip(exps, labels)]) >= 0.9  # the model learned the task
    assert np.mean([_deciding_first(e) for e in exps]) >= 0.8
    rng = random.Random(0)
    top_drop, random_drop = [], []
    for t, e in zip(texts, exps):
        words = t.split()  # lower-case filler: one token per word, after xxbos
        scores = [w.attribution for w in e.words if w.kind == "word"]
        assert len(scores) == len(words)
        c = fwd_clf.labels.index(e.label)
        top, other = int(np.argmax(scores)), rng.randrange(len(words))
        cut = [" ".join(words[:i] + words[i + 1:]) for i in (top, other)]
        p_top, p_other = fwd_clf.predict_proba(cut)[:, c]
        top_drop.append(e.prob - p_top)
        random_drop.append(e.prob - p_other)
    assert np.mean(np.array(top_drop) > np.array(random_drop)) >= 0.8
    assert np.mean(top_drop) > np.mean(random_drop) + 0.2, (np.mean(top_drop), np.mean(random_drop))


def test_gradients_cross_chunk_boundaries(fwd_clf) -> None:
    # 70-90 tokens are 5-6 chunks of the tiny preset's 16; the deciding word sits in the first. Were the state
    # detached between chunks (as AWD_LSTM does), the attributions would miss p(text) - p(baseline) by ~0.1.
    assert fwd_clf.config.seq_len == 16
    texts, _ = zq_texts(8, seed=12, lo=70, hi=90, at=3)
    exps = explain_texts(fwd_clf, texts)
    assert max(e.error for e in exps) < 0.02
    assert min(max(abs(a) for a in e.token_attributions) for e in exps) > 0.05  # small against the attributions
    assert np.mean([_deciding_first(e) for e in exps]) >= 0.75


def test_a_backward_classifier_is_explained_in_reading_order(tmp_path) -> None:
    clf = Classifier.load(train_zq(tmp_path / "bwd", backwards=True), device="cpu")
    assert clf.backwards
    texts, _ = zq_texts(12, seed=13)
    exps = explain_texts(clf, texts)
    for t, e in zip(texts, exps):
        assert e.tokens[0] == "xxbos" and [w.text for w in e.words[1:]] == t.split()  # reading order
    assert np.mean([_deciding_first(e) for e in exps]) >= 0.75
    assert max(e.error for e in exps) < 0.02


def _random_bundle(path: Path, arch: dict, backwards: bool = False) -> Path:
    """A classifier bundle with a seeded random network of the given encoder: enough to compare computations."""
    from test_predict import WORDS

    from ulmfit.classify.artifact import bundle_config, save_classifier
    from ulmfit.classify.model import build_model
    from ulmfit.tokenize import TextTokenizer, TokenizerSpec, Vocab, make_itos

    tok = TextTokenizer(TokenizerSpec(kind="rules", min_freq=1))
    vocab = Vocab(make_itos({w: 5 for w in WORDS}, min_freq=1))
    cfg = resolve_config("tiny", overrides={"backwards": backwards, "seed": 0})
    torch.manual_seed(0)
    model = build_model(len(vocab.itos), 3, arch, cfg, pad_idx=vocab.pad_id)
    labels = ["a", "b", "c"]
    save_classifier(path, config=bundle_config(cfg, arch, vocab, tok, labels), meta={"labels": labels}, vocab=vocab,
                    tokenizer=tok, state=model.state_dict())
    return path


@pytest.mark.parametrize("arch,backwards", [
    (dict(emb_sz=16, n_hid=24, n_layers=2), True),
    (dict(name="qrnn", emb_sz=16, n_hid=24, n_layers=2), False),
])
def test_the_network_explained_is_the_one_that_predicts(arch, backwards, tmp_path) -> None:
    from test_predict import make_texts

    clf = Classifier.load(_random_bundle(tmp_path / "m", arch, backwards), device="cpu")
    texts = make_texts(6, seed=3) + [" ".join(make_texts(4, seed=4))]  # the last: several chunks
    exps = explain_texts(clf, texts, steps=8)
    probs = clf.predict_proba(texts)
    for e, p in zip(exps, probs):
        c = clf.labels.index(e.label)
        assert c == int(np.argmax(p))
        assert e.prob == pytest.approx(float(p[c]), abs=1e-5)
        assert e.network_prob == pytest.approx(float(p[c]), abs=1e-5)
        assert e.error < 0.01


def test_tokens_fold_into_the_words_shown() -> None:
    tokens = ["xxbos", "xxmaj", "the", "xxup", "big", "xxrep", "4", "!", "\n\n", "zebra", "xxunk", "xxfld"]
    attr = [0.1 * (i + 1) for i in range(len(tokens))]
    unknown = np.array([t == "zebra" for t in tokens])
    words = words_of(tokens, attr, unknown)
    assert [(w.text, w.kind) for w in words] == [
        ("xxbos", "marker"), ("The", "word"), ("BIG", "word"), ("!!!!", "word"), ("\n\n", "space"),
        ("zebra", "word"), ("xxunk", "word"), ("xxfld", "marker")]
    assert [round(w.attribution, 6) for w in words][:4] == [0.1, 0.5, 0.9, 2.1]  # markers' attributions summed in
    assert sum(w.attribution for w in words) == pytest.approx(sum(attr))
    assert [w.unknown for w in words] == [False] * 5 + [True, False, False]
    pieces = ["xxbos", "xxmaj", "\u2581ze", "bra", "\u2581run", "s", "\u2581."]
    sp = words_of(pieces, [1.0] * len(pieces), np.zeros(len(pieces), bool), sentencepiece=True)
    assert [(w.text, w.attribution) for w in sp] == [("xxbos", 1), ("Zebra", 3), ("runs", 2), (".", 1)]


def test_the_word_table_averages_per_label_and_pools_unknown_words() -> None:
    def exp(i: int, label: str, words: list[Word]) -> Explanation:
        return Explanation(index=i, label=label, prob=0.9, network_prob=0.9, baseline_prob=0.5, words=words,
                           tokens=[], token_attributions=[])

    exps = [exp(0, "pos", [Word("xxbos", 0.5, "marker"), Word("Zebra", 0.4), Word("the", -0.1),
                           Word("okapi", 0.2, unknown=True)]),
            exp(1, "pos", [Word("zebra", 0.2), Word("zebra", 0.3), Word("gnu", 0.1, unknown=True)]),
            exp(2, "neg", [Word("the", 0.05)])]
    rows = word_table(exps, ["neg", "pos"])
    got = [(r["label"], r["word"], round(r["mean_attribution"], 6), r["count"], r["texts"]) for r in rows]
    assert got == [("neg", "the", 0.05, 1, 1), ("pos", "zebra", 0.3, 3, 2), ("pos", "xxunk", 0.15, 2, 2),
                   ("pos", "the", -0.1, 1, 1)]


HOSTILE = 'The zebra <script>document.title="pwned"</script> & <img src=x onerror="alert(1)"> "quoted"'


def test_cli_writes_a_self_contained_escaped_report(fwd, tmp_path, capsys) -> None:
    src = tmp_path / "in.csv"
    texts, _ = zq_texts(5, seed=14)
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], *([i, t] for i, t in enumerate([HOSTILE] + texts))])
    out = tmp_path / "r" / "report.html"
    argv = ["explain", str(fwd), "--input", str(src), "--out", str(out), "--max-texts", "4", "--steps", "16",
            "--device", "cpu"]
    assert main(argv) == 0
    assert "4 texts (the first 4" in capsys.readouterr().err
    page = out.read_text()
    # the text's markup arrived as text: no script at all, one image (the chart)
    assert not re.search(r"<script\b", page, re.IGNORECASE) and len(re.findall(r"<img\b", page, re.IGNORECASE)) == 1
    assert "&lt;" in page and "&gt;" in page and "&amp;" in page and "&quot;" in page
    assert "http://" not in page and "https://" not in page and 'src="data:image/png;base64,' in page
    assert "Content-Security-Policy" in page and "zebra" in page
    assert (tmp_path / "r" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "r" / "report.words.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "word", "mean_attribution", "count", "texts"]
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["method"]["steps"] == 16 and len(data["texts"]) == 4 and data["words"]
    first = data["texts"][0]
    assert sum(first["token_attributions"]) == pytest.approx(first["network_prob"] - first["baseline_prob"],
                                                              abs=first["error"] + 1e-6)
    assert main(argv) == 0  # its own earlier report is replaced
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "report.html", "report.json", "report.png", "report.words.csv"]  # nothing staged is left behind


def test_bad_options_and_foreign_outputs_fail_before_any_work(fwd, tmp_path, capsys) -> None:
    src = tmp_path / "in.txt"
    src.write_text("the zebra film\n")
    foreign = tmp_path / "report.json"
    foreign.write_text('{"mine": true}\n')
    for extra, msg in ((["--out", str(tmp_path / "report.html")], "already exists"),
                       (["--out", str(tmp_path / "report.txt")], "not an .html file"),
                       (["--out", str(tmp_path / "x.html"), "--steps", "0"], "--steps must be"),
                       (["--out", str(tmp_path / "x.html"), "--baseline", "mean"], "unknown baseline"),
                       (["--out", str(tmp_path / "x.html"), "--max-texts", "0"], "--max-texts must be")):
        assert main(["explain", str(fwd), "--input", str(src), *extra]) == 1
        assert msg in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "report.json"]
    assert main(["explain", str(fwd), "--input", str(src), "--out", str(tmp_path / "report.html"), "--overwrite",
                 "--steps", "4"]) == 0


def test_help_defaults_match_the_library() -> None:
    import ulmfit.cli.explain as cli
    import ulmfit.explain as lib

    assert (cli.STEPS, cli.MAX_TEXTS, cli.MAX_CHARS, cli.TOP_K, cli.MIN_COUNT) == (
        lib.STEPS, lib.MAX_TEXTS, lib.MAX_CHARS, lib.TOP_K, lib.MIN_COUNT)


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no Chromium")
def test_no_text_runs_in_a_real_browser(fwd, tmp_path) -> None:
    src = tmp_path / "in.txt"
    src.write_text(HOSTILE + "\n")
    out = tmp_path / "report.html"
    assert main(["explain", str(fwd), "--input", str(src), "--out", str(out), "--steps", "4"]) == 0
    script = Path(__file__).parents[1] / "scripts" / "check_explain_browser.py"
    res = subprocess.run([sys.executable, str(script), str(out), "--screenshot", str(tmp_path / "shot.png"),
                          "--height", "800"], capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(json.loads(res.stdout)["checks"].values())
