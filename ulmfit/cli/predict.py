"""`ulmfit predict`: Predict labels and probabilities for new texts."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ulmfit.classify.predict import MAX_CHARS
from ulmfit.cli._common import Device, ExpectTask, InferBs, MaxChars, NgramWeight, TextCol

Input = Annotated[str, typer.Option("--input", "-i", help="CSV/TSV/JSONL file, plain text (a document per "
                                    "line), or - for stdin (plain lines unless --input-format says otherwise).")]
Output = Annotated[str, typer.Option("--output", help="Output .csv or .jsonl (written when complete), or - for "
                                     "JSONL on stdout. Checked before the model is loaded; an existing file is "
                                     "replaced only if it is an earlier output of predict (or empty), unless "
                                     "--overwrite.")]
InFmt = Annotated[Optional[str], typer.Option("--input-format", help="csv, tsv, jsonl or lines "
                                              "(default: from the file extension).")]
OutFmt = Annotated[Optional[str], typer.Option("--output-format", help="csv or jsonl (default: from the "
                                               "output extension; jsonl for -).")]
Chunk = Annotated[int, typer.Option("--chunk-size", help="Rows read, predicted and written at a time "
                                    "(bounds memory for large files).")]
Int8 = Annotated[bool, typer.Option("--int8", help="CPU only: int8 dynamic quantization of the LSTM and "
                                    "linear layers (faster, probabilities differ slightly).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace --output even when it is a file that predict "
                                         "did not write (it is lost).")]


def register(app: typer.Typer) -> None:
    @app.command("predict", help=(
        "Predict labels and probabilities for new texts.\n\n"
        "Writes one row per input row, in input order: the label and one probability per class (multi-label "
        "models: the label set and each label's probability; regression models: the value). Large files "
        "stream through in chunks; several models are ensembled (mean of probabilities).\n\n"
        f"A document longer than --max-chars ({MAX_CHARS:,} by default) is classified from its first --max-chars "
        "characters, with a warning. Input bytes that are not UTF-8 become U+FFFD, with a warning."))
    def predict_cmd(
        models: list[str] = typer.Argument(..., metavar="MODEL [MODEL ...]",
                                           help="Classifier directories (or shared archives of them: URL or "
                                           ".tar.gz); several are ensembled (mean of probabilities)."),
        input: Input = "-",
        output: Output = "-",
        text_col: TextCol = None,
        input_format: InFmt = None,
        output_format: OutFmt = None,
        chunk_size: Chunk = 10_000,
        max_chars: MaxChars = MAX_CHARS,
        overwrite: Overwrite = False,
        ngram_weight: NgramWeight = None,
        task: ExpectTask = None,
        bs: InferBs = None,
        int8: Int8 = False,
        device: Device = None,
    ) -> None:
        import sys

        from ulmfit.classify.predict import predict_file

        res = predict_file(models, input, output, text_col=text_col, in_fmt=input_format, out_fmt=output_format,
                           chunk_size=chunk_size, bs=bs, device=device, quantize=int8, max_chars=max_chars,
                           overwrite=overwrite, ngram_weight=ngram_weight, task=task)
        if res.output != "-":
            print(f"{res.rows:,} rows -> {res.output} ({res.rows_per_s:,.0f} rows/s)", file=sys.stderr)
