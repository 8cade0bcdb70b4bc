"""LM training through the CLI: pretrain learns, artifacts are complete, lm-finetune, directions, bad input."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections import Counter

import pytest

from ulmfit.bundle import read_bundle
from ulmfit.cli.main import main
from ulmfit.lm.synthetic import human_numbers


def write_csv(path, corpus):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for t, y, s in zip(corpus.texts, corpus.labels, corpus.splits):
            w.writerow([t, y, s])
    return path


def run(argv):
    """main(argv) with stdout captured (module-scoped fixtures cannot use capsys)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([str(a) for a in argv])
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULMFIT_CACHE", str(root / "cache"))
        mp.setenv("ULMFIT_PROGRESS", "0")
        mp.setenv("ULMFIT_LOG_EVERY", "0")  # a plain progress line after every batch (no bar in a log file)
        mp.setenv("ULMFIT_THREADS", "1")  # tiny models: one thread avoids oversubscribing a busy CPU
        yield root


@pytest.fixture(scope="module")
def pretrained(work):
    corpus = human_numbers(n_docs=300, numbers_per_doc=20, seed=0, test_docs=20)
    src = write_csv(work / "numbers.csv", corpus)
    rc, out = run(["pretrain", src, "--out", work / "lm", "--preset", "tiny", "--seed", "1"])
    assert rc == 0, out
    return work / "lm", out, corpus


def test_pretrain_learns_the_synthetic_corpus(pretrained):
    out_dir, _, corpus = pretrained
    b = read_bundle(out_dir)
    # the most-frequent-token baseline, in the model's own tokens
    tok = b.tokenizer
    train = Counter(t for toks in tok.tokenize(corpus.select("train").texts) for t in toks)
    valid = [t for toks in tok.tokenize(corpus.select("valid").texts) for t in toks]
    top = train.most_common(1)[0][0]
    baseline = sum(t == top for t in valid) / len(valid)
    best = b.metrics()[b.meta["best_epoch"] - 1]
    assert baseline < 0.2
    assert best["accuracy"] > baseline + 0.25, (best, baseline)
    assert best["perplexity"] == pytest.approx(2.718281828 ** best["valid_loss"], rel=1e-4)
    assert b.metrics()[-1]["train_loss"] < b.metrics()[0]["train_loss"]


def test_pretrain_writes_complete_bundles_and_reports(pretrained):
    out_dir, out, corpus = pretrained
    for name in ("model-best", "model-last"):
        d = out_dir / name
        for f in ("config.json", "meta.json", "vocab.json", "tokenizer/tokenizer.json", "model.safetensors",
                  "encoder.safetensors", "training-curve.png"):
            assert (d / f).is_file(), f"{name}/{f}"
    b = read_bundle(out_dir)
    assert b.path.name == "model-best"
    assert b.config["preset"] == "tiny" and b.config["seed"] == 1 and b.direction == "forward"
    assert b.config["arch"]["emb_sz"] == 32 and b.config["arch"]["vocab_size"] == len(b.vocab.itos)
    assert b.config["tokenizer"]["kind"] == "rules"
    assert [p["trainable"] for p in b.config["schedule"]] == ["all"]
    meta = b.meta
    assert meta["stage"] == "lm" and meta["complete"] and meta["epochs_completed"] == 2
    assert meta["data"] == {"source": "numbers.csv", "fingerprint": meta["data"]["fingerprint"],
                            "train_splits": ["train"], "valid_split": "valid",
                            "vocab_fingerprint": b.vocab.fingerprint}
    assert {"train_loss", "valid_loss", "accuracy", "perplexity"} <= set(meta["metrics"][0])
    assert {"torch", "fastai"} <= set(meta["versions"])
    assert not (out_dir / "checkpoint").exists()  # removed once the run finished
    # what the user sees before training: splits used, resolved config, schedule; then the epoch table
    assert "training on train (270 docs); validating on valid (30 docs); test (20 docs) not used" in out
    assert "config:" in out and "emb_sz=32" in out and "schedule:" in out and "phase 1: all layers: 2 epochs" in out
    assert "train_loss" in out and "perplexity" in out
    # no bar in a captured log: plain progress lines instead (ULMFIT_LOG_EVERY=0: after every batch)
    assert re.search(r"epoch 1: 1/\d+ batches \(\d+%\), train_loss [\d.]+, [\d,]+ tokens/s, ~\d+ s left", out), out
    assert out.strip().splitlines()[-1].startswith(str(out_dir / "model-best"))


