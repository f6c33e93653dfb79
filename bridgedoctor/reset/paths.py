"""Paths a reset or restore touches stay what they were when it was planned.

The bridge's container can rename and symlink anything in its /data and /config mounts until
`systemctl stop` has returned (its SIGTERM handler runs right then), so:

- at resolve time the data directory (and a SQLite store) is pinned: reached from the bridge
  directory one component at a time with O_NOFOLLOW, a real directory (file) inside it, and its
  device and inode recorded;
- after the stop, `after_stop` pins them again and refuses if anything differs, and for a full
  reset or restore walks the data directory once more: no link leading out of it, no device or
  socket, no deeper than MAX_DEPTH. A refusal starts the unit again if it was running, so the
  bridge is left as the admin had it;
- from then on the container is gone; what is written goes through descriptors (safetar,
  `backup.clear_at`, `copy_new`), never through a link.

Backups live in a directory only root can change (`private_dir`), or a swap there could redirect
what a restore reads.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..probes import bridgefile
from . import safetar, services
from .errors import ResetError

MAX_DEPTH = 64  # directories inside a bridge's data directory (bridges write one or two)


@dataclass(frozen=True)
class Pin:
    """A path as found when the reset was planned; `ident` None: it did not exist."""

    path: Path
    ident: tuple[int, int] | None


def _refused(r: bridgefile.Refused) -> ResetError:
    return ResetError(f"{r.message.rstrip('.')}; nothing was changed.", usage=True)


def pin_dir(base: Path, path: Path) -> Pin:
    """A real directory below `base` (no symlink on the way), or ResetError."""
    try:
        rest = bridgefile.inside(path, base)
        fd = bridgefile.open_dir(base, rest, path)
    except bridgefile.Refused as r:
        raise _refused(r) from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return Pin(path, (st.st_dev, st.st_ino))


def pin_file(base: Path, path: Path) -> Pin:
    """A regular file with one link below `base`, or a file that does not exist yet."""
    try:
        rest = bridgefile.inside(path, base)
        dirfd = bridgefile.open_dir(base, rest[:-1], path)
        try:
            owner = os.fstat(dirfd).st_uid
            fd = bridgefile.openat(dirfd, rest[-1], os.O_RDONLY | os.O_NONBLOCK, path, path)
        finally:
            os.close(dirfd)
    except bridgefile.Refused as r:
        if r.code == "missing" and path.parent.is_dir():
            return Pin(path, None)
        raise _refused(r) from None
    try:
        st = os.fstat(fd)
        bridgefile.check_file(st, path, owner)
    except bridgefile.Refused as r:
        raise _refused(r) from None
    finally:
        os.close(fd)
    return Pin(path, (st.st_dev, st.st_ino))


def repin(base: Path, was: Pin, directory: bool) -> str | None:
    """What changed since `was` was taken, in words, or None."""
    try:
        now = pin_dir(base, was.path) if directory else pin_file(base, was.path)
    except ResetError as e:
        return str(e).removesuffix("; nothing was changed.")
    if now.ident != was.ident:
        return f"{was.path} was replaced"
    return None


def after_stop(base: Path, data: Pin, store: Pin | None, whole_tree: bool, unit: str,
               was_active: bool) -> None:  # fmt: skip
    """Once the unit is stopped: the same places as planned, else start it again and refuse."""
    why = repin(base, data, True)
    if why is None and store is not None:
        why = repin(base, store, False)
    if why is None and whole_tree:
        try:
            scan(data.path)
        except ResetError as e:
            why = str(e).removesuffix("; nothing was changed.")
    if why is None:
        return
    if was_active:
        services.start(unit)
    again = f", and {unit} was started again" if was_active else ""
    raise ResetError(
        f"{why} while the bridge was stopping, so nothing was touched{again}; "
        "look at what changed in the bridge's directory"
    )


def scan(data_dir: Path) -> int:
    """Walk the data directory without following anything; its size in bytes. ResetError for
    an entry a backup could not hold or a restore must not recreate: a device or socket, a
    symlink leading out of the directory, nesting deeper than MAX_DEPTH."""
    links: dict[tuple[str, ...], str] = {}
    total = 0
    with safetar.dir_fd(data_dir) as top:
        for parts, st, link in _walk(top, ()):
            shown = "/".join(parts)
            if len(parts) > MAX_DEPTH:
                raise ResetError(
                    f"{data_dir} nests deeper than {MAX_DEPTH} directories "
                    f"('{safetar.shown(shown)}'); nothing was changed."
                )
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                links[parts] = link
                if link.startswith("/") or not link:
                    raise _leaves(data_dir, shown)
            elif stat.S_ISREG(mode):
                total += st.st_size
            elif not (stat.S_ISDIR(mode) or stat.S_ISFIFO(mode)):
                raise ResetError(
                    f"{data_dir}/{safetar.shown(shown)} is {bridgefile.kind(mode)}, which a "
                    "backup cannot hold; nothing was changed."
                )
    for parts in links:
        if safetar.escapes(parts, links):
            raise _leaves(data_dir, "/".join(parts))
    return total


def _leaves(data_dir: Path, shown: str) -> ResetError:
    return ResetError(
        f"{data_dir}/{safetar.shown(shown)} is a link leading out of the data directory; a "
        "full reset would back it up and a restore recreate it, so remove it first; nothing "
        "was changed."
    )


def _walk(
    fd: int, parts: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], os.stat_result, str]]:
    """(path components, lstat, link target) for every entry below `fd`, depth first. Stops
    descending past MAX_DEPTH (the caller refuses there), so descriptors stay bounded."""
    for entry in sorted(os.scandir(fd), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        here = (*parts, entry.name)
        link = os.readlink(entry.name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
        yield here, st, link
        if stat.S_ISDIR(st.st_mode) and len(here) <= MAX_DEPTH:
            sub = os.open(
                entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            try:
                yield from _walk(sub, here)
            finally:
                os.close(sub)


def copy_new(src: Path, dest: Path) -> None:
    """Copy a backup file to `dest`, which must not exist (O_EXCL) and is not followed if it
    is a link (O_NOFOLLOW); it gets the owner of its directory (the bridge's)."""
    with safetar.dir_fd(dest.parent) as dirfd:
        owner = os.fstat(dirfd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(dest.name, flags, 0o600, dir_fd=dirfd)
        try:
            with src.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    view = memoryview(chunk)
                    while view:  # a write may take less than it is given
                        view = view[os.write(out, view) :]
            os.fchown(out, owner.st_uid, owner.st_gid)
            os.fchmod(out, stat.S_IMODE(os.stat(src).st_mode))
            os.fsync(out)
        finally:
            os.close(out)


def private_dir(path: Path) -> None:
    """Refuse a backup directory that anyone but root could change, at any level: they could
    swap a backup between its verification and a restore. A world-writable sticky directory
    (/tmp) is fine on the way, since root's entries in it cannot be renamed by others."""
    real = Path(os.path.realpath(path))
    walked = Path("/")
    for part in ("/", *real.parts[1:]):
        walked = walked / part if part != "/" else walked
        try:
            st = os.stat(walked)
        except FileNotFoundError:
            return  # made later, by root, 0700
        sticky = bool(st.st_mode & stat.S_ISVTX)
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if st.st_uid != 0 or (writable and not sticky):
            raise ResetError(
                f"the backup directory {path} is not root's alone ({walked} is owned by uid "
                f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); keep backups in a "
                "directory only root can change, such as /var/lib/bridgedoctor/backups; "
                "nothing was changed.",
                usage=True,
            )
