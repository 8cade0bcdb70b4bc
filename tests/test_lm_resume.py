"""Resume: an interrupted run continued with --resume ends with the same metrics as an uninterrupted one."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from ulmfit.bundle import read_bundle
from ulmfit.cli.main import main
from ulmfit.lm import checkpoint as lm_checkpoint
from ulmfit.lm.synthetic import human_numbers

KEYS = ("epoch", "phase", "train_loss", "valid_loss", "accuracy", "perplexity")


def _csv(path, corpus):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "split"])
        w.writerows(zip(corpus.texts, corpus.splits))
    return str(path)


def _run(argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([str(a) for a in argv])
    return rc, buf.getvalue()


def _printed(metrics):
    """Metrics at the precision of the epoch table."""
    return [tuple(round(m[k], 6) if isinstance(m[k], float) else m[k] for k in KEYS) for m in metrics]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULMFIT_CACHE", str(root / "cache"))
        mp.setenv("ULMFIT_PROGRESS", "0")
        mp.setenv("ULMFIT_THREADS", "1")
        src = _csv(root / "numbers.csv", human_numbers(n_docs=120, seed=11))
        yield root, src


def _interrupt_after_checkpoint(monkeypatch, n):
    """Simulate a kill right after the n-th epoch's checkpoint was written."""
    real = lm_checkpoint.save
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_checkpoint, "save", save_then_die)


def test_pretrain_resume_equals_uninterrupted(work, monkeypatch):
    root, src = work
    args = ["--preset", "tiny", "--epochs", "2", "--seed", "3", "--set", "drop_mult=0.5"]  # dropout: RNG matters
    rc, _ = _run(["pretrain", src, "--out", root / "straight", *args])
    assert rc == 0

    with monkeypatch.context() as m:
        _interrupt_after_checkpoint(m, 1)
        rc, out = _run(["pretrain", src, "--out", root / "killed", *args])
    assert rc == 130
    assert "continue with --resume" in out
    last = read_bundle(root / "killed" / "model-last")  # the crash still left a complete model-last
    assert last.meta["complete"] is False and last.meta["epochs_completed"] == 1
    assert (root / "killed" / "checkpoint" / "state.pt").is_file()

    rc, out = _run(["pretrain", src, "--out", root / "killed", *args, "--resume"])
    assert rc == 0 and "resuming from checkpoint/ after epoch 1" in out
    a, b = read_bundle(root / "straight"), read_bundle(root / "killed")
    assert _printed(b.metrics()) == _printed(a.metrics())
    assert len(b.metrics()) == 2 and b.meta["complete"]
    for k, v in a.load_state("model").items():
        assert torch.allclose(v, b.load_state("model")[k], atol=1e-6), k


def test_finetune_resume_across_the_unfreeze(work, monkeypatch):
    root, src = work
    rc, _ = _run(["pretrain", src, "--out", root / "base", "--preset", "tiny", "--epochs", "1"])
    assert rc == 0
    args = ["--pretrained", root / "base", "--preset", "tiny", "--epochs", "1", "--set", "drop_mult=0.3"]
    rc, _ = _run(["lm-finetune", src, "--out", root / "ft-straight", *args])
    assert rc == 0
    with monkeypatch.context() as m:
        _interrupt_after_checkpoint(m, 1)  # after the frozen phase
        rc, _ = _run(["lm-finetune", src, "--out", root / "ft-killed", *args])
    assert rc == 130

    # the frozen phase trained the embeddings/decoder only: the LSTM weights are still the pretrained ones
    base = read_bundle(root / "base").load_state("model")
    after = read_bundle(root / "ft-killed" / "model-last").load_state("model")
    rnn_keys = [k for k in base if k.startswith("0.rnns.")]
    assert rnn_keys and all(torch.equal(base[k], after[k]) for k in rnn_keys)
    assert not torch.equal(base["0.encoder.weight"], after["0.encoder.weight"])

    rc, out = _run(["lm-finetune", src, "--out", root / "ft-killed", *args, "--resume"])
    assert rc == 0 and "phase 2" in out
    a, b = read_bundle(root / "ft-straight"), read_bundle(root / "ft-killed")
    assert _printed(b.metrics()) == _printed(a.metrics())
    assert [m["phase"] for m in b.metrics()] == ["frozen body: embeddings + decoder", "unfrozen: all layers"]


def test_resume_errors(work, capsys):
    root, src = work
    rc = main(["pretrain", src, "--out", str(root / "never"), "--preset", "tiny", "--resume"])
    assert rc == 1 and "nothing to resume" in capsys.readouterr().err


def test_resume_with_other_options_is_refused(work, monkeypatch, capsys):
    root, src = work
    with monkeypatch.context() as m:
        _interrupt_after_checkpoint(m, 1)
        rc, _ = _run(["pretrain", src, "--out", root / "k2", "--preset", "tiny", "--epochs", "2"])
    assert rc == 130
    rc = main(["pretrain", src, "--out", str(root / "k2"), "--preset", "tiny", "--epochs", "3", "--resume"])
    err = capsys.readouterr().err
    assert rc == 1 and "was made with a different lm_config" in err and "without --resume" in err


def test_sigterm_unwinds_like_ctrl_c(work):
    """`kill PID` (a scheduler's pre-emption, `timeout`) saves model-last and leaves no staging directory."""
    import signal
    import subprocess
    import sys
    import time

    root, src = work
    out = root / "termed"
    proc = subprocess.Popen([sys.executable, "-m", "ulmfit.cli.main", "pretrain", src, "--out", str(out),
                             "--preset", "tiny", "--epochs", "200", "--seed", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (out / "checkpoint" / "progress.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "continue with --resume" in stdout
    last = read_bundle(out / "model-last")
    assert last.meta["complete"] is False and 1 <= last.meta["epochs_completed"] < 200
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in root.iterdir() if p.name.startswith(".termed")] == []


def _report_sigterm_handler(queue):
    import signal

    queue.put(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)


def test_forked_workers_die_the_default_way_on_sigterm():
    """A forked worker stuck in a lock it inherited never runs a Python handler: pool.terminate() must kill it."""
    import multiprocessing as mp
    import signal

    from ulmfit.cli import main as cli_main

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    previous = signal.signal(signal.SIGTERM, cli_main._terminate_as_interrupt)
    try:
        proc = ctx.Process(target=_report_sigterm_handler, args=(queue,))
        proc.start()
        default_in_child = queue.get(timeout=60)
        proc.join(timeout=60)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert default_in_child