def test_lm_finetune_reuses_tokenizer_and_vocab(pretrained, work):
    out_dir, _, _ = pretrained
    domain = write_csv(work / "domain.csv", human_numbers(n_docs=80, seed=5, max_start=500))
    rc, out = run(["lm-finetune", domain, "--pretrained", out_dir, "--out", work / "ft", "--preset", "tiny",
                   "--epochs", "1"])
    assert rc == 0, out
    b, pre = read_bundle(work / "ft"), read_bundle(out_dir)
    assert b.vocab.itos == pre.vocab.itos and b.config["arch"] == pre.config["arch"]
    assert [m["phase"] for m in b.metrics()] == ["frozen body: embeddings + decoder", "unfrozen: all layers"]
    assert b.meta["pretrained"]["kind"] == "bundle" and b.config["lm_stage"] == "finetune"
    assert "phase 1: frozen body: embeddings + decoder: 1 epoch" in out and "phase 2: unfrozen" in out
    assert "reusing the pretrained tokenizer" in out


@pytest.mark.parametrize("setting, message", [
    ("tokenizer=sentencepiece", "tokenizer='sentencepiece' (tokenizer mismatch)"),
    ("emb_sz=48", "emb_sz=48 (architecture mismatch)"),
    ("n_layers=3", "architecture mismatch"),
])
def test_lm_finetune_refuses_a_contradicting_override(pretrained, work, capsys, setting, message):
    out_dir, _, _ = pretrained
    target = work / f"bad-{setting.split('=')[0]}"
    rc = main(["lm-finetune", str(work / "numbers.csv"), "--pretrained", str(out_dir), "--out", str(target),
               "--preset", "tiny", "--set", setting])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and err.startswith("error: ")
    assert not target.exists()


def test_lm_finetune_missing_or_bad_pretrained(pretrained, work, capsys, tmp_path):
    import shutil

    out_dir, _, _ = pretrained
    broken = tmp_path / "broken"
    shutil.copytree(out_dir / "model-best", broken)
    (broken / "model.safetensors").unlink()
    rc = main(["lm-finetune", str(work / "numbers.csv"), "--pretrained", str(broken), "--out",
               str(tmp_path / "o1"), "--preset", "tiny"])
    assert rc == 1 and "weight file missing" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    (tmp_path / "empty").mkdir()
    rc = main(["lm-finetune", str(work / "numbers.csv"), "--pretrained", str(tmp_path / "empty"), "--out",
               str(tmp_path / "o2"), "--preset", "tiny"])
    assert rc == 1 and "neither an LM bundle nor a fastai checkpoint" in capsys.readouterr().err
    rc = main(["lm-finetune", str(work / "numbers.csv"), "--pretrained", str(tmp_path / "nope"), "--out",
               str(tmp_path / "o3"), "--preset", "tiny"])
    assert rc == 1 and "pretrained model not found" in capsys.readouterr().err


def test_backwards_direction_is_recorded_and_enforced(pretrained, work, capsys):
    small = write_csv(work / "small.csv", human_numbers(n_docs=80, seed=3))
    rc, out = run(["pretrain", small, "--out", work / "bwd", "--preset", "tiny", "--epochs", "1", "--backwards",
                   "--max-docs", "50"])
    assert rc == 0, out
    assert "training on train (50 docs); validating on valid (8 docs)" in out  # --max-docs caps each split
    b = read_bundle(work / "bwd")
    assert b.direction == "backward" and b.config["direction"] == "backward" and b.backwards
    assert "(pretrain, backward" in out
    rc = main(["lm-finetune", str(small), "--pretrained", str(work / "bwd"), "--out", str(work / "mix"),
               "--preset", "tiny"])
    err = capsys.readouterr().err
    assert rc == 1 and "is a backward model but this run is forward" in err and not (work / "mix").exists()
    out_dir, _, _ = pretrained
    rc = main(["lm-finetune", str(small), "--pretrained", str(out_dir), "--out", str(work / "mix"),
               "--preset", "tiny", "--backwards"])
    assert rc == 1 and "is a forward model but this run is backward" in capsys.readouterr().err


