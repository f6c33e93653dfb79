"""Progress of a running reset or restore: which step, and rows so far in the long ones.

The engine calls `step` as each step starts and `rows` as a table streams to or from its backup
file; the sink (the helper's socket, the CLI's terminal) gets a plain dict at most once per
`every` seconds, and at every new step. Nothing here can fail a reset: a sink that raises is
dropped and the reset goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

Sink = Callable[[dict[str, Any]], None]
STEP_WORDS = {
    "stop": "stopping the bridge",
    "backup": "backing up",
    "verify": "verifying the backup",
    "apply": "clearing the crypto store",
    "clear_db": "emptying the database",
    "clear_data": "emptying the data directory",
    "restore_db": "putting the rows back",
    "restore_data": "putting the data directory back",
    "check": "checking the restored database",
    "start": "starting the bridge",
}


EVERY = 2.0  # seconds between reports within a step


class Progress:
    def __init__(self, sink: Sink | None, every: float | None = None) -> None:
        self._sink = sink
        self.every = EVERY if every is None else every
        # Never: time.monotonic() counts from boot, and a host minutes up is no reason to
        # hold back a run's first report.
        self._last = -math.inf
        self.state: dict[str, Any] = {}

    @property
    def silent(self) -> bool:
        return self._sink is None

    def step(self, name: str, index: int, total: int) -> None:
        self.state = {"step": name, "doing": STEP_WORDS.get(name, name), "index": index,
                      "steps": total}  # fmt: skip
        self._emit(force=True)

    def rows(self, table: str, done: int, of: int | None = None, approx: bool = False) -> None:
        """Rows of `table` streamed so far; `of` the total when known, `approx` when that is
        the planner's estimate rather than a count."""
        self.state.update(table=table, rows=done, of=of, approx=approx)
        self._emit(force=False)

    def _emit(self, force: bool) -> None:
        if self._sink is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        try:
            self._sink(dict(self.state))
        except Exception:  # noqa: BLE001 - progress is a courtesy; the reset must go on
            self._sink = None


def counter(
    report: Progress | None, table: str, of: int | None, approx: bool = False
) -> Callable[[bytes], None] | None:
    """A chunk callback for a table being streamed: counts lines (one row each) and reports."""
    if report is None or report.silent:
        return None
    seen = 0

    def on_chunk(chunk: bytes) -> None:
        nonlocal seen
        seen += chunk.count(b"\n")
        report.rows(table, seen, of, approx)

    return on_chunk
