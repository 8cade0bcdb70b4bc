"""The one exception type users see. The CLI prints it as one line (plus a hint) and exits 1."""

from __future__ import annotations


class UlmfitError(Exception):
    """A user-facing error: bad input, bad option, missing or mismatched artifact.

    `message` says what is wrong in one line; `hint` (optional) says what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
