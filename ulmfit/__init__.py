"""ulmfit: ULMFiT-style transfer learning for text.

The high-level Python API mirrors the CLI. Heavy libraries (torch, fastai) are imported lazily so that
`import ulmfit` and `ulmfit --help` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "UlmfitError"]

from ulmfit.errors import UlmfitError  # noqa: E402
