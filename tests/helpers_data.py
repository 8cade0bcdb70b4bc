"""Tiny corpora, tarballs and a local HTTP server for the data-layer tests."""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ulmfit.data.corpus import Corpus


def write_imdb_tree(root: Path, n_train: int = 4, n_test: int = 3, n_unsup: int = 2) -> Path:
    """An aclImdb-shaped folder: train/{neg,pos,unsup}, test/{neg,pos}, files named <id>_<rating>.txt, plus
    the extra files the real archive has (README, imdb.vocab, urls_*.txt) that are not documents."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README").write_text("Large Movie Review Dataset v1.0\n")
    (root / "imdb.vocab").write_text("the\nand\n")
    (root / "imdbEr.txt").write_text("0.1\n0.2\n")
    for split, n in (("train", n_train), ("test", n_test)):
        for label in ("neg", "pos"):
            d = root / split / label
            d.mkdir(parents=True)
            for i in range(n):
                # ids 0, 5, 10, 15: natural order differs from string order ("10_..." < "5_...").
                (d / f"{i * 5}_{7 if label == 'pos' else 2}.txt").write_text(f"{split} {label} review number {i}")
        (root / split / "urls_pos.txt").write_text("http://example.com\n")
    d = root / "train" / "unsup"
    d.mkdir()
    for i in range(n_unsup):
        (d / f"{i}_0.txt").write_text(f"unlabeled review {i}")
    return root


def tar_folder(folder: Path, out: Path, arcname: str | None = None) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=arcname or folder.name)
    return out


def tar_bytes(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz in memory with the given members (names used verbatim, so '../evil' stays '../evil')."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def toy_archive() -> bytes:
    """A small dataset archive: toy/train/{neg,pos}/*.txt and toy/test/{neg,pos}/*.txt."""
    files = {}
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            for i in range(3):
                files[f"toy/{split}/{label}/{i}_1.txt"] = f"{split} {label} {i} some words here".encode()
    return tar_bytes(files)


class Server:
    """An HTTP server on 127.0.0.1 in a thread. `files[path] = bytes`; paths in `truncate` send the full
    Content-Length but only half the body, then close. `hits` counts requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@contextlib.contextmanager
def serve() -> Iterator[Server]:
    s = Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


def closed_port_url(path: str = "/x.tgz") -> str:
    """A URL on 127.0.0.1 where nothing listens: connection refused, the 'no network' case."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def rows(corpus: Corpus, split: str) -> list[tuple[str, str | None]]:
    part = corpus.select(split)
    return list(zip(part.texts, part.labels))
