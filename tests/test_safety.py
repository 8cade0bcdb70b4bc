"""Nothing lost, nothing trusted by accident (README "Safety"), through the real CLI.

A table of bad inputs across every command: each must exit non-zero with one `error:` line (and at most a `hint:`),
and leave the working folder exactly as it was (user files kept, nothing half-written). Then the guarantees that
need more than one command: user files next to a run survive it, --overwrite replaces only the run's entries, one
run per --out at a time, leftovers of killed runs are cleaned, an interrupted classifier keeps its last finished
epoch under the right label.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_classify import _pretrain, labelled, lm_corpus, write_csv
from ulmfit.cli.main import main

TINY = ["--preset", "tiny"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder as a user would have it: a corpus, an LM, a classifier, a file, a binary file, a folder of notes
    next to a previous run."""
    from ulmfit.classify import resolve_config, train_classifier

    root = tmp_path_factory.mktemp("work")
    _pretrain(root / "lm", lm_corpus(300), epochs=1)
    src = write_csv(root / "reviews.csv", labelled(60, 30, seed=1, valid_rare=False))
    train_classifier(src, lm=root / "lm" / "model-best", out=root / "clas", config=resolve_config("tiny"),
                     log=lambda s: None)
    (root / "afile").write_text("the user's file\n")
    (root / "bin.csv").write_bytes(b"\xff\xfe bad bytes \x00\x00 and more\n")
    (root / "notjson.json").write_text("not json")
    (root / "unknown_key.json").write_text('{"a": 1}')
    (root / "mine.csv").write_text("id,note\n1,keep me\n")
    (root / "report.json").write_text('{"mine": true}\n')
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("keep me\n")
    (root / "run").mkdir()
    (root / "run" / "notes.txt").write_text("keep me\n")
    os.symlink(root / "clas" / "model-best", root / "run" / "model-best")
    return root


