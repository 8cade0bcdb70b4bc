"""Registered datasets: fetched once into the data cache, verified, extracted safely.

`get_dataset(name)` looks in this order and stops at the first hit:

1. the cache: ``$ULMFIT_DATA/<name>/`` (default ``./data/<name>/``) holding the completed-marker file
   ``.ulmfit-complete``. The marker is written before the extracted folder is renamed into place, so a
   half-extracted folder never counts. It records the sha256 and md5 of the archive the folder came from, and
   a cache hit is checked against the accepted digests (or the `#sha256=` pin) every time, so a copy fetched
   without a pin, or before the content changed, is never taken for a pinned one;
2. a local mirror: ``$ULMFIT_MIRROR/<archive file name>`` (the file name of the canonical URL, e.g.
   ``aclImdb_v1.tar.gz``), then an archive placed by hand at ``$ULMFIT_DATA/<archive file name>``; it is
   verified and extracted straight from there, with no network;
3. a download of the canonical URL (urllib, progress bar on stderr) into a temporary file, verified, then
   extracted into a temporary folder that is renamed into place.

Archives are verified against a list of accepted digests (``"sha256:<hex>"`` or ``"md5:<hex>"``): several
copies of a dataset circulate (our mirror's aclImdb_v1.tar.gz lacks the ``*Bow.feat`` files, so its digest
differs from the official archive's). After extraction the expected folders must exist. Tar members with
absolute paths, ``..`` components, links that point outside the target or device files are refused, and so is
an archive past the member or byte limits of `ulmfit.data.limits.ArchiveLimits` (``ULMFIT_MAX_ARCHIVE_MEMBERS``,
``ULMFIT_MAX_ARCHIVE_BYTES``). An interrupted transfer, a digest mismatch or a refused archive leaves nothing
behind.

`DATASETS` is a plain dict of `Dataset` entries: tests (and users with an internal HTTP server) replace or
add entries, e.g. ``monkeypatch.setitem(DATASETS, "imdb", replace(DATASETS["imdb"], url=...))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ulmfit._io import atomic_dir, progress
from ulmfit.data.limits import ArchiveBudget
from ulmfit.errors import UlmfitError

MARKER = ".ulmfit-complete"
_CHUNK = 1 << 20  # download and hash in 1 MiB blocks
# tarfile's "data" filter (Python >= 3.10.12 / 3.11.4) refuses what _check_member refuses and more; older
# Pythons extract without it and rely on _check_member alone.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FilterError = getattr(tarfile, "FilterError", ())


@dataclass(frozen=True)
class Dataset:
    name: str
    url: str  # canonical URL; its last component is the archive's file name in mirrors
    checksums: tuple[str, ...]  # accepted digests, "sha256:<hex>" or "md5:<hex>"; any one matching is enough
    root: str  # folder inside the archive that get_dataset returns
    expect: tuple[str, ...]  # paths under `root` that must exist after extraction
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


DATASETS: dict[str, Dataset] = {
    "imdb": Dataset(
        name="imdb",
        url="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        checksums=(
            # The local mirror's copy (no *Bow.feat files).
            "sha256:de33cba47b8137e95a8bedd3ad3ceb7cae3758f513c93832cd99168cb2a165e3",
            # The official archive (84,125,825 bytes), as published by torchtext and paddle.
            "md5:7c2ac02c03563afcf9b574c7e56c153a",
        ),
        root="aclImdb",
        expect=("train/pos", "train/neg", "train/unsup", "test/pos", "test/neg"),
        description="IMDb movie reviews (aclImdb v1): 25,000 train / 25,000 test (pos, neg) / 50,000 unsup",
    ),
    "imdb-sample": Dataset(
        name="imdb-sample",
        url="https://s3.amazonaws.com/fast-ai-sample/imdb_sample.tgz",
        checksums=(
            "sha256:c0ca9a5f12d626c0da0d264f9465c338a4570c8fe5f4eb0a731842cf747a0ce6",  # the local mirror's copy
            "md5:0842e61a9867caa2e6fbdb14fa703d61",  # 571,827 bytes, as listed in fastai's download_checks.py
        ),
        root="imdb_sample",
        expect=("texts.csv",),
        description="fastai's IMDB_SAMPLE: 1,000 reviews in texts.csv (label, text, is_valid)",
    ),
    # fastai's pretrained WikiText-103 AWD-LSTM language models. No digest is published for them (fastai's
    # download_checks.py has none), so they are accepted when the expected files are there; the sha256 is
    # printed so a user can pin it.
    "wt103-fwd": Dataset(
        name="wt103-fwd",
        url="https://s3.amazonaws.com/fast-ai-modelzoo/wt103-fwd.tgz",
        checksums=(),
        root="wt103-fwd",
        expect=("lstm_fwd.pth", "itos_wt103.pkl"),
        description="fastai's WikiText-103 AWD-LSTM, forward (lstm_fwd.pth + itos_wt103.pkl)",
    ),
    "wt103-bwd": Dataset(
        name="wt103-bwd",
        url="https://s3.amazonaws.com/fast-ai-modelzoo/wt103-bwd.tgz",
        checksums=(),
        root="wt103-bwd",
        expect=("lstm_bwd.pth", "itos_wt103.pkl"),
        description="fastai's WikiText-103 AWD-LSTM, backward (lstm_bwd.pth + itos_wt103.pkl)",
    ),
}
# Other names for registered datasets.
ALIASES = {"wt103": "wt103-fwd"}


def data_dir() -> Path:
    """The dataset cache: $ULMFIT_DATA, default ./data."""
    return Path(os.environ.get("ULMFIT_DATA") or "data")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _lookup(name: str) -> Dataset:
    ds = DATASETS.get(ALIASES.get(name, name))
    if ds is None:
        raise UlmfitError(f"unknown dataset {name!r} (registered: {', '.join(sorted(DATASETS))})",
                          hint="use a registered name, or give a path to a file or folder")
    return ds


def cached_path(name: str) -> Path | None:
    """The extracted dataset if it is complete in the cache and its recorded digest is accepted, else None
    (never downloads, never raises for a mismatch: `get_dataset` says what is wrong)."""
    ds = _lookup(name)
    home = data_dir() / ds.name
    try:
        hit = _cache_hit(ds, home, pinned=False)
    except UlmfitError:
        return None
    return home / ds.root if hit and (home / ds.root).exists() else None


def get_dataset(name: str) -> Path:
    """Local path of the extracted dataset: from the cache, a mirror or the network (see module docstring)."""
    ds = _lookup(name)
    home = data_dir() / ds.name
    if _cache_hit(ds, home, pinned=False) and (home / ds.root).exists():
        return home / ds.root
    for archive in _local_archives(ds):
        if archive.is_file():
            _log(f"{ds.name}: using {archive}")
            _extract(archive, ds, home, _verify(archive, ds, origin=str(archive)))
            return home / ds.root
    with _download(ds) as (archive, digests):
        _extract(archive, ds, home, digests)
    return home / ds.root


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
URL_SCHEMES = ("http://", "https://", "file://")


def is_archive_ref(ref: str | Path) -> bool:
    """True for an http(s):// or file:// URL, or a path to a .tar.gz / .tgz / .tar file."""
    path = str(ref).partition("#")[0]
    return path.startswith(URL_SCHEMES) or (path.endswith(ARCHIVE_SUFFIXES) and Path(path).is_file())


