"""The files of an explain report (`ulmfit.explain.explain_file`): the HTML page, the top-words PNG, the word
table as CSV and everything as JSON, and how an earlier report is recognised.

The page is one self-contained file: no scripts, no external assets (the PNG is embedded), every text
HTML-escaped, and a Content-Security-Policy as a second guard, so a text that holds markup cannot run in the
reader's browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ulmfit import __version__
from ulmfit.errors import UlmfitError
from ulmfit.explain import CSV_HEADER, GENERATOR, MIN_COUNT, TOP_K, Explanation, Word, top_words

# Spacing between the shown words, as ulmfit.tokenize.decode joins them: none before closing punctuation and
# clitics, none after opening brackets, none around / - @ (the tokenizer split "a/b", "well-made", e-mail addresses).
_NO_SPACE_BEFORE = re.compile(r"^(?:[,.!?;:%)\]}…/@-]+|'s|'m|'d|'ll|'re|'ve|n't)$", re.IGNORECASE)
_NO_SPACE_AFTER = {"(", "[", "{", "$", "#", "/", "-", "@"}

def output_paths(out: str | Path) -> dict[str, Path]:
    """The report and the files written next to it: report.html -> report.png, report.words.csv, report.json."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UlmfitError(f"--out {out} is not an .html file", hint="name the report e.g. report.html")
    return {"html": out, "png": out.with_suffix(".png"), "csv": out.with_suffix(".words.csv"),
            "json": out.with_suffix(".json")}


