"""The CLI contract: every command exists, explains itself, and rejects unknown options."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ulmfit.cli.main import main

COMMANDS = ["pretrain", "lm-finetune", "classify", "evaluate", "predict", "generate", "quickstart", "serve", "export",
            "explain", "suggest"]


def test_root_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS + ["data", "runs", "lr-find"]:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS + ["data get", "data info", "data merge", "runs compare", "lr-find classify",
                                             "lr-find lm"])
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*name.split(), "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize("name", COMMANDS)
def test_unknown_option_is_an_error(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from ulmfit import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_help_is_fast_and_imports_no_torch() -> None:
    # `ulmfit --help` must not pay for torch/fastai; measure the import set rather than wall time.
    code = (
        "import sys; from ulmfit.cli.main import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'fastai', 'spacy', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out
    assert time.perf_counter() - t < 5  # generous: CI machines are noisy; the benchmark is the real check


def test_atomic_writes_respect_the_umask(tmp_path) -> None:
    import os

    from ulmfit._io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "bundle") as d:
            write_json(d / "meta.json", {"stage": "lm"})
    finally:
        os.umask(old)
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bundle" / "meta.json").stat().st_mode & 0o777 == 0o644
