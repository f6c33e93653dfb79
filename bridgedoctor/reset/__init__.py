"""Reset and restore a bridge: backed up first, verified, crash-safe, undoable.

`plan.py` describes, `engine.py` runs steps under a manifest, `recover.py` finishes or rolls back
what a crash left behind. See docs/reset.md.
"""

from .errors import ResetError
from .recover import recover

__all__ = ["ResetError", "recover"]
