"""The one exception of apply and undo: a refusal in one sentence, saying whether anything changed."""

from __future__ import annotations

from ..reset.errors import ResetError


class ApplyError(ResetError):
    """Apply or undo refused or failed. A ResetError, so every shell that already turns a
    refused reset into one plain sentence (CLI exit code, helper `reset_refused`) does the same
    here; `touched` says whether config.yaml was changed."""
