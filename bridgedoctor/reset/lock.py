"""One reset or restore at a time per bridge: an flock on `<backup-dir>/<bridge>/.lock`.

The kernel releases an flock when its holder dies, however it dies (SIGKILL, power cut, reboot),
so a lock can never be left blocking; a PID written in a file could, once that PID is reused
after a reboot. The file itself stays (removing it would race with a process about to lock it);
it holds the holder's PID for people reading it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from . import paths
from .errors import ResetError

NAME = ".lock"


@contextlib.contextmanager
def held(bridge_dir: Path) -> Iterator[None]:
    """Take the bridge's lock, or refuse at once (never queue behind a running reset)."""
    # Only root may be able to change where backups live (a swap could redirect a restore).
    paths.private_dir(bridge_dir)
    bridge_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.private_dir(bridge_dir)
    path = bridge_dir / NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
        # A file system gone read-only (a failing disk) still takes an flock on a read-only
        # descriptor: recovery then gets as far as it can and says what is left.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResetError(
                f"another reset or restore of this bridge is running (lock {path})."
            ) from None
        with contextlib.suppress(OSError):  # the PID is for people; a full disk must not matter
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def is_held(bridge_dir: Path) -> bool:
    """Whether some live process holds the lock now (tests and `backups` ask)."""
    path = bridge_dir / NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
