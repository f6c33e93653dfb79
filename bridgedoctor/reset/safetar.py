"""Extract a data-directory backup without trusting a single name or link in it.

`tarfile.extractall` is not used: before Python 3.11.4 it has no `filter=` (Debian 12 ships
3.11.2), and even `filter="fully_trusted"` writes through symlinks. The archive mirrors a data
directory the bridge's container could write, so every member is checked first, all of them,
before anything is touched:

- names are relative, without `..`, `.` or empty components, each at most once;
- only directories, regular files, symlinks, hard links and FIFOs (no devices);
- a symlink is relative and, resolved against the archive's own tree (other symlinks followed,
  dangling parts taken as plain directories), stays inside the directory;
- a hard link names a regular file that comes earlier in the archive;
- every member's parent directory comes earlier in the archive (our archives list parents first).

Then every entry is created relative to directory descriptors opened with O_NOFOLLOW, files with
O_CREAT|O_EXCL|O_NOFOLLOW, so nothing is followed and nothing existing is written through; owners
(numeric), modes and modification times are put back, directories' last.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ResetError

MAX_LINK_HOPS = 40  # as the kernel's MAXSYMLINKS
_CHUNK = 1 << 20


def shown(name: str) -> str:
    """An archive name as it may be printed: escaped (no control or bidi characters), short."""
    text = name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _parts(name: str, what: str) -> tuple[str, ...]:
    parts = tuple(name.split("/"))
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ResetError(
            f"the backup's {what} '{shown(name)}' is not a plain relative path inside the data "
            "directory; nothing was restored."
        )
    return parts


def check_members(members: list[tarfile.TarInfo]) -> list[tuple[tuple[str, ...], tarfile.TarInfo]]:
    """Every member with its path components, or ResetError naming the first bad one."""
    out: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
    kinds: dict[tuple[str, ...], str] = {}
    links: dict[tuple[str, ...], str] = {}
    for m in members:
        parts = _parts(m.name, "entry")
        if parts in kinds:
            raise ResetError(f"the backup lists '{shown(m.name)}' twice; nothing was restored.")
        if parts[:-1] and kinds.get(parts[:-1]) != "dir":
            raise ResetError(
                f"the backup's entry '{shown(m.name)}' comes before its directory; "
                "nothing was restored."
            )
        if m.isdir():
            kinds[parts] = "dir"
        elif m.isreg():
            kinds[parts] = "file"
        elif m.issym():
            kinds[parts] = "link"
            if m.linkname.startswith("/") or not m.linkname:
                raise ResetError(
                    f"the backup's link '{shown(m.name)}' points to an absolute path; "
                    "nothing was restored."
                )
            links[parts] = m.linkname
        elif m.islnk():
            target = _parts(m.linkname, "hard link target")
            if kinds.get(target) != "file":
                raise ResetError(
                    f"the backup's hard link '{shown(m.name)}' does not name a file earlier in "
                    "the backup; nothing was restored."
                )
            kinds[parts] = "file"
        elif m.isfifo():
            kinds[parts] = "fifo"
        else:
            raise ResetError(
                f"the backup's entry '{shown(m.name)}' is a device or special file; "
                "nothing was restored."
            )
        out.append((parts, m))
    for parts in links:
        if escapes(parts, links):
            raise ResetError(
                f"the backup's link '{shown('/'.join(parts))}' leads outside the data "
                "directory; nothing was restored."
            )
    return out


def escapes(link: tuple[str, ...], links: dict[tuple[str, ...], str]) -> bool:
    """Resolve a link against the archive's tree: True if it leaves the top or loops."""
    todo = list(reversed(links[link].split("/")))
    cur: list[str] = list(link[:-1])
    hops = 0
    while todo:
        comp = todo.pop()
        if comp in ("", "."):
            continue
        if comp == "..":
            if not cur:
                return True
            cur.pop()
            continue
        cur.append(comp)
        target = links.get(tuple(cur))
        if target is not None:
            hops += 1
            if hops > MAX_LINK_HOPS or target.startswith("/"):
                return True
            cur.pop()
            todo.extend(reversed(target.split("/")))
    return False


def extract_checked(
    tf: tarfile.TarFile, members: list[tuple[tuple[str, ...], tarfile.TarInfo]], top: int
) -> None:
    dirs: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
    for parts, m in members:
        with _walk(top, parts[:-1]) as parent:
            _create(tf, m, parts, parent, top)
        if m.isdir():
            dirs.append((parts, m))
    # Directories last, deepest first: creating their entries changed their times.
    for parts, m in reversed(dirs):
        with _walk(top, parts) as fd:
            _own(fd, m)


def _create(
    tf: tarfile.TarFile, m: tarfile.TarInfo, parts: tuple[str, ...], parent: int, top: int
) -> None:
    name = parts[-1]
    if m.isdir():
        os.mkdir(name, 0o700, dir_fd=parent)
    elif m.isreg():
        src = tf.extractfile(m)
        assert src is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        try:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                os.write(fd, chunk)
            _own(fd, m)
            os.fsync(fd)
        finally:
            os.close(fd)
    elif m.issym():
        os.symlink(m.linkname, name, dir_fd=parent)
        os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        os.utime(name, (m.mtime, m.mtime), dir_fd=parent, follow_symlinks=False)
    elif m.islnk():
        target = tuple(m.linkname.split("/"))
        with _walk(top, target[:-1]) as src_dir:
            os.link(target[-1], name, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False)
    elif m.isfifo():
        os.mkfifo(name, 0o600, dir_fd=parent)
        fd = os.open(
            name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
        try:
            _own(fd, m)
        finally:
            os.close(fd)


def _own(fd: int, m: tarfile.TarInfo) -> None:
    # chown before chmod: changing the owner clears setuid/setgid bits.
    os.fchown(fd, m.uid, m.gid)
    os.fchmod(fd, stat.S_IMODE(m.mode))
    os.utime(fd, (m.mtime, m.mtime))


@contextmanager
def dir_fd(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ResetError(
            f"{path} is not a plain directory ({e.strerror}); nothing was restored."
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _walk(top: int, parts: tuple[str, ...]) -> Iterator[int]:
    """A descriptor for top/parts..., no component followed if it is a symlink."""
    fd = os.dup(top)
    try:
        for name in parts:
            nxt = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)
