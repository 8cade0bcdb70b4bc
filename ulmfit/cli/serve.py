"""`ulmfit serve`: Serve classifiers over HTTP: a JSON API, requests batched together."""

from __future__ import annotations

from typing import Annotated

import typer

from ulmfit.cli._common import Device, NgramWeight
from ulmfit.cli.predict import Int8
from ulmfit.serve import HOST, PORT, Limits

_D = Limits()  # the defaults, shown in --help

Host = Annotated[str, typer.Option("--host", help="Address to listen on: 127.0.0.1 answers this machine only, "
                                   "0.0.0.0 every interface (anyone who can reach the port can use the models).")]
Port = Annotated[int, typer.Option("--port", help="TCP port (0: any free port; the log names it).")]
MaxBatch = Annotated[int, typer.Option("--max-batch", help="Most texts per model call, gathered from the requests "
                                       "waiting. A request is never split: one with more texts runs alone.")]
MaxWait = Annotated[float, typer.Option("--max-wait-ms", help="How long a request waits for others to join its "
                                        "batch, in milliseconds (0: run as soon as the model is free). Requests "
                                        "that queue while the model is busy are batched without waiting.")]
MaxTexts = Annotated[int, typer.Option("--max-texts", help="Most texts in one request; more is refused (413).")]
MaxChars = Annotated[int, typer.Option("--max-chars", help="Most characters in one text (0: no limit); a longer "
                                       "text is refused (413), not cut as predict cuts it. Time per text grows "
                                       "linearly with its length.")]
MaxBytes = Annotated[int, typer.Option("--max-request-bytes", help="Most bytes in one request body; more is "
                                       "refused (413) as soon as that is known.")]


def register(app: typer.Typer) -> None:
    @app.command("serve", help=(
        "Serve classifiers over HTTP: a JSON API.\n\n"
        'POST /predict with {"text": "..."} or {"texts": ["...", ...]} answers {"predictions": [{"label", '
        '"probs"}, ...]} in input order; GET /health and GET /info (models, labels, versions, limits). Several '
        "models are ensembled (mean of probabilities). The models are loaded once; requests arriving close "
        "together run as one model call (--max-batch, --max-wait-ms), one line logged per call. Bad requests "
        'get 400, 404, 413 or 422 with {"error": "..."}.\n\n'
        "SIGTERM or Ctrl-C stops it: it stops accepting connections, finishes the requests in flight and exits 0."))
    def serve_cmd(
        models: list[str] = typer.Argument(..., metavar="MODEL [MODEL ...]",
                                           help="Classifier directories (or shared archives of them: URL or "
                                           ".tar.gz); several are ensembled (mean of probabilities)."),
        host: Host = HOST,
        port: Port = PORT,
        max_batch: MaxBatch = _D.max_batch,
        max_wait_ms: MaxWait = _D.max_wait_ms,
        max_texts: MaxTexts = _D.max_texts,
        max_chars: MaxChars = _D.max_chars,
        max_request_bytes: MaxBytes = _D.max_request_bytes,
        ngram_weight: NgramWeight = None,
        int8: Int8 = False,
        device: Device = None,
    ) -> None:
        from ulmfit.serve import serve

        limits = Limits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_texts=max_texts, max_chars=max_chars,
                        max_request_bytes=max_request_bytes)
        serve(models, host=host, port=port, limits=limits, device=device, quantize=int8, ngram_weight=ngram_weight)
