"""Render an `ulmfit explain` report in a real headless Chromium: a screenshot to look at, and a check that the
texts stayed text (no element or script of a text reaches the page the browser builds, nothing runs).

    python scripts/check_explain_browser.py                          # a demo report of a tiny synthetic classifier
    python scripts/check_explain_browser.py report.html --screenshot shot.png

The demo trains a tiny classifier from scratch (a few seconds on one core) on texts of random filler words where
"zebra" makes a text pos and "quokka" neg, and explains texts that include markup: a <script> that would change the
page title and an <img onerror=...>. Prints one JSON object; exits 1 if a check fails. Needs Chromium
(`apt-get install -y chromium`); the test suite does not.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FILLER = ("the a this that movie film plot story acting cast scene ending director actor script music and of to in "
          "it was is with for on at by camera light night city house car dog road").split()
PWNED = "PWNED-by-a-text"
HOSTILE = [
    f'The zebra scene was <script>document.title="{PWNED}"</script> GREAT!!!! and the cast was fine.',
    'A QUOKKA in every scene <img src=x onerror="document.title=\'' + PWNED + '\'"> & the ending "dragged".',
    "Night city camera quokka road.\n\nA second paragraph: the car and the dog, with a zebra at the end",
]


def demo_report(work: Path) -> Path:
    import torch

    from ulmfit.classify import resolve_config, train_classifier
    from ulmfit.data import Corpus
    from ulmfit.explain import explain_file

    torch.set_num_threads(1)
    rng = random.Random(0)
    texts, labels, splits = [], [], []
    for i in range(600):
        pos = rng.random() < 0.5
        words = [rng.choice(FILLER) for _ in range(rng.randint(6, 60))]
        words.insert(rng.randrange(len(words) + 1), "zebra" if pos else "quokka")
        texts.append(" ".join(words))
        labels.append("pos" if pos else "neg")
        splits.append("valid" if i % 5 == 0 else "train")
    cfg = resolve_config("tiny", overrides={"seed": 0, "from_scratch": True, "ngram": False})
    train_classifier(Corpus(texts, labels, splits, "zebra-quokka"), lm=None, out=work / "clf", config=cfg,
                     log=lambda s: None)
    src = work / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in HOSTILE + texts[:9]))
    out = work / "report.html"
    explain_file(work / "clf", src, out, device="cpu")
    return out


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("no Chromium found: apt-get install -y chromium")


def headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: Chromium refuses to run as root with its sandbox (containers, CI)
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", nargs="?", type=Path, help="an explain report (default: make a demo one)")
    ap.add_argument("--screenshot", type=Path, default=Path("explain-screenshot.png"), help="PNG to write")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args()
    browser = chromium()
    with tempfile.TemporaryDirectory() as tmp:
        report = (args.report or demo_report(Path(tmp))).resolve()
        url = report.as_uri()
        shot = headless(browser, f"--screenshot={args.screenshot.resolve()}",
                        f"--window-size={args.width},{args.height}", url)
        dom = headless(browser, "--dump-dom", url).stdout  # the page as the browser built it, after any script
    title = re.search(r"<title>(.*?)</title>", dom, re.DOTALL)
    checks = {
        "screenshot_written": args.screenshot.is_file() and args.screenshot.stat().st_size > 0,
        "page_parsed": bool(title) and 'class="doc"' in dom,
        "no_script_element": "<script" not in dom,
        "no_img_with_handler": not re.search(r"<img[^>]*onerror", dom),
        "title_untouched": bool(title) and PWNED not in title.group(1),
    }
    print(json.dumps({"report": str(report), "screenshot": str(args.screenshot), "chromium_rc": shot.returncode,
                      "checks": checks}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
