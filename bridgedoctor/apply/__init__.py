"""Apply the proven pickle key to a bridge's live config.yaml, with a backup and an undo.

`edit.py` changes the one value in the text, `files.py` reads and replaces the file as untrusted
bridge input, `plan.py` describes the change, `run.py` runs it under the bridge's lock with a
record that crash recovery and undo read. See docs/apply.md.
"""

from .errors import ApplyError

__all__ = ["ApplyError"]
