"""Several processes (`torchrun -m ulmfit ...`, gloo on the CPU): each rank's share of the data is the one-process
layout cut in pieces, validation metrics equal one process's, a 2-rank pretrain and classify write bundles that
load (rank 0 alone writing), ranks started with different options stop with one line, and a rank that dies ends
the other with one line (the run then resumes)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_classify import labelled, lm_corpus
from test_classify import write_csv as write_labelled_csv
from test_store import make_corpus

from ulmfit.errors import UlmfitError
from ulmfit.loaders import ClasLoader, LMStreamLoader, clas_dataloaders, lm_dataloaders
from ulmfit.store import TokenStore, build_store

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

# Imported at start-up by every process of a launched job (PYTHONPATH): on ranks other than 0 it reports, on
# stderr, any write under the folders in ULMFIT_TEST_WATCH; with ULMFIT_TEST_DIE_WHEN set, the rank exits hard as
# soon as that file exists (a rank killed mid-run).
SITECUSTOMIZE = textwrap.dedent('''
    import os, sys, threading, time

    def _watch():
        roots = [os.path.realpath(p) for p in os.environ["ULMFIT_TEST_WATCH"].split(os.pathsep)]
        flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        events = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"}

        def hook(event, args):
            if event == "open":
                writes = isinstance(args[2], int) and args[2] & flags or "w" in str(args[1] or "")
            else:
                writes = event in events
            path = args[0] if args else None
            if writes and isinstance(path, (str, os.PathLike)):
                real = os.path.realpath(os.fspath(path))
                if any(real == r or real.startswith(r + os.sep) for r in roots):
                    sys.stderr.write(f"ULMFIT-TEST-WRITE rank {os.environ['RANK']}: {event} {real}\\n")

        sys.addaudithook(hook)

    def _die_when(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        os._exit(3)

    if os.environ.get("RANK", "0") != "0":
        if os.environ.get("ULMFIT_TEST_WATCH"):
            _watch()
        if os.environ.get("ULMFIT_TEST_DIE_WHEN"):
            threading.Thread(target=_die_when, args=(os.environ["ULMFIT_TEST_DIE_WHEN"],), daemon=True).start()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(root folder, environment) shared by the launched processes: one token cache, one thread each."""
    root = tmp_path_factory.mktemp("dist")
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "ULMFIT_CACHE": str(root / "cache"), "ULMFIT_DATA": str(root / "data"),
           "ULMFIT_PROGRESS": "0", "ULMFIT_THREADS": "1", "OMP_NUM_THREADS": "1", "ULMFIT_DIST_TIMEOUT": "60",
           "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "MPLBACKEND": "Agg"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return root, env


