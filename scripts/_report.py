"""The header and output of every benchmark report: what ran, on what machine, under what load, then the body.

    from _report import emit                     # scripts put their own folder on sys.path
    emit("Training throughput", body, script="bench_lm.py", report=args.report)
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path


def emit(title: str, body: str, *, script: str, report: Path | None, started: str | None = None) -> str:
    """Print (and append to `report`) the markdown report: title, date, machine, load, the exact command, body."""
    import torch

    started = started or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (f"## {title} — {started}\n\n"
            f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads, load average at the end {load:.1f}.\n"
            f"Command: `{' '.join(['.venv/bin/python', f'scripts/{script}', *sys.argv[1:]])}`\n\n{body}\n")
    print(text)
    if report:
        with open(report, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return text
