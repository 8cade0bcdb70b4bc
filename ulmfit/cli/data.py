"""`ulmfit data get NAME`, `ulmfit data info SRC` and `ulmfit data list`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ulmfit.cli._common import LabelCol, TextCol

app = typer.Typer(help="Download registered datasets and inspect corpora.", no_args_is_help=True)

Fmt = Annotated[Optional[str], typer.Option(
    "--fmt", help="Source format: folder, csv, tsv, jsonl, parquet or text (default: from the path).")]
DocSep = Annotated[str, typer.Option(
    "--doc-sep", help="Plain text only: a document per line, per blank-line-separated paragraph, or auto.")]


@app.command("get")
def get(name: str = typer.Argument(..., help="Registered dataset name (see `ulmfit data list`).")) -> None:
    """Download a registered dataset into the data cache (ULMFIT_DATA, default ./data) and print its path.

    Uses ULMFIT_MIRROR/<archive name> instead of the network when that file exists.
    """
    from ulmfit.data.registry import get_dataset

    typer.echo(str(get_dataset(name)))


@app.command("list")
def list_() -> None:
    """List the registered datasets and whether each is already in the cache."""
    from ulmfit.data.registry import DATASETS, cached_path

    width = max(len(n) for n in DATASETS)
    for name, ds in sorted(DATASETS.items()):
        state = "cached" if cached_path(name) else "-"
        typer.echo(f"{name.ljust(width)}  {state.ljust(6)}  {ds.description}")


@app.command("info")
def info(
    src: str = typer.Argument(..., help="A registered dataset name, or a path: folder, .tar.gz, .csv, .tsv, "
                              ".jsonl, .parquet or .txt."),
    text_col: TextCol = None,
    label_col: LabelCol = None,
    fmt: Fmt = None,
    doc_sep: DocSep = "auto",
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Print documents, labels and class counts per split and document lengths, as the source has them.

    Folder layouts: <split>/<label>/*.txt (aclImdb), <label>/*.txt, <label>.txt line files, table files.
    Splits are the source's own: no validation set is carved here.
    """
    import json

    from ulmfit.data.info import corpus_info, format_info
    from ulmfit.data.load import load_corpus

    corpus = load_corpus(src, text_col=text_col, label_col=label_col, fmt=fmt, valid_pct=0, doc_sep=doc_sep)
    report = corpus_info(corpus)
    typer.echo(json.dumps(report, indent=2) if as_json else format_info(report))