def launch(env: dict, commands: list[list[str]], extra: list[dict] | None = None,
           timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """One command per rank, with the environment torchrun gives its workers (but no agent, so each rank's exit
    code and output are its own). `extra`: more environment per rank."""
    port = _free_port()
    procs = []
    for r, command in enumerate(commands):
        rank_env = {**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(len(commands)),
                    "LOCAL_WORLD_SIZE": str(len(commands)), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                    **(extra[r] if extra else {})}
        procs.append(subprocess.Popen(command, env=rank_env, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    done = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def ulmfit(*argv) -> list[str]:
    return [PYTHON, "-m", "ulmfit", *map(str, argv)]


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TokenStore:
    c = make_corpus(n_train=120, n_valid=40, n_test=0, n_unsup=30, seed=3, min_words=3, max_words=120)
    return build_store(c, cache_dir=tmp_path_factory.mktemp("tokens"), workers=1)


# --- each rank's share, without processes ------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
def test_each_rank_reads_its_rows_of_the_one_process_stream(store: TokenStore, world_size: int) -> None:
    bs = 3
    one = lm_dataloaders(store, bs=world_size * bs, seq_len=10, random_bptt=True, rank=0, world_size=1)
    ranks = [lm_dataloaders(store, bs=bs, seq_len=10, random_bptt=True, rank=r, world_size=world_size)
             for r in range(world_size)]
    for split in ("train", "valid"):
        for epoch in (0, 1):
            whole = getattr(one, split)
            whole.epoch = epoch
            expected = list(whole)  # (bs*world_size, n) batches
            for r, dls in enumerate(ranks):
                dl = getattr(dls, split)
                # the same number and lengths of batches on every rank, and its own rows of the one stream
                assert dl.bl == whole.bl and dl.plan(epoch) == whole.plan(epoch)
                rows = whole.rows(whole.stream(epoch))  # (bs*world_size, bl+1)
                assert np.array_equal(dl.rows(dl.stream(epoch)), rows[r * bs:(r + 1) * bs])
                dl.epoch = epoch
                n = len(dl)
                mine = list(dl)
                assert len(mine) == len(expected) == n
                for (x, y), (wx, wy) in zip(mine, expected):
                    assert torch.equal(x, wx[r * bs:(r + 1) * bs]) and torch.equal(y, wy[r * bs:(r + 1) * bs])


def test_classifier_ranks_share_the_batches_of_the_epoch(store: TokenStore) -> None:
    labels = ["neg", "pos"]
    world_size, bs = 3, 8
    one = clas_dataloaders(store, labels, bs=bs, seq_len=16, rank=0, world_size=1)
    ranks = [clas_dataloaders(store, labels, bs=bs, seq_len=16, rank=r, world_size=world_size)
             for r in range(world_size)]
    for epoch in (0, 1):
        everything = [tuple(b) for b in one.train.batch_indices(epoch)]
        shares = [[tuple(b) for b in dls.train.batch_indices(epoch)] for dls in ranks]
        assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(everything) // world_size
        assert all(len(s) == len(dls.train) for s, dls in zip(shares, ranks))
        taken = [b for s in shares for b in s]
        assert len(set(taken)) == len(taken) and set(taken) <= set(everything)  # disjoint: no batch twice
        assert all(len(b) == bs for b in taken)
    # validation: the one-process batches (every document once), dealt round the ranks
    everything = [tuple(b) for b in one.valid.batch_indices()]
    shares = [[tuple(b) for b in dls.valid.batch_indices()] for dls in ranks]
    assert sorted(b for s in shares for b in s) == sorted(everything)
    assert [len(s) for s in shares] == [len(dls.valid) for dls in ranks]


def test_more_ranks_than_the_data_has_rows_for_is_one_line(store: TokenStore) -> None:
    n_rows = (store.n_tokens("valid") - 1) // 10
    with pytest.raises(UlmfitError, match=r"too few for one batch of 4 processes x bs=\d+") as e:
        lm_dataloaders(store, bs=n_rows // 4 + 1, seq_len=10, rank=0, world_size=4)
    assert "lower bs" in e.value.hint
    with pytest.raises(UlmfitError, match="processes") as e:
        lm_dataloaders(store, bs=1, seq_len=10, rank=0, world_size=n_rows + 1)
    assert "fewer processes" in e.value.hint
    n_train = store.n_docs("train")
    with pytest.raises(UlmfitError, match=rf"{n_train} documents make 1 batch\(es\) of bs={n_train}, fewer than "
                                          r"the 2 processes"):
        clas_dataloaders(store, ["neg", "pos"], bs=n_train, rank=1, world_size=2)
    with pytest.raises(ValueError):
        ClasLoader(store.ids("train"), store.offsets("train"), None, rank=2, world_size=2)
    with pytest.raises(ValueError):
        LMStreamLoader([(store.ids("train"), store.offsets("train"))], rank=-1, world_size=2)


# --- validation metrics over ranks = one process's ------------------------------------------------------------


def validation_metrics(store_root: str, bs: int) -> dict[str, list[float]]:
    """`Learner.validate()` of the tiny LM (ulmfit's own Learner) and of a fastai text classifier, each rank on
    its share (a launched rank prints them as JSON)."""
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import F1Score, accuracy
    from fastai.text.learner import TextLearner
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config
    from fastai.text.models.core import get_text_classifier

    from ulmfit import distributed
    from ulmfit.lm.config import resolve_config
    from ulmfit.lm.learner import make_learner
    from ulmfit.runtime import seed_all

    store = TokenStore(Path(store_root))
    cfg = resolve_config("tiny", overrides={"bs": bs, "seq_len": 10})
    with distributed.session("cpu"):
        seed_all(0)
        learn, _ = make_learner(cfg, lm_dataloaders(store, bs=bs, seq_len=10, device="cpu"), store.vocab, "cpu")
        lm = learn.validate()
        seed_all(0)
        dls = clas_dataloaders(store, ["neg", "pos"], bs=bs, seq_len=16, device="cpu")
        model = get_text_classifier(AWD_LSTM, len(store.vocab), 2, seq_len=16, drop_mult=0.0,
                                    config=dict(awd_lstm_clas_config, emb_sz=16, n_hid=32, n_layers=1))
        learn = distributed.data_parallel(TextLearner(dls, model, loss_func=CrossEntropyLossFlat(),
                                                      metrics=[accuracy, F1Score(average="macro")]))
        clas = learn.validate()
    return {"lm": [float(v) for v in lm], "clas": [float(v) for v in clas]}


def launched_checks(store_root: str) -> dict:
    """What a launched rank reports: its validation metrics (bs 4), then the error of ranks that were started with
    different options (the seed: the rank)."""
    from ulmfit import distributed

    with distributed.session("cpu"):
        metrics = validation_metrics(store_root, 4)
        try:
            distributed.check_same({"seed": distributed.rank(), "bs": 4})
        except UlmfitError as e:
            metrics["mismatch"] = str(e)
    return metrics


def test_two_ranks_validate_as_one_process_and_refuse_different_options(job, store: TokenStore) -> None:
    _, env = job
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'tests')!r}); from test_distributed import "
            f"launched_checks; print(json.dumps(launched_checks({str(store.root)!r})))")
    ranks = launch(env, [[PYTHON, "-c", code]] * 2)
    assert all(p.returncode == 0 for p in ranks), ranks[0].stderr[-3000:] + ranks[1].stderr[-3000:]
    two = [json.loads(p.stdout.strip().splitlines()[-1]) for p in ranks]
    # one process: the LM at bs 8 reads the rows both ranks read at bs 4; the classifier at bs 4 scores the
    # batches the two ranks share out
    one_lm, one_clas = validation_metrics(str(store.root), 8)["lm"], validation_metrics(str(store.root), 4)["clas"]
    assert two[0] == two[1]  # every rank reports the whole split's values, and the same error
    assert two[0]["lm"] == pytest.approx(one_lm, rel=1e-5)  # loss, accuracy, perplexity
    assert two[0]["clas"] == pytest.approx(one_clas, rel=1e-5)  # loss, accuracy, macro-F1
    assert two[0]["mismatch"].startswith("the 2 processes were started with different options: seed (rank 0 vs "
                                         "rank 1) (start every rank with the same command")


