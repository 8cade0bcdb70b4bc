"""`ulmfit serve`: the HTTP API (rows in input order, ensembles, batching, limits, errors) and a real server process
that finishes its requests in flight on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from test_predict import make_bundle, make_texts
from ulmfit import serve_batcher
from ulmfit.classify import Classifier
from ulmfit.cli.main import main
from ulmfit.serve import Limits, create_app


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    return make_bundle(root / "fwd", seed=1), make_bundle(root / "bwd", seed=2, backwards=True)


@pytest.fixture(scope="module")
def fwd(bundles) -> Classifier:
    return Classifier.load(bundles[0], device="cpu")


@pytest.fixture(scope="module")
def bwd(bundles) -> Classifier:
    return Classifier.load(bundles[1], device="cpu")


@contextlib.contextmanager
def served(models: list[Classifier], **limits):
    with TestClient(create_app(models, Limits(**limits))) as client:  # `with`: the lifespan starts the worker
        yield client


@pytest.fixture
def model_calls(monkeypatch) -> list[list[str]]:
    """The texts of every model call the server makes (each batch is one call of `predict_rows`)."""
    calls: list[list[str]] = []
    real = serve_batcher.predict_rows

    def counted(models, texts):
        calls.append(list(texts))
        if any("boom" in t for t in texts):
            raise RuntimeError("the model broke")
        return real(models, texts)

    monkeypatch.setattr(serve_batcher, "predict_rows", counted)
    return calls


def probs(rows: list[dict], labels=("neg", "pos")) -> np.ndarray:
    return np.array([[r["probs"][lab] for lab in labels] for r in rows])


def test_rows_come_back_in_input_order(fwd) -> None:
    texts = make_texts(11, seed=7) + ["", "Ünïcödé \ud800 and a lone surrogate"]
    with served([fwd]) as client:
        r = client.post("/predict", content=json.dumps({"texts": texts}))  # ASCII-escaped: the surrogate survives
        one = client.post("/predict", json={"text": texts[3]})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    texts[-1] = texts[-1].replace("\ud800", "\ufffd")  # half a surrogate pair is read as U+FFFD
    alone = np.concatenate([fwd.predict_proba([t]) for t in texts])  # one at a time: no batch, no sorting
    np.testing.assert_allclose(probs(rows), alone, atol=1e-5)
    assert [row["label"] for row in rows] == [fwd.labels[i] for i in alone.argmax(1)]
    assert np.abs(alone[:, 1] - alone[::-1, 1]).max() > 0.05  # a shuffled answer would be caught
    assert one.status_code == 200 and len(one.json()["predictions"]) == 1
    np.testing.assert_allclose(probs(one.json()["predictions"]), alone[3:4], atol=1e-5)


def test_several_models_are_ensembled(fwd, bwd) -> None:
    texts = make_texts(6, seed=8)
    with served([fwd, bwd]) as client:
        rows = client.post("/predict", json={"texts": texts}).json()["predictions"]
    pf, pb = fwd.predict_proba(texts), bwd.predict_proba(texts)
    assert np.abs(pf - pb).max() > 0.01  # two genuinely different models
    np.testing.assert_allclose(probs(rows), (pf + pb) / 2, atol=1e-5)


def post_together(client: TestClient, bodies: list[dict]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post("/predict", json=b), bodies))


def test_concurrent_requests_run_as_one_model_call(fwd, model_calls, caplog) -> None:
    sizes = [1, 2, 1, 3, 1]
    texts = make_texts(sum(sizes), seed=9)
    bodies, start = [], 0
    for n in sizes:
        bodies.append({"texts": texts[start:start + n]})
        start += n
    # The batch is full only once every request has arrived; the long wait makes sure none runs early.
    with served([fwd], max_batch=sum(sizes), max_wait_ms=20_000) as client, caplog.at_level("INFO"):
        answers = post_together(client, bodies)
    assert [len(c) for c in model_calls] == [8]
    assert sorted(model_calls[0]) == sorted(texts)
    for body, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(probs(r.json()["predictions"]), fwd.predict_proba(body["texts"]), atol=1e-5)
    assert re.search(r"batch: 8 texts, 5 requests, [\d.]+ ms model", caplog.text)


def test_a_batch_holds_at_most_max_batch_texts(fwd, model_calls) -> None:
    sizes = [3, 2, 1, 6, 2, 1]
    bodies = [{"texts": make_texts(n, seed=10 + i)} for i, n in enumerate(sizes)]
    with served([fwd], max_batch=4, max_wait_ms=50) as client:
        answers = post_together(client, bodies)
    for body, r in zip(bodies, answers):
        np.testing.assert_allclose(probs(r.json()["predictions"]), fwd.predict_proba(body["texts"]), atol=1e-5)
    assert sorted(len(c) for c in model_calls if len(c) > 4) == [6]  # only the request of 6 texts, alone
    assert sum(len(c) for c in model_calls) == sum(sizes)


def test_a_failing_model_answers_500_and_the_server_keeps_serving(fwd, model_calls) -> None:
    with served([fwd], max_batch=3, max_wait_ms=20_000) as client:
        bad, good = post_together(client, [{"texts": ["boom", "fine"]}, {"text": "a good film"}])
        after = client.post("/predict", json={"texts": ["the plot was dull", "fine", "good"]})  # a full batch
    assert bad.status_code == 500 and "model failed" in bad.json()["error"]
    # Batched with the failing request, the good one was retried alone and answered.
    assert good.status_code == 200 and len(good.json()["predictions"]) == 1
    assert after.status_code == 200 and len(after.json()["predictions"]) == 3
    assert len(model_calls[0]) == 3


@pytest.mark.parametrize("body, status, says", [
    (b'{"text": "a good film"', 400, "not valid JSON"),
    (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
    (b'["a good film"]', 422, "the body is a list"),
    (b"{}", 422, "no text given"),
    (b'{"text": 5}', 422, '"text" is a number, not a string'),
    (b'{"texts": "a good film"}', 422, '"texts" is a string, not a list'),
    (b'{"texts": ["fine", null]}', 422, "texts[1] is null, not a string"),
    (b'{"texts": []}', 422, '"texts" is empty'),
    (b'{"text": "a", "texts": ["b"]}', 422, "both"),
    (b'{"text": "a", "model": "/etc/passwd"}', 422, "unknown field 'model'"),
    (b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "5 texts in one request; the limit is 4 (--max-texts)"),
    (b'{"texts": ["fine", "' + b"x" * 51 + b'"]}', 413, "texts[1] has 51 characters; the limit is 50"),
    (b'{"text": "' + b"x" * 300 + b'"}', 413, "the limit is 200 (--max-request-bytes)"),
])
def test_bad_requests_get_a_clear_json_error(fwd, model_calls, body, status, says) -> None:
    with served([fwd], max_texts=4, max_chars=50, max_request_bytes=200) as client:
        r = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status and says in r.json()["error"], r.text
        assert client.post("/predict", json={"text": "still serving"}).status_code == 200
    assert len(model_calls) == 1  # only the good request reached the model


def test_deeply_nested_json_is_a_400(fwd) -> None:
    with served([fwd]) as client:
        r = client.post("/predict", content=b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert r.status_code == 400 and "RecursionError" in r.json()["error"]


def test_a_streamed_body_is_cut_off_at_the_limit(fwd) -> None:
    chunks = iter([b'{"text": "', b"x" * 150, b"x" * 150, b'"}'])  # no Content-Length: chunked
    with served([fwd], max_request_bytes=200) as client:
        r = client.post("/predict", content=chunks)
    assert r.status_code == 413 and "over the limit of 200 bytes" in r.json()["error"]


def test_routes_health_and_info(fwd, bwd, bundles) -> None:
    with served([fwd, bwd], max_batch=16) as client:
        assert client.get("/health").json() == {"status": "ok"}
        info = client.get("/info").json()
        missing = client.get("/../../etc/passwd")
        wrong = client.get("/predict")
    assert info["labels"] == ["neg", "pos"]
    assert [m["path"] for m in info["models"]] == [str(b) for b in bundles]
    assert [m["direction"] for m in info["models"]] == ["forward", "backward"]
    assert info["models"][0]["arch"]["name"] == "awd_lstm" and info["models"][0]["ngram_weight"] == 0
    assert set(info["versions"]) >= {"ulmfit", "torch"} and info["limits"]["max_batch"] == 16
    assert missing.status_code == 404 and "no such route" in missing.json()["error"]
    assert wrong.status_code == 405 and "GET is not allowed" in wrong.json()["error"]


def test_cli_help_and_errors_before_serving(bundles, tmp_path, capsys) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--host", "--port", "--max-batch", "--max-wait-ms", "--max-texts", "--max-chars",
                "--max-request-bytes", "--ngram-weight", "--int8", "--device"):
        assert opt in out
    assert main(["serve", str(tmp_path / "nowhere"), "--port", "0"]) == 1
    assert "no model at" in capsys.readouterr().err
    assert main(["serve", str(bundles[0]), "--max-batch", "0"]) == 1
    assert "--max-batch must be at least 1" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(bundles[0]), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"error: port {port} on 127.0.0.1 is already in use" in err and "hint: " in err


def test_sigterm_finishes_the_request_in_flight_and_exits_0(bundles, monkeypatch) -> None:
    monkeypatch.setenv("ULMFIT_THREADS", "1")
    cmd = [sys.executable, "-m", "ulmfit", "serve", str(bundles[0]), "--port", "0", "--device", "cpu", "--int8",
           "--max-batch", "4", "--max-wait-ms", "3000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if " serving " in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    late: dict[str, httpx.Response] = {}
    try:
        assert ready.wait(60), "".join(lines)
        url = "http://127.0.0.1:" + re.search(r"on http://127\.0\.0\.1:(\d+)", "".join(lines)).group(1)
        full = httpx.post(url + "/predict", json={"texts": make_texts(4, seed=11)}, timeout=60)  # a full batch
        assert full.status_code == 200 and httpx.get(url + "/info").json()["models"][0]["int8"] is True
        # This one waits up to 3 s for company in its batch; SIGTERM arrives while it does.
        sender = threading.Thread(target=lambda: late.update(r=httpx.post(url + "/predict", json={
            "texts": ["a good film", "dull"]}, timeout=60)))
        sender.start()
        ready.clear()
        threading.Event().wait(1.0)
        proc.send_signal(signal.SIGTERM)
        sender.join(60)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    log = "".join(lines)
    assert late["r"].status_code == 200 and len(late["r"].json()["predictions"]) == 2, log
    assert proc.returncode == 0, log
    assert "batch: 4 texts, 1 requests" in log
    assert 0 < log.find("Shutting down") < log.find("batch: 2 texts, 1 requests")  # answered after SIGTERM
    assert log.rstrip().endswith("stopped")
    assert "Traceback" not in log and "Interrupted" not in log
