"""One exception type for every refusal: the CLI maps it to exit 1 (safe) or 2 (bad input)."""

from __future__ import annotations


class ResetError(Exception):
    """A reset or restore refused or aborted; `touched` is False when nothing was changed."""

    def __init__(self, message: str, *, usage: bool = False, touched: bool = False) -> None:
        super().__init__(message)
        self.usage = usage
        self.touched = touched
