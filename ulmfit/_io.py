"""Small filesystem helpers shared by every stage: atomic writes, hashing, progress bars.

Every artifact is written into a temporary sibling and renamed into place, so a crash or Ctrl-C never
leaves a half-written file or directory where a later stage would trust it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ulmfit.distributed import is_main

T = TypeVar("T")


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_prefix(name: str, kind: str = "tmp") -> str:
    """Hidden staging names carry the writer's pid, so leftovers of a killed run are recognisable
    (ulmfit._rundir.clean_stale_staging)."""
    return f".{name}.{kind}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; on success it replaces `final`, on error it vanishes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=staging_prefix(final.name), dir=final.parent))
    # mkdtemp makes 0700 directories; artifacts should be as readable as anything else the user creates.
    os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
        if final.exists() and not overwrite:
            raise FileExistsError(final)
        replace_path(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_path(staged: Path, final: Path) -> None:
    """Move a finished file or folder to `final`, replacing what was there: `final` is never half-written and
    missing only between two renames."""
    if not final.exists():
        os.replace(staged, final)
        return
    old = final.with_name(f"{staging_prefix(final.name, 'old')}{os.urandom(3).hex()}")
    os.replace(final, old)
    os.replace(staged, final)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=staging_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool | None = None) -> Iterator[T]:
    """A tqdm bar on stderr; silent when stderr is not a terminal unless ULMFIT_PROGRESS=1, and on every rank of
    a torchrun job but rank 0."""
    from tqdm.auto import tqdm

    if not is_main():
        disable = True
    if disable is None:
        forced = os.environ.get("ULMFIT_PROGRESS")
        disable = (forced == "0") if forced is not None else not sys.stderr.isatty()
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                     file=sys.stderr))


def versions() -> dict[str, str]:
    """Library versions recorded in every meta.json."""
    out: dict[str, str] = {"python": sys.version.split()[0]}
    from importlib import metadata

    for pkg in ("ulmfit", "torch", "fastai", "spacy", "sentencepiece", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    if "torch" in sys.modules:  # torch's own version string names its build (2.13.0+cpu, 2.11.0+cu130)
        out["torch"] = sys.modules["torch"].__version__
    return out
