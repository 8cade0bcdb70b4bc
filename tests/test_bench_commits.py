"""scripts/bench_commits.py: one command timed under two commits, each run from that commit's own files."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_bench_lm_transfer import load
from ulmfit.lm.synthetic import human_numbers

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                reason="needs the project's git repository")


def test_two_commits_take_turns_and_the_same_code_gives_the_same_metric(tmp_path, monkeypatch, capsys):
    bench = load("bench_commits")
    corpus = human_numbers(n_docs=60, numbers_per_doc=10, seed=0)
    data = tmp_path / "numbers.csv"
    with data.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "split"), *zip(corpus.texts, corpus.splits)])
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ULMFIT_PROGRESS", "0")
    out = tmp_path / "runs.jsonl"
    rc = bench.main(["--refs", "HEAD", "HEAD~0", "--rounds", "1", "--work", str(tmp_path / "w"), "--out", str(out),
                     "--metric", "model-best/meta.json:metrics.-1.valid_loss", "--",
                     "pretrain", str(data), "--preset", "tiny", "--epochs", "1", "--out", "{out}"])
    assert rc == 0
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["ref"] for r in runs] == ["HEAD", "HEAD~0"] and runs[0]["sha"] == runs[1]["sha"]
    assert runs[0]["metric"] == runs[1]["metric"] and isinstance(runs[0]["metric"], float)
    # each side ran from the exported commit, not from this checkout's (editable) install
    tree = tmp_path / "w" / "trees" / runs[0]["sha"][:12]
    assert (tree / "ulmfit" / "__init__.py").is_file()
    assert "metrics identical" in capsys.readouterr().out


def test_the_command_must_name_its_output_folder(tmp_path):
    bench = load("bench_commits")
    with pytest.raises(SystemExit):
        bench.main(["--refs", "HEAD", "HEAD", "--work", str(tmp_path), "--", "pretrain", "x.csv"])


def test_which_copy_runs_is_the_exported_one(tmp_path):
    """The boot line puts the given folder's `ulmfit` ahead of the editable install's."""
    bench = load("bench_commits")
    fake = tmp_path / "ulmfit"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("print('exported copy')\n")
    out = subprocess.run([sys.executable, "-c", bench.BOOT, str(tmp_path)], capture_output=True, text=True)
    assert out.stdout.strip() == "exported copy", out.stderr