def get_archive(ref: str | Path) -> Path:
    """A shared archive (a model bundle packed with `tar czf`), extracted once into $ULMFIT_DATA/models/.

    `ref` is an http(s):// or file:// URL or a local .tar.gz/.tgz/.tar path; a `#sha256=<hex>` suffix pins the
    archive's digest (as pip does), checked before anything is extracted and, against the digest recorded then,
    on every later run. Extraction is as safe and atomic as a dataset's; a URL is fetched once (its cache entry
    is keyed by the URL), a local file whenever its content changes (keyed by its sha256). Returns the extracted
    folder.
    """
    ref, _, pin = str(ref).partition("#")
    checksums: tuple[str, ...] = ()
    if pin:
        algo, _, hexdigest = pin.partition("=")
        if algo not in ("sha256", "md5") or not hexdigest:
            raise UlmfitError(f"cannot read the digest {pin!r} of {ref}", hint="write it as #sha256=<hex>")
        checksums = (f"{algo}:{hexdigest.lower()}",)
    local = None if ref.startswith(URL_SCHEMES) else Path(ref)
    if local is not None and not local.is_file():
        raise UlmfitError(f"no archive at {local}", hint="pass a .tar.gz file, or an http(s):// or file:// URL")
    stem = PurePosixPath(ref).name
    for suffix in ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    # The key leaves the pin out, so every pin of one URL meets the one cached copy and is checked against it.
    local_digests = _digests(local) if local is not None else None
    key = (local_digests["sha256"] if local_digests else hashlib.sha256(ref.encode()).hexdigest())[:12]
    ds = Dataset(name=f"models/{stem or 'archive'}-{key}", url=ref if local is None else local.resolve().as_uri(),
                 checksums=checksums, root=".", expect=(), description=f"shared archive {ref}")
    home = data_dir() / ds.name
    if local_digests is not None:
        _check_digests(local_digests, ds, origin=str(local))
    if _cache_hit(ds, home, pinned=bool(checksums)):
        return home
    if local_digests is not None:
        _extract(local, ds, home, local_digests)
    else:
        with _download(ds, hint="check the URL, or download it by hand and pass the file's path") as (archive,
                                                                                                      digests):
            _extract(archive, ds, home, digests)
    return home


