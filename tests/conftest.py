"""Shared test setup: every test gets private cache/data folders, so tests never touch ./data or ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path_factory.mktemp("ulmfit-env")
    monkeypatch.setenv("ULMFIT_DATA", str(root / "data"))
    monkeypatch.setenv("ULMFIT_CACHE", str(root / "cache"))
    monkeypatch.setenv("ULMFIT_PROGRESS", "0")
    monkeypatch.delenv("ULMFIT_MIRROR", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread: tiny models on a shared 2-core machine run faster without thread hand-offs."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
