"""The manifest: one JSON file per reset or restore, rewritten atomically before every step.

It is the only state a crash leaves behind, so it is written to a temp file, fsynced, renamed over
the old one and the directory fsynced: after a crash it is either the old or the new version.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

State = Literal["planned", "backed_up", "applied", "done", "rolled_back", "failed"]
Kind = Literal["reset", "restore"]
FINAL = ("done", "rolled_back", "failed")
NAME = "manifest.json"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


R = TypeVar("R", bound="Recorded")


class Recorded:
    """A dataclass saved as JSON in its own directory after every step it records: the reset
    manifest, and the record of an apply (apply/record.py), which is named otherwise so neither
    is mistaken for the other."""

    FILE = NAME
    state: Any
    steps: list[dict[str, str]]

    @property
    def dir(self) -> Path:
        raise NotImplementedError

    def step(self, name: str, state: Any = None) -> None:
        """Record a finished step (and the state it leads to), then persist."""
        self.steps.append({"step": name, "at": now()})
        if state:
            self.state = state
        self.save()

    def done_steps(self) -> set[str]:
        return {s["step"] for s in self.steps}

    def save(self) -> None:
        data = asdict(self)  # type: ignore[call-overload]
        write_atomic(self.dir / self.FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls: type[R], path: Path) -> R:
        return cls(**json.loads(path.read_text("utf-8")))


def load_all(cls: type[R], bridge_dir: Path) -> list[R]:
    """Every record of this kind under a bridge's backup directory, oldest first."""
    out: list[R] = []
    if not bridge_dir.is_dir():
        return out
    for d in sorted(bridge_dir.iterdir()):
        p = d / cls.FILE
        if p.is_file():
            try:
                out.append(cls.load(p))
            except (OSError, ValueError, TypeError):
                continue  # a foreign or damaged file is not ours to act on
    return out


@dataclass
class Manifest(Recorded):
    id: str
    kind: Kind
    bridge: str
    mode: Literal["crypto", "full"]
    requested_by: str
    created_at: str
    location: str  # the backup directory (for a restore: the backup it restores from)
    unit: str
    was_active: bool = False
    database: str = ""  # printable location, never with credentials
    engine: str = ""
    state: State = "planned"
    source: str = ""  # restore: id of the backup restored
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # backed-up files
    snapshot: dict[str, dict[str, Any]] = field(default_factory=dict)  # every table, before
    data_dir: str = ""
    data_digest: str = ""
    data_tar_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, str]] = field(default_factory=list)
    error: str = ""

    @property
    def dir(self) -> Path:
        return Path(self.location) if self.kind == "reset" else Path(self.extra["op_dir"])


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def all_for(bridge_dir: Path) -> list[Manifest]:
    """Every manifest under a bridge's backup directory, oldest first."""
    return load_all(Manifest, bridge_dir)