# --- whole commands on two processes ---------------------------------------------------------------------------


def test_torchrun_pretrain_then_classify_write_bundles_that_load(job) -> None:
    from ulmfit.bundle import read_bundle
    from ulmfit.classify import Classifier

    root, env = job
    lm_src = write_labelled_csv(root / "lm.csv", lm_corpus(150), label=False)
    clas_src = write_labelled_csv(root / "reviews.csv", labelled(96, 40, seed=1, valid_rare=False))
    lm, clas = root / "lm", root / "clas"
    torchrun = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "ulmfit"]
    watched = {**env, "ULMFIT_TEST_WATCH": os.pathsep.join([str(lm), str(clas), env["ULMFIT_CACHE"]])}

    p = subprocess.run([*torchrun, "pretrain", lm_src, "--out", lm, "--preset", "tiny", "--seed", "0", "--epochs",
                        "1", "--bs", "8"], env=watched, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ULMFIT-TEST-WRITE" not in p.stderr  # rank 1 wrote nothing: not the store, not OUT
    assert p.stdout.count("train_loss") == 1 and p.stdout.count("model-best\tvalid_loss") == 1  # rank 0 prints
    # 15 validation documents are too few for 2 x 8 rows: bs shrinks so that each process has its rows
    bs = int(re.search(r"too few for one batch of 8 rows x seq_len 24 for each of 2 processes: training at bs (\d+)",
                       p.stdout).group(1))
    assert f"distributed: 2 processes (gloo), bs {bs} rows each" in p.stdout and "learning rates kept" in p.stdout
    b = read_bundle(lm)
    assert b.meta["processes"] == 2 and b.meta["complete"] and b.config["lm_config"]["bs"] == bs
    assert sorted(x.name for x in lm.iterdir() if not x.name.startswith(".")) == ["logs", "model-best", "model-last"]

    p = subprocess.run([*torchrun, "classify", clas_src, "--lm", lm, "--out", clas, "--preset", "tiny", "--seed",
                        "0", "--epochs", "4", "--set", "ngram=false"], env=watched, cwd=REPO, capture_output=True,
                       text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ULMFIT-TEST-WRITE" not in p.stderr
    assert p.stdout.count("epoch  4 (stage 4)") == 1 and p.stdout.count("model-best\tvalid") == 1
    assert "bs 16 documents each: every optimizer step averages the gradients of 32 documents" in p.stdout
    clf = Classifier.load(clas)
    assert clf.labels == ["neg", "pos"] and len(clf.predict(["the film was good", "it was awful"])) == 2
    assert len(read_bundle(clas / "model-last").metrics()) == 4


def test_a_rank_that_dies_ends_the_other_and_resume_continues(job, capsys) -> None:
    from ulmfit.bundle import read_bundle
    from ulmfit.cli.main import main

    root, env = job
    src = write_labelled_csv(root / "dies.csv", lm_corpus(120), label=False)
    out = root / "dies"
    argv = ulmfit("pretrain", src, "--out", out, "--preset", "tiny", "--seed", "0", "--epochs", "2", "--bs", "8")
    # rank 1 is killed as soon as rank 0 has written the first epoch's checkpoint
    die = {"ULMFIT_TEST_DIE_WHEN": str(out / "checkpoint" / "progress.json")}
    first, second = launch(env, [argv, argv], extra=[{}, die])
    assert second.returncode == 3
    assert first.returncode == 1 and len(errors(first)) == 1, first.stderr[-3000:]
    assert errors(first)[0].startswith("error: rank 0 of 2 lost contact with the other processes (")
    assert "ULMFIT_DIST_TIMEOUT" in first.stderr and "continue with --resume" in first.stdout
    assert (out / "model-last").is_dir() and (out / "checkpoint" / "progress.json").is_file()

    assert main([*argv[3:], "--resume"]) == 1  # this process alone: each rank's rows depend on the number of ranks
    assert "was made by 2 process(es), this run has 1" in capsys.readouterr().err
    ranks = launch(env, [argv + ["--resume"]] * 2)
    assert all(p.returncode == 0 for p in ranks), ranks[0].stderr[-3000:]
    assert "resuming from checkpoint/ after epoch" in ranks[0].stdout
    b = read_bundle(out)
    assert b.meta["complete"] and b.meta["epochs_completed"] == 2 and not (out / "checkpoint").exists()
