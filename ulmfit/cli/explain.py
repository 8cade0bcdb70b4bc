"""`ulmfit explain`: Show which words made a classifier choose its label (an HTML report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ulmfit.cli._common import Device, MaxChars, NgramWeight, TextCol
from ulmfit.cli.predict import InFmt, Input

# The defaults live in ulmfit.explain, which imports torch; --help must not, so they are repeated here and a test
# checks that both agree.
STEPS, MAX_TEXTS, MAX_CHARS, TOP_K, MIN_COUNT = 32, 50, 10_000, 15, 2

Out = Annotated[Path, typer.Option("--out", "-o", help="The report, an .html file (self-contained: no scripts, no "
                                   "external files). Written next to it: NAME.png (top words per label), "
                                   "NAME.words.csv (each word's mean attribution per label, with counts) and "
                                   "NAME.json (everything, per text and per word). Each file is written when "
                                   "complete; an existing one is replaced only if explain wrote it, unless "
                                   "--overwrite.")]
MaxTexts = Annotated[int, typer.Option("--max-texts", "-n", help="Explain the first N texts of the input (each "
                                       "costs about --steps forward and backward passes).")]
Steps = Annotated[int, typer.Option("--steps", help="Integrated-gradients integration points (Gauss-Legendre). "
                                    "More: a smaller completeness error, proportionally slower.")]
Baseline = Annotated[str, typer.Option("--baseline", help="The input attributions are measured from: zero (every "
                                       "embedding 0) or pad (every token the padding token's embedding).")]
Top = Annotated[int, typer.Option("--top", help="Words per label in the report's table and chart.")]
MinCount = Annotated[int, typer.Option("--min-count", help="A word ranks among a label's top words only if it "
                                       "occurs at least this often in the texts predicted as that label.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace output files even when explain did not "
                                         "write them (they are lost).")]


def register(app: typer.Typer) -> None:
    @app.command("explain", help=(
        "Show which words made a classifier choose its label.\n\n"
        "For each text: the predicted label and its probability, and every word shaded by its attribution toward "
        "that label (integrated gradients on the token embeddings: green for, red against). Across all texts: "
        "each label's top words by mean attribution. A text's attributions sum to p(text) - p(baseline); the "
        "report gives the difference (the integration error) for every text.\n\n"
        "With a bundle's n-gram model (--ngram-weight), the label and its probability are what predict outputs; "
        "the attributions explain the neural network's probability of that label."))
    def explain_cmd(
        bundle: str = typer.Argument(..., metavar="MODEL", help="A classifier directory (a `ulmfit classify` run "
                                     "directory: its model-best), or a shared archive of one: URL or .tar.gz."),
        input: Input = "-",
        out: Out = Path("explain.html"),
        text_col: TextCol = None,
        input_format: InFmt = None,
        max_texts: MaxTexts = MAX_TEXTS,
        max_chars: MaxChars = MAX_CHARS,
        steps: Steps = STEPS,
        baseline: Baseline = "zero",
        top: Top = TOP_K,
        min_count: MinCount = MIN_COUNT,
        ngram_weight: NgramWeight = None,
        overwrite: Overwrite = False,
        device: Device = None,
    ) -> None:
        import sys

        from ulmfit.explain import explain_file

        res = explain_file(bundle, input, out, text_col=text_col, in_fmt=input_format, max_texts=max_texts,
                           max_chars=max_chars, steps=steps, baseline=baseline, top_k=top, min_count=min_count,
                           ngram_weight=ngram_weight, device=device, overwrite=overwrite)
        n = len(res.explanations)
        more = f" (the first {n}: --max-texts reads more)" if res.more else ""
        print(f"{n:,} texts{more} -> {res.outputs['html']} (+ .png, .words.csv, .json) in {res.seconds:.1f}s; "
              f"largest completeness error {res.max_error:.4f}", file=sys.stderr)
        if res.max_error > 0.01:
            print(f"warning: attributions miss p(text) - p(baseline) by up to {res.max_error:.3f}; "
                  f"a larger --steps (e.g. {2 * steps}) lowers it", file=sys.stderr)