def _local_archives(ds: Dataset) -> list[Path]:
    mirror = os.environ.get("ULMFIT_MIRROR")
    found = [Path(mirror) / ds.filename] if mirror else []
    return found + [data_dir() / ds.filename]


# ---------------------------------------------------------------------------------------------- verify

def _digests(path: Path) -> dict[str, str]:
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            for h in hashes.values():
                h.update(block)
    return {k: h.hexdigest() for k, h in hashes.items()}


def _accepted(got: dict[str, str], checksums: tuple[str, ...]) -> bool:
    for accepted in checksums:
        algo, _, hexdigest = accepted.partition(":")
        if got.get(algo) == hexdigest.lower():
            return True
    return False


def _expected_vs_found(got: dict[str, str], checksums: tuple[str, ...]) -> str:
    if len(checksums) == 1:
        algo, _, want = checksums[0].partition(":")
        return f"expected {algo} {want.lower()}, found {algo} {got.get(algo, 'none recorded')}"
    return f"found sha256 {got.get('sha256', 'none recorded')}, which is not an accepted copy"


def _check_digests(got: dict[str, str], ds: Dataset, origin: str) -> None:
    if not ds.checksums:
        _log(f"{ds.name}: no published digest to check; sha256 {got['sha256']}")
    elif not _accepted(got, ds.checksums):
        raise UlmfitError(f"checksum mismatch for {ds.filename} from {origin}: {_expected_vs_found(got, ds.checksums)}",
                          hint="the file is damaged or not the expected archive (or the #sha256= pin is wrong); "
                               "delete it and get it again, or fix the pin")


def _verify(path: Path, ds: Dataset, origin: str) -> dict[str, str]:
    """The archive's digests, once they are known to be accepted (or there is nothing to check them against)."""
    got = _digests(path)
    _check_digests(got, ds, origin)
    return got


def _recorded_digests(home: Path) -> dict[str, str] | None:
    """The digests the marker recorded at extraction; None for a marker written before they were recorded."""
    try:
        marker = json.loads((home / MARKER).read_text())
    except (OSError, ValueError):
        return None
    got = {algo: marker[algo] for algo in ("sha256", "md5") if isinstance(marker, dict) and marker.get(algo)}
    return got or None


def _cache_hit(ds: Dataset, home: Path, *, pinned: bool) -> bool:
    """True when `home` is complete and came from an accepted archive; a mismatch is an error, not a miss, so a
    changed pin or changed content is never fetched over silently.

    A marker without recorded digests (written by an older version) is trusted for a registered dataset, which
    was verified against the registry when extracted, but not for a pin, which it may never have been checked
    against: that copy is fetched again.
    """
    if not (home / MARKER).is_file():
        return False
    if not ds.checksums:
        return True
    recorded = _recorded_digests(home)
    if recorded is None:
        if pinned:
            _log(f"{ds.name}: the cached copy has no recorded digest to check the pin against; getting it again")
        return not pinned
    if _accepted(recorded, ds.checksums):
        return True
    fix = (f"the cached copy came from {ds.url}: if the digest found is right, fix the pin; else remove {home} "
           "to fetch it again") if pinned else f"remove {home} to fetch an accepted copy again"
    raise UlmfitError(f"checksum mismatch for {ds.filename} cached in {home}: "
                      f"{_expected_vs_found(recorded, ds.checksums)}", hint=fix)


# ---------------------------------------------------------------------------------------------- download

def _read_blocks(response) -> Iterator[bytes]:
    # Whole 1 MiB blocks (the last one shorter), so the progress bar counts MiB.
    while True:
        block = response.read(_CHUNK)
        if not block:
            return
        while len(block) < _CHUNK:
            more = response.read(_CHUNK - len(block))
            if not more:
                break
            block += more
        yield block


