"""Output files of `predict` (--output) and `evaluate` (--out): checked before any work is done.

The guarantees (README "Safety"):
- an output that cannot be written (the path is a folder or a device, a parent is a file, the folder is not
  writable) is an error before a model is loaded or input is read, not a traceback after the work;
- an existing file is replaced only when it is an earlier output of the same command (the command says how it
  recognises its own files) or an empty file, unless the user passes --overwrite;
- the file itself is written atomically by the command (temporary file + rename), so it is never half-written.
"""

from __future__ import annotations

import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from ulmfit.errors import UlmfitError


def check_output_file(path: Path, *, option: str, ours: Callable[[Path], bool], overwrite: bool) -> None:
    """Fail with one line unless `path` can be written as the output of `option` (e.g. "--output").

    A missing parent folder is fine (the command creates it when it writes). `ours(path)` tells whether an
    existing file is an earlier output of the same command; such a file, or an empty one, may be replaced, and
    anything else there is refused unless `overwrite`. Leaves nothing behind.
    """
    path = Path(path)
    if path.is_dir():
        raise UlmfitError(f"{option} {path} is a folder", hint=f"name a file for {option}, e.g. inside that folder")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the folders that are missing get created later
        folder = folder.parent
    if not folder.is_dir():
        raise UlmfitError(f"{option} {path} cannot be written: {folder} is a file, not a folder",
                          hint=f"choose a {option} path inside a folder")
    try:  # a real probe: permissions, read-only mounts and ACLs all show here (os.access misses some)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UlmfitError(f"{option} {path} cannot be written: {folder} is not writable ({e.strerror})",
                          hint=f"choose a {option} path in a folder you can write to") from None
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise UlmfitError(f"{option} {path} cannot be checked: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):  # /dev/stdout, a pipe: renaming a temporary file onto it would replace it
        raise UlmfitError(f"{option} {path} is not a regular file", hint=f"name a file for {option}")
    if overwrite or st.st_size == 0 or ours(path):
        return
    raise UlmfitError(f"{option} {path} already exists and is not an earlier output of this command",
                      hint=f"pass --overwrite to replace that file with the new output, or choose another {option}")

