"""One audit line per request, to stderr (systemd puts it in the journal).

Only values the helper itself produced or validated are logged: the op and bridge after
protocol validation, the kernel's peer credentials, the result code and the duration. Never the
token, a database URI, a password or a key.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

LOGGER_NAME = "bridgedoctor.helper"
log = logging.getLogger(LOGGER_NAME)
audit_log = logging.getLogger(f"{LOGGER_NAME}.audit")


@dataclass
class Entry:
    op: str = "-"
    bridge: str = "-"
    uid: int | None = None
    pid: int | None = None
    result: str = "-"
    by: str = "-"  # the Matrix user who confirmed a reset or restore (validated)

    def line(self, duration_ms: float) -> str:
        uid = "-" if self.uid is None else str(self.uid)
        pid = "-" if self.pid is None else str(self.pid)
        return (
            f"request op={self.op} bridge={self.bridge} uid={uid} pid={pid} "
            f"result={self.result} ms={duration_ms:.0f}"
            + (f" by={self.by}" if self.by != "-" else "")
        )


def setup_logging(level: int = logging.INFO) -> None:
    # No timestamps: the journal adds its own.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
