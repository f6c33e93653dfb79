"""Who is on the other end of a Unix socket, as the kernel says (SO_PEERCRED)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def credentials(sock: socket.socket | None) -> Peer | None:
    """The peer's pid/uid/gid, or None where SO_PEERCRED is unavailable (not Linux)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if sock is None or opt is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid)
