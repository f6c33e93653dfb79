"""Reset and restore a bridge: backed up first, verified, crash-safe, undoable.

`plan.py` describes, `engine.py` runs steps under a manifest, `recover.py` finishes or rolls back
what a crash left behind. See docs/reset.md.
"""

from .errors import ResetError

# Nothing heavier here: `bridgedoctor check` loads reset.cli (its subcommands' arguments) and
# must not pull in the engine and the database drivers with it. recover: reset.recover.
__all__ = ["ResetError"]
