"""`serve`: classifiers behind an HTTP JSON API, requests batched together on the fly.

    POST /predict   {"text": "A gem."}  or  {"texts": ["A gem.", "Two hours I want back."]}
                    -> {"predictions": [{"label": "pos", "probs": {"neg": 0.03, "pos": 0.97}}, ...]}  (input order)
    GET  /health    -> {"status": "ok"}
    GET  /info      -> labels, each model (path, direction, arch, n-gram weight, ...), versions, limits

Several models are ensembled (the mean of their probabilities), as `predict` and `evaluate` do. Every response row
is built by `predict_rows`, the one place that turns model output into what a client reads.

Why Starlette on uvicorn: the API is three JSON routes, so a small ASGI toolkit (routing, requests, responses and
a test client; nothing else to learn) on the reference ASGI server (HTTP/1.1 keep-alive, request limits, graceful
shutdown on SIGTERM) is all it needs. Both are small, widely used and actively maintained; they are the `serve`
extra (`pip install 'ulmfit[serve]'`), so the other commands never need them.

Dynamic batching: `ulmfit.serve_batcher`.

Limits: a body over `max_request_bytes`, more than `max_texts` texts or a text over `max_chars` characters is
refused with 413 (`predict` cuts long texts with a warning on stderr, which a client would never see); malformed
JSON is 400, a wrong shape or type 422, an unknown route 404, each with {"error": "..."}. Requests only ever carry
texts: nothing a client sends names a file. A model that fails on a batch answers 500 to its requests and the
server keeps serving.

This module is on the `ulmfit --help` path (the CLI reads the defaults below), so starlette, uvicorn and torch are
imported inside the functions that need them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import json
import logging
import re
import signal
import socket
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ulmfit.classify.predict import MAX_CHARS, check_max_chars
from ulmfit.errors import UlmfitError
from ulmfit.serve_batcher import Batcher, predict_rows

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ulmfit.classify.classifier import Classifier

logger = logging.getLogger("ulmfit.serve")

HOST = "127.0.0.1"  # this machine only: exposing a model to a network is a choice to make with --host 0.0.0.0
PORT = 8000
GRACE_S = 20  # after SIGTERM, requests in flight get this long to finish (a slow client cannot hold shutdown open)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how requests are batched."""

    max_batch: int = 64  # texts per model call, gathered from several requests
    max_wait_ms: float = 5.0  # how long the first waiting request waits for others to join its batch
    max_texts: int = 256  # texts per request
    max_chars: int = MAX_CHARS  # characters per text (0: no limit); a longer text is refused, not cut
    max_request_bytes: int = 4 << 20  # request body: a few hundred reviews or a few long documents

    def check(self) -> None:
        for name in ("max_batch", "max_texts", "max_request_bytes"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UlmfitError(f"{flag} must be at least 1, not {getattr(self, name)}",
                                  hint=f"e.g. {flag} {getattr(Limits, name)}")
        if not self.max_wait_ms >= 0:
            raise UlmfitError(f"--max-wait-ms must be 0 or more, not {self.max_wait_ms}",
                              hint="0 runs each request as soon as the model is free")
        check_max_chars(self.max_chars)


# --------------------------------------------------------------------------------------------- response rows


def describe(models: list[Classifier], limits: Limits) -> dict[str, Any]:
    """What GET /info answers: enough to tell which models answer and how."""
    from ulmfit._io import versions

    def one(m: Classifier) -> dict[str, Any]:
        a, c = m.arch, m.config
        return {"path": str(m.path), "task": m.task.kind, "direction": m.direction, "labels": m.labels,
                "arch": {"name": a.get("name", "awd_lstm"), **{k: a[k] for k in ("emb_sz", "n_hid", "n_layers")
                                                                 if k in a}},
                "vocab_size": len(m.vocab.itos), "preset": c.preset, "seq_len": c.seq_len, "max_len": c.max_len,
                "temperature": m.temperature, "ngram_weight": m.ngram_weight, "int8": m.quantized,
                "device": str(m.device)}

    v = versions()
    return {"labels": models[0].labels, "models": [one(m) for m in models],
            "versions": {k: v[k] for k in ("ulmfit", "torch", "python") if k in v}, "limits": asdict(limits)}


# --------------------------------------------------------------------------------------------- the app


class _Refused(Exception):
    """A request that cannot be answered: the status and the message the client reads as {"error": ...}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


_SHAPE = 'send a JSON object {"text": "..."} or {"texts": ["...", ...]}'
# JSON can escape half of a surrogate pair ("\ud800") alone; it is no character, and the tokenizers cannot encode it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


async def _read_body(request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit` bytes: from Content-Length when the client
    sends one, else while it streams in."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"the request body has {int(declared):,} bytes; the limit is {limit:,} "
                       "(--max-request-bytes)")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _Refused(413, f"the request body is over the limit of {limit:,} bytes (--max-request-bytes)")
    except ClientDisconnect:
        raise _Refused(400, "the client disconnected before sending the whole body") from None
    return bytes(body)


def parse_texts(body: bytes, limits: Limits) -> list[str]:
    """The texts a /predict body asks about, or _Refused saying what is wrong with it."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested too deep, a number too long
        raise _Refused(400, f"the body is not valid JSON ({type(e).__name__}: {str(e)[:200]}); {_SHAPE}") from None
    if not isinstance(doc, dict):
        raise _Refused(422, f"the body is {_JSON_TYPES.get(type(doc), 'not an object')}; {_SHAPE}")
    unknown = sorted(set(doc) - {"text", "texts"})
    if unknown:
        raise _Refused(422, f"unknown field {unknown[0][:100]!r}; {_SHAPE}")
    if len(doc) != 1:
        raise _Refused(422, f"no text given; {_SHAPE}" if not doc else f'both "text" and "texts" given; {_SHAPE}')
    if "text" in doc:
        texts, where = [doc["text"]], lambda i: '"text"'
    else:
        texts, where = doc["texts"], lambda i: f"texts[{i}]"
        if not isinstance(texts, list):
            raise _Refused(422, f'"texts" is {_JSON_TYPES.get(type(texts))}, not a list of strings')
        if not texts:
            raise _Refused(422, '"texts" is empty; send at least one text')
        if len(texts) > limits.max_texts:
            raise _Refused(413, f"{len(texts):,} texts in one request; the limit is {limits.max_texts:,} "
                           "(--max-texts): split them over several requests")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise _Refused(422, f"{where(i)} is {_JSON_TYPES.get(type(t))}, not a string")
        if limits.max_chars and len(t) > limits.max_chars:
            raise _Refused(413, f"{where(i)} has {len(t):,} characters; the limit is {limits.max_chars:,} "
                           "(--max-chars)")
    # U+FFFD, as ulmfit reads bytes that are not UTF-8 (and as a browser encodes such a string)
    return [t if t.isascii() else _LONE_SURROGATE.sub("\ufffd", t) for t in texts]


def create_app(models: list[Classifier], limits: Limits = Limits()) -> Starlette:
    """The ASGI app answering for `models`. Its lifespan starts the model worker and, at shutdown, lets it answer
    the requests already queued."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    limits.check()
    batcher = Batcher(models, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms)
    info = describe(models, limits)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def predict(request):
        try:
            texts = parse_texts(await _read_body(request, limits.max_request_bytes), limits)
        except _Refused as e:
            return error(e.status, e.message)
        try:
            rows = await asyncio.wrap_future(batcher.submit(texts))
        except Exception:  # logged with its traceback by the worker
            return error(500, "the model failed on this request; the server log has the details")
        return JSONResponse({"predictions": rows})

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def info_route(request):
        return JSONResponse(info)

    async def http_error(request, exc: HTTPException):  # unknown route (404), wrong method (405)
        what = {404: f"no such route: {request.url.path[:200]}; the routes are POST /predict, GET /health, "
                     "GET /info", 405: f"{request.method} is not allowed on {request.url.path}"}
        return error(exc.status_code, what.get(exc.status_code, exc.detail))

    async def internal_error(request, exc: Exception):  # uvicorn logs the traceback
        return error(500, "internal server error; the server log has the details")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.close)

    routes = [Route("/predict", predict, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/info", info_route, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: internal_error})


# --------------------------------------------------------------------------------------------- serving


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, not yet listening: `serve` binds before it loads the models, so a port in use
    fails in a second, and listens after, so until then a client is refused rather than left waiting."""
    if not 0 <= port <= 65535:
        raise UlmfitError(f"--port must be in 0..65535, not {port}", hint=f"e.g. --port {PORT} (0: any free port)")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UlmfitError(f"cannot listen on {host}: {getattr(e, 'strerror', None) or e}",
                          hint="use an address of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (all)") \
            from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UlmfitError(f"port {port} on {host} is already in use",
                              hint="stop the server listening there, or pass another --port") from None
        if e.errno == errno.EACCES:
            raise UlmfitError(f"no permission to listen on port {port}",
                              hint=f"ports below 1024 need privileges; e.g. --port {PORT}") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise UlmfitError(f"{host} is not an address of this machine",
                              hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)") from None
        raise UlmfitError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(paths: list[str], *, host: str = HOST, port: int = PORT, limits: Limits = Limits(),
          device: str | None = None, quantize: bool = False, ngram_weight: float | None = None) -> None:
    """Load the classifiers once and answer HTTP requests until SIGTERM or Ctrl-C; then stop accepting, finish the
    requests in flight (up to GRACE_S seconds) and return. Options, the port and the models are checked first, each
    failure a UlmfitError."""
    try:
        import starlette  # noqa: F401  (create_app's)
        import uvicorn
    except ImportError:
        raise UlmfitError("ulmfit serve needs starlette and uvicorn",
                          hint="pip install 'ulmfit[serve]'") from None
    from ulmfit.classify.classifier import load_models

    limits.check()
    sock = listen(host, port)
    try:
        models = load_models(list(paths), device=device, quantize=quantize, ngram_weight=ngram_weight)
        predict_rows(models, ["warm up"])  # the first call sets up the network (about a second): not a client's wait
        app = create_app(models, limits)
        # One line per batch replaces uvicorn's line per request, which would dominate the log under load.
        config = uvicorn.Config(app, log_config=_log_config(), access_log=False, lifespan="on",
                                timeout_graceful_shutdown=GRACE_S)
        server = uvicorn.Server(config)
        sock.listen(config.backlog)  # from here on a client waits in the backlog for the event loop, not refused
        where = sock.getsockname()
        shown = f"[{where[0]}]" if sock.family == socket.AF_INET6 else where[0]
        logger.info("serving %s (%s) on http://%s:%d: POST /predict, GET /health, GET /info",
                    " + ".join(str(m.path) for m in models), ", ".join(models[0].labels), shown, where[1])
        with _signals_end_serving():
            server.run(sockets=[sock])
    finally:
        sock.close()
    logger.info("stopped")


def _log_config() -> dict[str, Any]:
    """uvicorn's logging setup, with this module's logger printing in the same format."""
    import uvicorn.config

    cfg = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    cfg["loggers"][logger.name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return cfg


def _end_quietly(signum, frame) -> None:
    pass


@contextlib.contextmanager
def _signals_end_serving():
    """Make SIGTERM and Ctrl-C end serving normally (exit 0).

    While it runs, uvicorn handles both itself: it stops accepting, finishes the requests in flight, then restores
    the handlers it found and raises the signal again for them. `ulmfit.cli.main` turns SIGTERM into
    KeyboardInterrupt (an interrupted run, exit 130), which is right for training but wrong for a server that has
    just shut down as asked; the handlers installed here take that second signal and do nothing.
    """
    if threading.current_thread() is not threading.main_thread():  # signal.signal works only there
        yield
        return
    previous = {sig: signal.signal(sig, _end_quietly) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
