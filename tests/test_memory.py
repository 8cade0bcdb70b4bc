"""Freed memory goes back to the OS: malloc_trim lowers the resident size of a fragmented heap, and training
calls it (once a minute by default; never when turned off)."""

from __future__ import annotations

import ctypes
import sys

import pytest

import ulmfit._memory as memory

glibc = pytest.mark.skipif(memory._malloc_trim() is None, reason="malloc_trim needs Linux glibc")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@glibc
def test_release_freed_memory_returns_the_holes_of_a_fragmented_heap():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size, n = 64 * 1024, 3000  # below glibc's 128 KB mmap threshold: served from the heap, as torch's buffers are
    bufs = [libc.malloc(size) for _ in range(n)]
    for b in bufs:
        ctypes.memset(b, 1, size)  # touch every page
    for b in bufs[::2]:  # free every other block: 96 MB of holes that the heap's top cannot give back
        libc.free(b)
    before = _rss()
    assert memory.release_freed_memory() is True
    dropped = before - _rss()
    for b in bufs[1::2]:
        libc.free(b)
    assert dropped > 50 * 2**20, f"RSS fell by {dropped / 2**20:.1f} MB only"


def test_release_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    memory._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert memory.release_freed_memory() is False
    finally:
        memory._malloc_trim.cache_clear()


@pytest.mark.parametrize("every, expect_calls", [(0.0, True), (None, False)])
def test_training_trims_unless_turned_off(tmp_path, monkeypatch, every, expect_calls):
    from ulmfit.lm import pretrain
    from ulmfit.lm.synthetic import human_numbers

    calls = []
    monkeypatch.setattr(memory, "TRIM_EVERY_S", every)
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setenv("ULMFIT_THREADS", "1")
    res = pretrain(human_numbers(n_docs=60, seed=0), tmp_path / "lm", "tiny", seed=0, log=lambda s: None)
    assert res.final["perplexity"] is not None
    assert (len(calls) > 0) is expect_calls, len(calls)