LM, CLAS = "lm/model-best", "clas/model-best"
CASES = [
    # outputs: files, unwritable places, folders holding another run
    (["pretrain", "reviews.csv", "--out", "afile"], "--out afile is a file"),
    (["pretrain", "reviews.csv", "--out", "afile/sub"], "--out afile/sub cannot be created"),
    (["pretrain", "reviews.csv", "--out", "/proc/ulmfit-out"], "--out /proc/ulmfit-out cannot be created"),
    (["pretrain", "reviews.csv", "--out", "lm"], "--out lm already holds a run"),
    (["pretrain", "nowhere.csv", "--out", "afile"], "--out afile is a file"),  # the output is checked first
    (["lm-finetune", "reviews.csv", "--pretrained", LM, "--out", "afile"], "--out afile is a file"),
    (["lm-finetune", "reviews.csv", "--pretrained", LM, "--out", "lm"], "--out lm already holds a run"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "afile"], "--out afile is a file"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "clas"], "--out clas already holds a run"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "run"], "--out run already holds a run"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "notes/todo.txt/x"], "cannot be created"),
    (["quickstart", "--fast", "--out", "afile"], "--out afile is a file"),
    (["predict", CLAS, "--input", "reviews.csv", "--output", "afile/x.csv"], "--output afile/x.csv"),
    (["predict", CLAS, "--input", "reviews.csv", "--output", "/proc/ulmfit.csv"], "--output /proc/ulmfit.csv"),
    (["predict", CLAS, "--input", "reviews.csv", "--output", "mine.csv"], "--output mine.csv"),
    (["evaluate", CLAS, "reviews.csv", "--split", "valid", "--out", "report.json"], "report.json"),
    (["evaluate", CLAS, "reviews.csv", "--split", "valid", "--out", "afile/r.json"], "afile/r.json"),
    # counts and ranges, refused before any work
    (["pretrain", "reviews.csv", "--out", "o", "--epochs", "0"], "nothing to train: epochs is 0"),
    (["pretrain", "reviews.csv", "--out", "o", "--bs", "0"], "'bs' = 0"),
    (["pretrain", "reviews.csv", "--out", "o", "--max-docs", "0"], "--max-docs must be at least 1"),
    (["pretrain", "reviews.csv", "--out", "o", "--set", "seq_len=-3"], "'seq_len' = -3"),
    (["lm-finetune", "reviews.csv", "--pretrained", LM, "--out", "o", "--epochs", "0", "--set",
      "ft_freeze_epochs=0"], "nothing to train"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--epochs", "0"], "--epochs 0 is fewer than"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--bs", "0"], "bs must be at least 1"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--max-train", "1"], "--max-train must be at least 2"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--self-train", "-1"], "self_train must be >= 0"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--self-train", "5", "--self-train-keep", "0"],
     "self_train_keep must be in (0, 1]"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--label-smoothing", "1.5"], "label_smoothing must be"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--class-weights", "abc"], "--class-weights 'abc'"),
    (["generate", LM, "the film", "--temperature", "-1"], "--temperature must be >= 0"),
    (["generate", LM, "the film", "--top-p", "2"], "--top-p must be in (0, 1]"),
    # options and config files
    (["pretrain", "reviews.csv", "--out", "o", "--resume"], "nothing to resume"),
    (["pretrain", "reviews.csv", "--out", "o", "--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["pretrain", "reviews.csv", "--out", "o", "--set", "nosuch=1"], "unknown config key 'nosuch'"),
    (["pretrain", "reviews.csv", "--out", "o", "--config", "nowhere.json"], "config file not found"),
    (["pretrain", "reviews.csv", "--out", "o", "--config", "notjson.json"], "cannot read config file"),
    (["pretrain", "reviews.csv", "--out", "o", "--config", "unknown_key.json"], "unknown config key 'a'"),
    (["pretrain", "reviews.csv", "--out", "o", "--device", "tpu"], "unknown device 'tpu'"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--set", "calibrate=maybe"], "calibrate"),
    (["classify", "reviews.csv", "--lm", LM, "--out", "o", "--unlabeled", "reviews.csv"],
     "unlabeled texts are only read for self-training"),
    # inputs and artifacts of the wrong kind
    (["pretrain", "nowhere.csv", "--out", "o"], "no such file or folder: nowhere.csv"),
    (["pretrain", "bin.csv", "--out", "o"], "does not look like a CSV text file"),
    (["data", "info", "bin.csv"], "does not look like a CSV text file"),
    (["data", "info", "nowhere.csv"], "no such file or folder"),
    (["data", "get", "nosuch"], "unknown dataset 'nosuch'"),
    (["lm-finetune", "reviews.csv", "--pretrained", "nowhere", "--out", "o"], "pretrained model not found"),
    (["lm-finetune", "reviews.csv", "--pretrained", CLAS, "--out", "o"], "holds a classifier"),
    (["classify", "reviews.csv", "--lm", CLAS, "--out", "o"], "holds a classifier"),
    (["classify", "reviews.csv", "--out", "o"], "no language model given"),
    (["classify", "reviews.csv", "--lm", "file:///nonexistent/x.tar.gz", "--out", "o"], "cannot download"),
    (["evaluate", CLAS, "reviews.csv", "--split", "unsup"], "the unsup split has no labels"),
    (["evaluate", CLAS, "reviews.csv", "--split", "nosuch"], "unknown split 'nosuch'"),
    (["evaluate", LM, "reviews.csv", "--split", "valid"], "holds a language model"),
    (["predict", CLAS, "--input", "nowhere.txt"], "no such input file"),
    (["predict", LM, "--input", "reviews.csv"], "holds a language model"),
    (["predict", CLAS, "--input", "reviews.csv", "--output", "lm"], "cannot tell the output format"),
    (["generate", CLAS, "the film"], "holds a classifier"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its content (folders and links by kind)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(work, argv, message, monkeypatch, capsys) -> None:
    monkeypatch.chdir(work)
    before = _snapshot(work)
    argv = argv + (TINY if argv[0] in ("pretrain", "lm-finetune", "classify") and "--preset" not in argv else [])
    assert main(argv) == 1, argv
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith("error: ") and message in lines[0], err
    assert len(lines) <= 2 and all(ln.startswith(("error: ", "hint: ")) for ln in lines), err
    assert _snapshot(work) == before


def test_case_table_is_broad() -> None:
    assert len(CASES) >= 40
    assert {a[0] for a, _ in CASES} >= {"pretrain", "lm-finetune", "classify", "evaluate", "predict", "generate",
                                        "quickstart", "data"}


# ---- what a run does to the folder it writes ---------------------------------------------------------------


def _classify(work: Path, out: Path, *extra: str) -> int:
    return main(["classify", str(work / "reviews.csv"), "--lm", str(work / LM), "--out", str(out), *TINY, *extra])


def test_a_run_keeps_the_users_files_and_overwrite_replaces_only_its_own(work, tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    (out / "data").mkdir()
    (out / "data" / "x.csv").write_text("a\n")
    assert _classify(work, out) == 0
    assert (out / "notes.txt").read_text() == "keep me\n" and (out / "data" / "x.csv").exists()
    first = (out / "model-best" / "meta.json").read_text()

    assert _classify(work, out, "--seed", "3") == 1  # a second run needs --overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "model-best" / "meta.json").read_text() == first

    assert _classify(work, out, "--seed", "3", "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "keep me\n" and (out / "data" / "x.csv").exists()
    assert json.loads((out / "model-best" / "config.json").read_text())["seed"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["data", "logs", "model-best", "model-last", "notes.txt"]


def test_a_failed_run_leaves_no_folder_behind(work, tmp_path) -> None:
    out = tmp_path / "new"
    assert main(["classify", str(work / "nowhere.csv"), "--lm", str(work / LM), "--out", str(out), *TINY]) == 1
    assert not out.exists()


_HOLD = """
import sys, time
from pathlib import Path
from ulmfit._rundir import file_lock
with file_lock(Path(sys.argv[1]), wait=False, what="x"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_the_same_out_fails_at_once_with_the_holders_pid(work, tmp_path, capsys) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out / ".ulmfit.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        assert _classify(work, out) == 1
        assert time.time() - t0 < 30  # refused before any data is read or a model is built
        err = capsys.readouterr().err
        assert f"in use by another run (pid {holder.pid})" in err
        assert sorted(p.name for p in out.iterdir()) == [".ulmfit.lock"]  # the holder's
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the kernel dropped its lock, the next run takes over with a warning
    assert _classify(work, out) == 0
    assert f"taking over the lock of --out {out} from pid {holder.pid}" in capsys.readouterr().out


def test_two_racing_runs_one_fails_fast(work, tmp_path) -> None:
    out = tmp_path / "race"
    cmd = [sys.executable, "-m", "ulmfit", "pretrain", str(work / "reviews.csv"), "--out", str(out), *TINY,
           "--set", "bs=2"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    loser = next(err for rc, err in results if rc == 1)
    assert "in use by another run (pid" in loser
    assert (out / "model-best" / "meta.json").exists()


def test_staging_left_by_a_killed_run_is_removed_by_the_next(work, tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    out = tmp_path / "killed"
    (out / f".run.stage-{dead}-abcd" / "model-best").mkdir(parents=True)
    (out / f".model-last.tmp-{dead}-efgh").mkdir()
    (out / ".ulmfit.lock").write_text(f"{dead}\n")  # a stale lock: its pid is gone
    assert _classify(work, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["logs", "model-best", "model-last"]


def test_an_interrupted_classifier_keeps_its_last_finished_epoch(work, tmp_path, monkeypatch, capsys) -> None:
    """Ctrl-C / SIGTERM in the middle of epoch 2: model-last holds epoch 1's weights, labelled epoch 1."""
    import ulmfit.classify.fit as fit_mod
    from ulmfit.classify.model import snapshot

    seen: dict = {}
    real = fit_mod.epoch_callback

    def interrupting(stage_of, on_epoch, on_step=None):
        cb = real(stage_of, on_epoch, on_step)
        after_batch, after_epoch = cb.after_batch, cb.after_epoch

        def stop_in_epoch_2():
            after_batch()
            if cb.epoch == 1 and cb.training and cb.iter >= 1:
                raise KeyboardInterrupt

        def remember():
            after_epoch()
            seen.setdefault("epoch1", snapshot(cb.learn.model))

        cb.after_batch, cb.after_epoch = stop_in_epoch_2, remember
        return cb

    monkeypatch.setattr(fit_mod, "epoch_callback", interrupting)
    out = tmp_path / "interrupted"
    assert _classify(work, out, "--config", str(_one_stage(tmp_path)), "--bs", "8") == 130
    meta = json.loads((out / "model-last" / "meta.json").read_text())
    assert meta["interrupted"] is True and meta["epoch"] == 1 and len(meta["metrics"]) == 1
    assert (out / "checkpoint" / "progress.json").is_file()  # kept: --resume continues from epoch 1
    from ulmfit.bundle import read_bundle

    saved = read_bundle(out / "model-last", stage="classifier").load_state("model")
    for k, v in seen["epoch1"].items():
        assert (saved[k] == v).all(), k


def _one_stage(tmp_path: Path) -> Path:
    p = tmp_path / "one_stage.json"
    p.write_text(json.dumps({"schedule": [{"epochs": 3, "lr": 0.01, "freeze_to": 0, "lr_div": 2.6}]}))
    return p
