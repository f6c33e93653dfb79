"""The manifest: one JSON file per reset or restore, rewritten atomically after every step.

It is the only state a crash leaves behind, so it is written to a temp file, fsynced, renamed over
the old one and the directory fsynced: after a crash it is either the old or the new version.

A write can fail (a full disk, an I/O error). ENOSPC first draws on a reserve: a file of
RESERVE_BYTES kept in the bridge's backup directory and given up the moment a manifest would not
fit, so the record of what was done survives a disk filled by something else. The room is for
records only: once it is spent, a backup still being written stops there (engine.py). Any other
failure is a RecordError, whose sentence the callers pass on; they decide what is still safe.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

State = Literal["planned", "backed_up", "applied", "rolling_back", "done", "rolled_back", "failed"]
Kind = Literal["reset", "restore"]
FINAL = ("done", "rolled_back", "failed")
NAME = "manifest.json"
RESERVE = ".reserve"
RESERVE_BYTES = 1 << 20


class RecordError(OSError):
    """The manifest could not be written; str() is a sentence for the admin."""

    def __str__(self) -> str:
        return str(self.strerror)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        if name not in self.done_steps():
            self.steps.append({"step": name, "at": now()})
        if state:
            self.state = state
        self.save()

    def done_steps(self) -> set[str]:
        return {s["step"] for s in self.steps}

    def save(self) -> None:
        """Write it atomically; RecordError (a sentence) if it cannot be, ENOSPC first drawing
        on the bridge directory's reserve."""
        path = self.dir / self.FILE
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"  # type: ignore[call-overload]
        try:
            write_atomic(path, text)
        except OSError as e:
            if e.errno != errno.ENOSPC or not give_up_reserve(self.dir.parent):
                raise record_error(path, e) from e
            try:
                write_atomic(path, text)
            except OSError as again:
                raise record_error(path, again) from again

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


def unfinished_dirs(
    backup_root: Path, cls: type[Recorded], final: tuple[str, ...], bridge: str | None = None
) -> list[Path]:
    """The bridge directories under the backup root holding a record of this kind not yet in
    a final state (only `bridge`'s, when named), in name order: what recovery locks and works
    in. A link is not one of our directories (it may lead anywhere), and a directory with
    nothing unfinished (a bridge's, the backup disk's lost+found) is left as it is: no lock
    file made in it, nothing written. (What is not a directory holds no record: load_all.)"""
    if not backup_root.is_dir():
        return []
    return [
        d
        for d in sorted(backup_root.iterdir())
        if not d.is_symlink() and (not bridge or d.name == bridge)
        and any(r.state not in final for r in load_all(cls, d))
    ]  # fmt: skip


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


def record_error(path: Path, e: OSError) -> RecordError:
    why = os.strerror(e.errno) if e.errno else type(e).__name__
    return RecordError(e.errno or 0, f"cannot write {path} ({why})")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            data = text.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a half-written temp file only takes space
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def keep_reserve(bridge_dir: Path) -> bool:
    """Make sure the reserve exists (allocated, not sparse); False when it does not fit."""
    path = bridge_dir / RESERVE
    try:
        if path.is_file() and path.stat().st_blocks * 512 >= RESERVE_BYTES:
            return True
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        return False


def has_reserve(bridge_dir: Path) -> bool:
    return (bridge_dir / RESERVE).is_file()


def give_up_reserve(bridge_dir: Path) -> bool:
    """Free the reserve for a manifest that would not fit; False if there was none."""
    try:
        (bridge_dir / RESERVE).unlink()
    except OSError:
        return False
    return True


def all_for(bridge_dir: Path) -> list[Manifest]:
    """Every manifest under a bridge's backup directory, oldest first."""
    return load_all(Manifest, bridge_dir)
