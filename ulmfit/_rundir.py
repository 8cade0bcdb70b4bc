"""The output folder of a training command (`--out`): checked before any work, locked while the run writes.

The guarantees (README "Safety"):
- a training command writes only its own entries inside OUT (`OWN_ENTRIES`) and leaves everything else there;
- OUT that is a file, cannot be created or cannot be written is an error before data is read;
- OUT that already holds another run's bundles is refused unless `overwrite` (replace them) or `resume`;
- one run per OUT at a time: a lock file names the holder's pid, a second run fails at once; a lock whose pid
  is dead (kill -9) is taken over with a warning, and staging folders that dead runs left are removed.

Locks are `fcntl.flock` locks, which the kernel drops when a process dies, so a crash can never leave OUT locked;
the pid written inside only serves the messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ulmfit.errors import UlmfitError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the checks still run
    fcntl = None  # type: ignore[assignment]

# What a training run writes into OUT; anything else there belongs to the user. Besides these, the run log
# (`ulmfit.runlog.LOG_DIR`, "logs") is written live, not staged: a killed run's log is what tells what happened.
OWN_ENTRIES = ("model-best", "model-last", "checkpoint", "teacher", "student", "self-train.json", "pseudo-labels.csv")
# The entries whose presence means OUT holds a previous run.
RUN_MARKERS = ("model-best", "model-last", "checkpoint", "self-train.json")
LOCK = ".ulmfit.lock"
# Staging names carry the writer's pid (ulmfit._io.atomic_dir), so a dead writer's leftovers can be recognised.
_STAGING = re.compile(r"^\..+\.(?:tmp|old|stage)-(\d+)(?:-.*)?$")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_stale_staging(folder: Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove hidden staging entries of dead processes (a run killed with -9 never ran its `finally`)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _STAGING.match(entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    if removed and log:
        log(f"removed {len(removed)} staging folder(s) left in {folder} by runs that were killed")
    return removed


def check_writable_dir(path: Path, option: str = "--out") -> None:
    """`path` is (or can be made) a writable directory; else one line, before any work is done."""
    if path.exists() and not path.is_dir():
        raise UlmfitError(f"{option} {path} is a file, not a folder",
                          hint=f"name a folder for {option} (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise UlmfitError(f"{option} {path}: a parent of it is a file, not a folder") from None
    except OSError as e:
        raise UlmfitError(f"{option} {path} cannot be created: {e.strerror}",
                          hint=f"choose a {option} folder you can write to") from None
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UlmfitError(f"{option} {path} is not writable: {e.strerror}",
                          hint=f"choose a {option} folder you can write to") from None


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool, what: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created, and removed again on release) for the duration of the block.

    `wait=False`: another live holder is an error naming its pid. `wait=True`: wait for it (logged once).
    A lock file still holding a pid means its run was killed: taken over with a warning."""
    if fcntl is None:
        yield
        return
    fd = _acquire(path, wait=wait, what=what, log=log)
    try:
        stale = _read_pid(fd)
        if stale and stale != os.getpid():
            log(f"warning: taking over the lock of {what} from pid {stale}, which ended without releasing it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)  # released cleanly: no pid for the next run to warn about
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: whoever opened this file meanwhile sees it is gone and retries
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(path: Path, *, wait: bool, what: str, log: Callable[[str], None]) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                if not wait:
                    raise UlmfitError(f"{what} is in use by another run (pid {holder or 'unknown'})",
                                      hint="wait for it to finish, or choose another --out") from None
                log(f"waiting for pid {holder or 'unknown'}, which holds {what} ...")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the holder removed this file as it released it: lock the current one


def _read_pid(fd: int) -> int | None:
    raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(raw) if raw.isdigit() else None


@contextlib.contextmanager
def run_dir(out: Path, *, overwrite: bool = False, resume: bool = False,
            log: Callable[[str], None] = print) -> Iterator[Path]:
    """Check, lock and tidy OUT for one training run; yields OUT.

    Refuses OUT that holds a previous run (model-best, model-last or checkpoint) unless `overwrite` or `resume`."""
    out = Path(out)
    created = not out.exists()
    check_writable_dir(out)
    try:
        with file_lock(out / LOCK, wait=False, what=f"--out {out}", log=log):
            clean_stale_staging(out, log)
            previous = [name for name in RUN_MARKERS if (out / name).exists()]
            if previous and not (overwrite or resume):
                raise UlmfitError(f"--out {out} already holds a run ({', '.join(previous)})",
                                  hint="pass --overwrite to replace that run's entries (other files in the folder "
                                       "are kept), --resume to continue it, or choose another --out")
            yield out
    except BaseException:
        if created:  # a run that failed before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


@contextlib.contextmanager
def staged_entries(out: Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """A hidden staging folder inside OUT; on success each entry made in it replaces OUT's entry of that name,
    and OUT's other run entries (`OWN_ENTRIES`: say, a teacher/ left by an earlier self-training run being
    overwritten; those in `keep` stay: an interrupted run's checkpoint) are removed so the folder holds one run.
    On error the staging folder vanishes and OUT is as it was."""
    from ulmfit._io import replace_path, staging_prefix

    stage = Path(tempfile.mkdtemp(prefix=staging_prefix("run", "stage"), dir=out))
    try:
        yield stage
        made = {p.name for p in stage.iterdir() if not p.name.startswith(".")}  # not a lock file
        for name in sorted(made):
            replace_path(stage / name, out / name)
        for name in OWN_ENTRIES:
            if name not in made and name not in keep and (out / name).exists():
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
