"""Read and replace a bridge's config.yaml as the untrusted file it is (the bridge's container
can write its config directory): every directory below the bridge's is opened without following
links (probes/bridgefile.py), the new content goes to a temp file created with O_EXCL and
O_NOFOLLOW in that same directory, gets the old file's owner and mode, is fsynced, and is renamed
over the old one only if the old one still holds exactly the bytes the change was planned from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ..probes.bridgefile import Refused, check_file, inside, open_dir, read_bytes
from .errors import ApplyError

MAX_CONFIG_BYTES = 1024 * 1024  # as probes/bridgefile.MAX_YAML_BYTES


@dataclass(frozen=True)
class Original:
    data: bytes
    uid: int
    gid: int
    mode: int  # permission bits

    @property
    def sha256(self) -> str:
        return sha256(self.data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(path: Path, base: Path) -> Original:
    """The file's bytes, owner and mode, by the bridge-file rules; ApplyError if refused."""
    try:
        data = read_bytes(path, base, MAX_CONFIG_BYTES)
        dirfd = open_dir(base, inside(path, base)[:-1], path)
    except Refused as r:
        raise ApplyError(f"{r.message} Nothing was changed.", usage=True) from None
    try:
        st = os.stat(path.name, dir_fd=dirfd, follow_symlinks=False)
    finally:
        os.close(dirfd)
    return Original(data, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def _current(dirfd: int, name: str, path: Path) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        check_file(os.fstat(fd), path, None)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_CONFIG_BYTES:
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def replace(path: Path, base: Path, expected: bytes, new: bytes, owner: Original) -> None:
    """Put `new` in place of `path` atomically, with `owner`'s uid, gid and mode, if the file
    still holds `expected`; else ApplyError with nothing changed."""
    try:
        rest = inside(path, base)
        dirfd = open_dir(base, rest[:-1], path)
    except Refused as r:
        raise ApplyError(f"{r.message} Nothing was changed.") from None
    name = rest[-1]
    tmp = f".{name}.bridgedoctor-{secrets.token_hex(6)}"
    made = False
    try:
        try:
            live = _current(dirfd, name, path)
        except (OSError, Refused) as e:
            why = e.message if isinstance(e, Refused) else (e.strerror or type(e).__name__)
            raise ApplyError(
                f"{path} cannot be read again ({why}); nothing was changed."
            ) from None
        if live != expected:
            raise ApplyError(f"{path} changed since the plan; nothing was changed. Ask again.")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dirfd)
        made = True
        try:
            view = memoryview(new)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, owner.uid, owner.gid)
            os.fchmod(fd, owner.mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        made = False
        os.fsync(dirfd)
    except OSError as e:
        raise ApplyError(
            f"{path} could not be replaced ({e.strerror or type(e).__name__}); it is unchanged."
        ) from None
    finally:
        if made:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
        os.close(dirfd)