def test_pretrain_without_valid_split_or_text(work, capsys, tmp_path):
    from ulmfit.data import Corpus
    from ulmfit.lm import pretrain

    only_test = Corpus(["one two three"] * 5, [None] * 5, ["test"] * 5, "t")
    with pytest.raises(Exception, match="no train or unsup documents"):
        pretrain(only_test, tmp_path / "o", "tiny", log=lambda s: None)
    assert not (tmp_path / "o").exists()
    rc = main(["pretrain", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"), "--preset", "tiny"])
    assert rc == 1 and capsys.readouterr().err.startswith("error: ")


def test_a_bad_progress_interval_fails_before_any_work(pretrained, work, capsys, monkeypatch):
    monkeypatch.setenv("ULMFIT_LOG_EVERY", "often")
    for argv in (["pretrain", work / "numbers.csv"], ["lm-finetune", work / "numbers.csv", "--pretrained", work / "lm"]):
        rc = main([str(a) for a in argv] + ["--out", str(work / "o"), "--preset", "tiny"])
        err = capsys.readouterr().err
        assert rc == 1 and "ULMFIT_LOG_EVERY='often' is not a number of seconds" in err, err
        assert not (work / "o").exists()


def test_lm_finetune_can_extend_the_vocabulary(pretrained, work):
    import torch

    from ulmfit.data import Corpus
    from ulmfit.lm.synthetic import number_words

    out_dir, _, _ = pretrained
    texts = [f"{number_words(k)} apples and {number_words(k + 1)} pears , {number_words(k + 2)} plums"
             for k in range(1, 120)]
    domain = Corpus(texts, [None] * len(texts), ["valid" if i % 4 == 0 else "train" for i in range(len(texts))],
                    "fruit")
    write_csv(work / "fruit.csv", domain)
    rc, out = run(["lm-finetune", work / "fruit.csv", "--pretrained", out_dir, "--out", work / "ext", "--preset",
                   "tiny", "--epochs", "0", "--set", "ft_extend_vocab=2", "--set", "ft_frozen_lr=1e-12",
                   "--set", "wd=0"])
    assert rc == 0, out
    pre, b = read_bundle(out_dir), read_bundle(work / "ext")
    old = pre.vocab.itos
    assert b.vocab.itos[:len(old)] == old                       # pretrained ids keep their meaning
    added = [w for w in b.vocab.itos[len(old):] if w != "xxfake"]
    assert len(added) == 2 and set(added) <= {"apples", "pears", "plums"}
    assert b.meta["pretrained"]["extended"]["added"] == 2 and "extending the pretrained vocabulary" in out
    emb_old, emb = pre.load_state("model")["0.encoder.weight"], b.load_state("model")["0.encoder.weight"]
    assert torch.allclose(emb[:len(old)], emb_old, atol=1e-6)
    for w in added:
        assert torch.allclose(emb[b.vocab.stoi[w]], emb_old.mean(0), atol=1e-6)


def test_pretrain_also_reads_more_sources_whole(work, tmp_path):
    main_src = write_csv(work / "also-main.csv", human_numbers(n_docs=80, seed=5))
    mine = tmp_path / "mine.txt"
    mine.write_text("".join(f"my own unlabeled text number {i} , with words of its own\n" for i in range(30)))
    rc, out = run(["pretrain", main_src, "--out", tmp_path / "lm", "--preset", "tiny", "--epochs", "1",
                   "--max-docs", "40", "--also", mine])
    assert rc == 0, out
    assert "training on train (40 docs)" not in out  # --max-docs caps the main source, then mine.txt joins whole
    assert "data: --also mine.txt: train 27, valid 3" in out
    assert "training on train (67 docs); validating on valid (11 docs)" in out
    b = read_bundle(tmp_path / "lm")
    assert "unlabeled" in b.vocab.itos  # a word only the --also source has
    rc, out = run(["pretrain", main_src, "--out", tmp_path / "lm2", "--preset", "tiny", "--also",
                   tmp_path / "missing.txt"])
    assert rc == 1 and not (tmp_path / "lm2").exists()
