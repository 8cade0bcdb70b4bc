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
