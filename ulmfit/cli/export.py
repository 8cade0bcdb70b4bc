"""`ulmfit export`: Export a classifier to ONNX, to run with ONNX Runtime without torch or fastai."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Format = Annotated[str, typer.Option("--format", "-f", help="Export format: onnx (the only one so far).")]
ExportOut = Annotated[Path, typer.Option(
    "--out", "-o", help="Folder to write the export to: the ONNX graphs, vocab.json, tokenizer/, the n-gram model "
    "and export.json. It appears only once the parity check passed (staging folder + rename). A missing or empty "
    "folder, or an earlier export, is replaced; any other folder is refused unless --overwrite.")]
Texts = Annotated[Optional[Path], typer.Option(
    "--texts", help="Plain text file, one text per line, for the parity check (default: built-in sentences of "
    "varied length, one longer than max_len tokens). Use texts like the ones the model will see.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace --out even when it is a folder that export "
                                         "did not write (everything in it is lost).")]


def register(app: typer.Typer) -> None:
    @app.command("export", help=(
        "Export a classifier to ONNX, to run with ONNX Runtime without torch or fastai.\n\n"
        "Writes the encoder's seq_len-token chunk step and the head as two ONNX graphs, with the tokenizer, vocab, "
        "labels, calibration temperature and n-gram model they need. `ulmfit predict` and `ulmfit evaluate` take "
        "the folder in place of the bundle (CPU, float32), and so does ulmfit.onnx_runtime.OnnxClassifier, which "
        "needs only numpy, onnxruntime and spaCy or sentencepiece.\n\n"
        "Before anything is written, the export runs on the parity texts (--texts) and must give the bundle's "
        "tokens and its probabilities within 1e-4 (Classifier.predict_proba, torch float32). AWD-LSTM and QRNN "
        "encoders, forward and backward."))
    def export_cmd(
        bundle: str = typer.Argument(..., metavar="BUNDLE", help="Classifier bundle or `ulmfit classify` run "
                                     "folder (its model-best), or a shared archive of one (URL or .tar.gz)."),
        out: ExportOut = ...,
        format: Format = "onnx",
        texts: Texts = None,
        overwrite: Overwrite = False,
    ) -> None:
        from ulmfit.export import export_classifier

        res = export_classifier(bundle, out, fmt=format, texts_file=texts, overwrite=overwrite)
        typer.echo(f"exported {res.arch} classifier to {res.out} in {res.seconds:.1f} s "
                   f"(parity: {res.texts} texts, max difference {res.max_diff:.1e})")