def is_ours(path: Path) -> bool:
    """Whether `path` is an earlier output of explain: each file names GENERATOR (the CSV by its header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return GENERATOR.encode() in head or head.startswith(",".join(CSV_HEADER).encode())


def render_png(rows: list[dict[str, Any]], labels: list[str], *, k: int = TOP_K, min_count: int = MIN_COUNT) -> bytes:
    """A bar chart per label of its top words (mean attribution), as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(len(labels), 3)
    nrows = -(-len(labels) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 0.3 * k * nrows + 1.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    for j, label in enumerate(labels):
        ax = fig.add_subplot(nrows, ncols, j + 1)
        top = top_words(rows, label, k, min_count)[::-1]  # barh draws bottom-up: the best word on top
        ax.barh([f"{r['word']} ({r['count']})" for r in top], [r["mean_attribution"] for r in top],
                color=["#16a34a" if r["mean_attribution"] >= 0 else "#dc2626" for r in top])
        ax.set_title(f"toward {label}", fontsize=10)
        ax.set_xlabel("mean attribution (probability)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.axvline(0, color="#888", linewidth=0.6)
        if not top:
            ax.text(0.5, 0.5, f"no word seen {min_count}+ times", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="#666")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": GENERATOR})
    return buf.getvalue()


_CSS = """
body{font:15px/1.55 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:1100px;margin:24px auto;
padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub,.meta{color:#57606a;font-size:13px}
.method{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;font-size:13px}
.legend .sw{padding:1px 6px;border-radius:3px;margin-right:6px}
.doc{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:10px 0}
.doc header{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.n{color:#57606a;font-size:13px}.label{font-weight:600}
.text{margin:6px 0 0;overflow-wrap:anywhere}
.w{border-radius:3px;padding:0 1px}
.unk{text-decoration:underline dotted}
.mk{font-size:11px;color:#8c959f;font-family:ui-monospace,monospace}
.tables{display:flex;flex-wrap:wrap;gap:24px}
table{border-collapse:collapse;font-size:13px}th,td{padding:2px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:1px solid #d0d7de}
img{max-width:100%}
"""


def _shade(a: float, scale: float) -> str:
    t = min(1.0, abs(a) / scale) if scale > 0 else 0.0
    rgb = "22,163,74" if a >= 0 else "220,38,38"
    return f"background:rgba({rgb},{0.75 * t:.2f})"


def _text_html(words: list[Word]) -> tuple[str, float]:
    """The words as shaded spans, and the attribution that gets the full shade (the largest in the text)."""
    scale = max((abs(w.attribution) for w in words), default=0.0)
    parts: list[str] = []
    prev = None
    for w in words:
        tip = html.escape(f"{w.text.strip() or 'line break'}: {w.attribution:+.4f}", quote=True)
        if w.kind == "space":
            parts.append(f'<span class="mk w" style="{_shade(w.attribution, scale)}" title="{tip}">\u21b5</span>'
                         + "<br>" * min(2, max(1, w.text.count("\n"))))
            prev = None
            continue
        glue = (not parts or parts[-1].endswith("<br>") or prev in _NO_SPACE_AFTER
                or bool(_NO_SPACE_BEFORE.match(w.text)))
        prev = w.text
        cls = "mk w" if w.kind == "marker" else ("w unk" if w.unknown else "w")
        if w.unknown:
            tip += " (not in the vocabulary: read as xxunk)"
        parts.append(("" if glue else " ") + f'<span class="{cls}" style="{_shade(w.attribution, scale)}" '
                     f'title="{tip}">{html.escape(w.text)}</span>')
    return "".join(parts), scale


def render_html(explanations: list[Explanation], rows: list[dict[str, Any]], labels: list[str], png: bytes, *,
                bundle: str, steps: int, baseline: str, temperature: float, ngram_weight: float,
                k: int = TOP_K, min_count: int = MIN_COUNT, more: bool = False) -> str:
    """The self-contained report page: no scripts, no external assets, every text escaped."""
    esc = html.escape
    max_err = max((e.error for e in explanations), default=0.0)
    temp = f", temperature {temperature:g}" if temperature != 1 else ""
    ngram = (f" The label and its probability include the bundle's n-gram model (weight {ngram_weight:g}); the "
             "attributions explain the network's probability, shown as &ldquo;network&rdquo;." if ngram_weight else "")
    head = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{GENERATOR}">',
        # Nothing in the page runs or loads: even an escaping mistake could not run a text's script.
        ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
         "style-src 'unsafe-inline'\">"),
        f"<title>{esc(bundle)}: explained predictions</title><style>{_CSS}</style></head><body>",
        f"<h1>Why {esc(bundle)} predicted what it did</h1>",
        (f'<div class="sub">{len(explanations)} text{"s" if len(explanations) != 1 else ""}'
         f'{" (the first of a longer input: --max-texts)" if more else ""} &middot; ulmfit {esc(__version__)}</div>'),
        ('<p class="legend"><span class="sw" style="background:rgba(22,163,74,.6)">toward the predicted label</span>'
         '<span class="sw" style="background:rgba(220,38,38,.6)">against it</span><span class="meta">'
         '<span class="unk">dotted</span>: not in the vocabulary (read as xxunk) &middot; <span class="mk">xxbos'
         "</span>: a marker the tokenizer adds &middot; shading is relative to each text's strongest word; hover a "
         "word for its value</span></p>"),
        (f'<div class="method">Integrated gradients on the token embeddings: {steps} steps, {esc(baseline)} '
         f"baseline, attributing the network's probability of the predicted label{temp}. A text's attributions "
         f"sum to p(text) &minus; p(baseline); the largest difference (integration error) over these texts is "
         f"{max_err:.4f}.{ngram}</div>"),
        "<h2>Top words per label</h2>",
        (f'<p class="meta">Mean attribution toward a label over the texts predicted as it; words seen at least '
         f"{min_count} times.</p>"),
        '<div class="tables">',
    ]
    for label in labels:
        top = top_words(rows, label, k, min_count)
        body = "".join(f"<tr><td>{esc(r['word'])}</td><td>{r['mean_attribution']:+.4f}</td><td>{r['count']}</td>"
                       f"<td>{r['texts']}</td></tr>" for r in top) or '<tr><td colspan="4">none</td></tr>'
        head.append(f"<table><caption><b>{esc(label)}</b></caption><thead><tr><th>word</th><th>mean</th>"
                    f"<th>count</th><th>texts</th></tr></thead><tbody>{body}</tbody></table>")
    head.append("</div>")
    head.append(f'<p><img alt="top words per label" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                "</p><h2>Texts</h2>")
    for e in explanations:
        text, scale = _text_html(e.words)
        network = f" &middot; network {e.network_prob:.3f}" if ngram_weight else ""
        head.append(
            f'<section class="doc"><header><span class="n">#{e.index + 1}</span>'
            f'<span class="label">{esc(e.label)}</span><span>{e.prob:.3f}</span>'
            f'<span class="meta">&Sigma; attributions {e.total:+.4f} &asymp; p {e.network_prob:.4f} &minus; '
            f"p(baseline) {e.baseline_prob:.4f} (error {e.error:.4f}){network} &middot; full shade "
            f"&plusmn;{scale:.3g}</span></header>"
            f'<p class="text">{text}</p></section>')
    head.append("</body></html>\n")
    return "\n".join(head)


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_HEADER, lineterminator="\n")
    w.writeheader()
    w.writerows({**r, "mean_attribution": f"{r['mean_attribution']:.6g}"} for r in rows)
    return buf.getvalue()


def json_text(explanations: list[Explanation], rows: list[dict[str, Any]], method: dict[str, Any]) -> str:
    texts = [{"index": e.index, "label": e.label, "prob": e.prob, "network_prob": e.network_prob,
              "baseline_prob": e.baseline_prob, "error": e.error, "words": [asdict(w) for w in e.words],
              "tokens": e.tokens, "token_attributions": e.token_attributions} for e in explanations]
    return json.dumps({"generator": GENERATOR, "method": method, "texts": texts, "words": rows},
                      ensure_ascii=False, indent=1) + "\n"
