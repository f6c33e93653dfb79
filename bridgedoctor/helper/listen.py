"""Create the listening socket with its mode and group set before anyone can connect."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from .config import HelperConfig


class StartupError(Exception):
    """The helper cannot start; str() is one sentence for the admin."""


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except BlockingIOError:  # EAGAIN: its queue is full, but someone is listening
            return True
        except OSError:
            return False
    return True


def remove_stale(path: Path) -> None:
    """Remove a socket left by a previous run; refuse to touch anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is not a socket; remove it or set another socket.")
    if _alive(path):
        raise StartupError(f"another process is already listening on {path}.")
    os.unlink(path)


def bind(cfg: HelperConfig) -> socket.socket:
    """A bound but not yet listening socket: connect() fails until listen(), so setting the mode
    and group after bind() leaves no window where the wrong users could connect."""
    remove_stale(cfg.socket)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(cfg.socket))
        os.chmod(cfg.socket, cfg.socket_mode)
        if cfg.socket_gid is not None:
            os.chown(cfg.socket, -1, cfg.socket_gid)
    except OSError as e:
        sock.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(cfg.socket).st_mode):
                os.unlink(cfg.socket)
        raise StartupError(f"cannot create the socket {cfg.socket}: {e.strerror}.") from None
    return sock


def unlink_if_ours(path: Path, inode: int | None) -> None:
    """Remove our socket at exit, but not one a newer helper has since created at the same path."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and (inode is None or st.st_ino == inode):
            os.unlink(path)