@contextlib.contextmanager
def _download(ds: Dataset, hint: str | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """Download into a temporary file in the cache, verify it, yield it and its digests; it is deleted on exit
    either way."""
    cache = data_dir()
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{ds.filename}.download-", dir=cache)
    tmp = Path(tmp_name)
    hint = hint or (f"set ULMFIT_MIRROR to a folder holding {ds.filename}, or download {ds.url} by hand and "
                    f"place it at {cache / ds.filename}")
    try:
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(ds.url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                got = 0
                blocks = progress(_read_blocks(response), total=-(-total // _CHUNK) if total else None,
                                  desc=f"download {ds.filename}", unit="MiB")
                for block in blocks:
                    f.write(block)
                    got += len(block)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise UlmfitError(f"cannot download {ds.name} from {ds.url}: {reason}", hint=hint) from None
        if total is not None and got != total:
            raise UlmfitError(f"download of {ds.name} was interrupted: got {got:,} of {total:,} bytes", hint=hint)
        yield tmp, _verify(tmp, ds, origin=ds.url)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ---------------------------------------------------------------------------------------------- extract

def _check_member(m: tarfile.TarInfo, archive: str) -> None:
    path = PurePosixPath(m.name)
    bad = None
    if m.name.startswith(("/", "\\")) or (len(m.name) > 1 and m.name[1] == ":"):
        bad = "an absolute path"
    elif ".." in path.parts:
        bad = "a '..' component"
    elif m.issym() or m.islnk():
        target = PurePosixPath(m.linkname)
        # A symlink is relative to its folder; a hard link names another member from the archive root.
        resolved = (path.parent / target) if m.issym() else target
        depth = 0
        for part in resolved.parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                break
        if target.is_absolute() or depth < 0:
            bad = f"a link pointing outside the archive ({m.linkname})"
    elif m.isdev():
        bad = "a device file"
    if bad:
        raise UlmfitError(f"refusing to extract {archive}: member {m.name!r} has {bad}",
                          hint="the archive is malicious or damaged; get it from the canonical URL")


def _extract(archive: Path, ds: Dataset, home: Path, digests: dict[str, str]) -> None:
    """Extract into a temporary sibling of `home`, check it, mark it complete (recording the archive's
    `digests`), rename it into place."""
    t0 = time.perf_counter()
    _log(f"{ds.name}: extracting {ds.filename}")
    budget = ArchiveBudget(ds.filename)
    with atomic_dir(home) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared like any folder
        try:
            with tarfile.open(archive, "r:*") as tar:
                def members() -> Iterator[tarfile.TarInfo]:
                    for m in tar:  # sequential: one pass over the compressed stream
                        budget.member()
                        # tarfile writes exactly the header's size (a shorter stream is an error), so the header
                        # is what lands on disk: count it before the member is written.
                        budget.take(m.size)
                        _check_member(m, ds.filename)
                        yield m

                tar.extractall(tmp, members=progress(members(), desc=f"extract {ds.filename}", unit="file"),
                               **_DATA_FILTER)
        except _FilterError as e:  # belt and braces: the stdlib "data" filter refused a member
            raise UlmfitError(f"refusing to extract {ds.filename}: {e}", hint="the archive is malicious") from None
        except (tarfile.TarError, EOFError) as e:
            raise UlmfitError(f"cannot extract {ds.filename}: {e}", hint="the archive is damaged; delete it "
                              "and get it again") from None
        top = [p for p in ds.expect if (tmp / p).exists()]
        if not (tmp / ds.root).exists() and top and len(top) == len(ds.expect):
            # Archived without its top folder: put the files where get_dataset says they are.
            entries = list(tmp.iterdir())
            (tmp / ds.root).mkdir()
            for e in entries:
                e.rename(tmp / ds.root / e.name)
        missing = [p for p in (ds.root, *(f"{ds.root}/{e}" for e in ds.expect)) if not (tmp / p).exists()]
        if missing:
            raise UlmfitError(f"{ds.filename} does not hold the expected {', '.join(missing)}",
                              hint="the archive is not the expected dataset; delete it and get it again")
        (tmp / MARKER).write_text(json.dumps({"name": ds.name, "url": ds.url, "root": ds.root,
                                              "sha256": digests["sha256"], "md5": digests["md5"]}) + "\n")
    _log(f"{ds.name}: ready in {os.path.normpath(home / ds.root)} ({time.perf_counter() - t0:.1f}s)")
