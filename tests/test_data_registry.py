"""The dataset registry against a local HTTP server: download, cache, mirror, and every failure leaving
nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from helpers_data import closed_port_url, serve, sha256, tar_bytes, toy_archive
from ulmfit.cli.main import main
from ulmfit.data import load_corpus, registry
from ulmfit.data.registry import DATASETS, MARKER, Dataset, get_archive, get_dataset
from ulmfit.errors import UlmfitError


def register(monkeypatch: pytest.MonkeyPatch, url: str, data: bytes, **kw) -> Dataset:
    ds = Dataset(name="toy", url=url, checksums=(sha256(data),), root="toy",
                 expect=("train/pos", "train/neg", "test/pos"), description="toy corpus")
    ds = replace(ds, **kw)
    monkeypatch.setitem(DATASETS, "toy", ds)
    return ds


def cache() -> Path:
    return Path(os.environ["ULMFIT_DATA"])


def leftovers() -> list[str]:
    """Everything in the cache (hidden files included): must be empty after a failure."""
    root = cache()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_download_verify_extract_then_cache_hit(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        register(monkeypatch, srv.url("/toy.tgz"), data)
        assert main(["data", "get", "toy"]) == 0
        where = Path(capsys.readouterr().out.strip())
        assert where == cache() / "toy" / "toy"
        assert sorted(p.name for p in (where / "train" / "pos").iterdir()) == ["0_1.txt", "1_1.txt", "2_1.txt"]
        assert (cache() / "toy" / MARKER).is_file()
        assert not [p for p in cache().iterdir() if p.name.startswith(".")]  # no temp files left
        # Second run: answered from the cache, no request made.
        assert main(["data", "get", "toy"]) == 0
        assert Path(capsys.readouterr().out.strip()) == where
        assert srv.hits == {"/toy.tgz": 1}
        c = load_corpus("toy", valid_pct=0)
        assert c.name == "toy" and c.summary()["test"] == {"documents": 6, "labels": {"neg": 3, "pos": 3}}
        assert srv.hits == {"/toy.tgz": 1}


def test_half_extracted_folder_is_not_a_cache_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        register(monkeypatch, srv.url("/toy.tgz"), data)
        (cache() / "toy" / "toy" / "train").mkdir(parents=True)  # a crash mid-extraction, no marker
        path = get_dataset("toy")
        assert srv.hits == {"/toy.tgz": 1}
        assert (path / "test" / "neg" / "2_1.txt").is_file()


def test_checksum_mismatch_leaves_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        register(monkeypatch, srv.url("/toy.tgz"), data, checksums=("sha256:" + "0" * 64,))
        assert main(["data", "get", "toy"]) == 1
        err = capsys.readouterr().err
        assert "checksum mismatch for toy.tgz" in err and sha256(data)[7:] in err
    assert leftovers() == []


def test_md5_digests_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        register(monkeypatch, srv.url("/toy.tgz"), data,
                 checksums=("sha256:" + "0" * 64, "md5:" + hashlib.md5(data).hexdigest()))
        assert get_dataset("toy").is_dir()


def test_interrupted_transfer_leaves_nothing(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_archive() + os.urandom(4096)  # big enough that half of it is a clean cut
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        srv.truncate.add("/toy.tgz")
        register(monkeypatch, srv.url("/toy.tgz"), data)
        assert main(["data", "get", "toy"]) == 1
        err = capsys.readouterr().err
        assert "download of toy was interrupted" in err and f"of {len(data):,} bytes" in err
        assert "ULMFIT_MIRROR" in err
    assert leftovers() == []


def test_network_failure_without_mirror_says_how_to_fix(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    register(monkeypatch, closed_port_url("/toy.tgz"), b"")
    assert main(["data", "get", "toy"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: cannot download toy from http://127.0.0.1:")
    assert err[1].startswith("hint: set ULMFIT_MIRROR to a folder holding toy.tgz")
    assert str(cache() / "toy.tgz") in err[1]
    assert leftovers() == []


def test_http_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with serve() as srv:
        register(monkeypatch, srv.url("/missing.tgz"), b"")
        assert main(["data", "get", "toy"]) == 1
        assert "Not Found" in capsys.readouterr().err
    assert leftovers() == []


def test_mirror_is_used_without_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = toy_archive()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy.tgz").write_bytes(data)
    register(monkeypatch, closed_port_url("/some/where/toy.tgz"), data)  # any network use would fail
    monkeypatch.setenv("ULMFIT_MIRROR", str(mirror))
    path = get_dataset("toy")
    assert (path / "train" / "neg" / "0_1.txt").read_text() == "train neg 0 some words here"
    assert (mirror / "toy.tgz").read_bytes() == data  # the mirror is read, never moved


def test_archive_placed_by_hand_in_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    data = toy_archive()
    cache().mkdir(parents=True)
    (cache() / "toy.tgz").write_bytes(data)
    register(monkeypatch, closed_port_url("/toy.tgz"), data)
    assert get_dataset("toy").is_dir()


def test_damaged_mirror_copy_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = toy_archive()
    (tmp_path / "toy.tgz").write_bytes(data[:-10])
    register(monkeypatch, closed_port_url("/toy.tgz"), data)
    monkeypatch.setenv("ULMFIT_MIRROR", str(tmp_path))
    with pytest.raises(UlmfitError, match="checksum mismatch"):
        get_dataset("toy")
    assert leftovers() == []


@pytest.mark.parametrize("members,links", [
    ({"toy/train/pos/1.txt": b"ok", "../evil": b"pwned"}, {}),
    ({"toy/train/pos/1.txt": b"ok", "toy/../../evil": b"pwned"}, {}),
    ({"/tmp/evil-ulmfit-test": b"pwned"}, {}),
    ({"toy/train/pos/1.txt": b"ok"}, {"toy/train/link": "../../../etc/passwd"}),
    ({"toy/train/pos/1.txt": b"ok"}, {"toy/train/abs": "/etc/passwd"}),
])
def test_malicious_members_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str], members: dict, links: dict) -> None:
    data = tar_bytes(members, links)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy.tgz").write_bytes(data)
    register(monkeypatch, closed_port_url("/toy.tgz"), data)
    monkeypatch.setenv("ULMFIT_MIRROR", str(mirror))
    assert main(["data", "get", "toy"]) == 1
    err = capsys.readouterr().err
    assert "refusing to extract toy.tgz" in err
    assert leftovers() == []
    assert not (cache().parent / "evil").exists() and not Path("/tmp/evil-ulmfit-test").exists()


def test_archive_without_expected_folders_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = tar_bytes({"toy/train/pos/1.txt": b"ok"})  # no train/neg, test/pos
    (tmp_path / "toy.tgz").write_bytes(data)
    register(monkeypatch, closed_port_url("/toy.tgz"), data)
    monkeypatch.setenv("ULMFIT_MIRROR", str(tmp_path))
    with pytest.raises(UlmfitError, match="does not hold the expected toy/train/neg, toy/test/pos"):
        get_dataset("toy")
    assert leftovers() == []


def test_unknown_dataset_lists_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "get", "imbd"]) == 1
    err = capsys.readouterr().err
    assert "unknown dataset 'imbd'" in err and "imdb, imdb-sample" in err


def test_builtin_entries_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    imdb = DATASETS["imdb"]
    assert imdb.url == "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    assert "sha256:de33cba47b8137e95a8bedd3ad3ceb7cae3758f513c93832cd99168cb2a165e3" in imdb.checksums
    assert DATASETS["imdb-sample"].filename == "imdb_sample.tgz"
    assert registry.ALIASES["wt103"] in DATASETS
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "imdb-sample" in out and "25,000 train" in out


# ---------------------------------------------------------------------------------------------- pins

def _pin(data: bytes) -> str:
    return "#sha256=" + sha256(data)[len("sha256:"):]


def _one_line(e: pytest.ExceptionInfo[UlmfitError]) -> str:
    assert "\n" not in e.value.message and "\n" not in (e.value.hint or "")
    return e.value.message


def test_a_pinned_url_cached_under_another_digest_is_refused() -> None:
    old, new = toy_archive(), tar_bytes({"toy/train/pos/1.txt": b"changed upstream"})
    with serve() as srv:
        srv.files["/toy.tgz"] = old
        url = srv.url("/toy.tgz")
        home = get_archive(url + _pin(old))
        srv.files["/toy.tgz"] = new  # the content behind the URL changes; the cache still holds the old copy
        with pytest.raises(UlmfitError) as e:
            get_archive(url + _pin(new))
        msg = _one_line(e)
        assert msg.startswith("checksum mismatch for toy.tgz cached in ")
        assert f"expected sha256 {_pin(new)[8:]}, found sha256 {_pin(old)[8:]}" in msg
        assert f"remove {home} to fetch it again" in e.value.hint and "fix the pin" in e.value.hint
        # the right pin still passes on the next run, from the cache
        assert get_archive(url + _pin(old)) == home
        assert srv.hits == {"/toy.tgz": 1}
        assert (home / "toy" / "train" / "pos" / "0_1.txt").is_file()


def test_a_url_fetched_without_a_pin_is_checked_when_a_pin_is_given() -> None:
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        url = srv.url("/toy.tgz")
        home = get_archive(url)  # no pin: accepted, and its digest recorded
        marker = json.loads((home / MARKER).read_text())
        assert marker["sha256"] == sha256(data)[7:] and marker["md5"] == hashlib.md5(data).hexdigest()
        with pytest.raises(UlmfitError, match=f"expected sha256 {'0' * 64}, found sha256 {sha256(data)[7:]}"):
            get_archive(url + "#sha256=" + "0" * 64)
        with pytest.raises(UlmfitError, match="expected md5 0123"):
            get_archive(url + "#md5=0123")
        assert get_archive(url + _pin(data)) == home
        assert get_archive(url + "#md5=" + hashlib.md5(data).hexdigest().upper()) == home
        assert srv.hits == {"/toy.tgz": 1}


def test_a_cached_local_archive_is_checked_against_its_pin(tmp_path: Path) -> None:
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(toy_archive())
    home = get_archive(archive)
    with pytest.raises(UlmfitError, match=f"checksum mismatch for toy.tar.gz from {archive}: expected sha256 0+,"):
        get_archive(f"{archive}#sha256={'0' * 64}")
    assert get_archive(f"{archive}{_pin(archive.read_bytes())}") == home


def test_a_cache_entry_without_recorded_digests_is_fetched_again_for_a_pin() -> None:
    # A marker written before digests were recorded cannot vouch for a pin: the archive is fetched and checked.
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        url = srv.url("/toy.tgz")
        home = get_archive(url)
        (home / MARKER).write_text(json.dumps({"name": "old", "url": url, "root": "."}) + "\n")
        assert get_archive(url) == home and srv.hits == {"/toy.tgz": 1}  # no pin: nothing to check
        assert get_archive(url + _pin(data)) == home and srv.hits == {"/toy.tgz": 2}
        assert json.loads((home / MARKER).read_text())["sha256"] == sha256(data)[7:]
        srv.files["/toy.tgz"] = b"other"
        (home / MARKER).write_text(json.dumps({"name": "old", "url": url, "root": "."}) + "\n")
        with pytest.raises(UlmfitError, match="checksum mismatch for toy.tgz from http"):
            get_archive(url + _pin(data))


def test_a_registered_dataset_cached_from_a_copy_no_longer_accepted(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        register(monkeypatch, srv.url("/toy.tgz"), data)
        assert main(["data", "get", "toy"]) == 0
        register(monkeypatch, srv.url("/toy.tgz"), data, checksums=("sha256:" + "1" * 64,))
        capsys.readouterr()
        assert main(["data", "get", "toy"]) == 1
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("error: checksum mismatch for toy.tgz cached in ") and len(err) == 2
        assert f"found sha256 {sha256(data)[7:]}" in err[0] and err[1].endswith("to fetch an accepted copy again")
        assert main(["data", "list"]) == 0
        toy = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("toy "))
        assert toy[1] == "-"  # not usable, so not listed as cached
        assert srv.hits == {"/toy.tgz": 1}


def test_a_registered_dataset_cached_by_an_older_version_is_still_a_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered datasets were verified against the registry when extracted; an old marker keeps working offline.
    data = toy_archive()
    with serve() as srv:
        srv.files["/toy.tgz"] = data
        register(monkeypatch, srv.url("/toy.tgz"), data)
        path = get_dataset("toy")
        (cache() / "toy" / MARKER).write_text(json.dumps({"name": "toy", "url": "x", "root": "toy"}) + "\n")
        assert get_dataset("toy") == path and srv.hits == {"/toy.tgz": 1}


# ---------------------------------------------------------------------------------------------- limits

@pytest.mark.parametrize("env, value, message", [
    ("ULMFIT_MAX_ARCHIVE_MEMBERS", "5", "error: refusing toy.tgz: it has more than 5 members"),
    ("ULMFIT_MAX_ARCHIVE_BYTES", "100", "error: refusing toy.tgz: it unpacks to more than 100 bytes"),
])
def test_an_archive_over_a_limit_is_refused_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str], env: str,
                                                               value: str, message: str) -> None:
    data = toy_archive()  # 12 members of 30 bytes or so
    (tmp_path / "toy.tgz").write_bytes(data)
    register(monkeypatch, closed_port_url("/toy.tgz"), data)
    monkeypatch.setenv("ULMFIT_MIRROR", str(tmp_path))
    monkeypatch.setenv(env, value)
    assert main(["data", "get", "toy"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2] == message and err[-1].startswith(f"hint: if you trust the archive, raise the limit, e.g. {env}=")
    assert leftovers() == []
    monkeypatch.delenv(env)
    assert get_dataset("toy").is_dir()  # the defaults are generous


def test_a_bad_limit_setting_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_archive()
    (tmp_path / "toy.tgz").write_bytes(data)
    register(monkeypatch, closed_port_url("/toy.tgz"), data)
    monkeypatch.setenv("ULMFIT_MIRROR", str(tmp_path))
    monkeypatch.setenv("ULMFIT_MAX_ARCHIVE_BYTES", "lots")
    assert main(["data", "get", "toy"]) == 1
    assert "ULMFIT_MAX_ARCHIVE_BYTES must be a positive number of bytes such as 4G or 500M, got 'lots'" in \
        capsys.readouterr().err
    assert leftovers() == []
