"""Files side of a backup: the free-space check, the data directory tar."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from . import paths, safetar
from .errors import ResetError

# Backups must fit with room to spare: COPY text is larger than the on-disk pages for bytea
# (escaped), and the disk is shared with whatever else runs.
SPACE_FACTOR = 2.0
SPACE_MARGIN = 1 << 20


def ensure_space(where: Path, needed: int) -> None:
    """Refuse before anything is touched when the backup would not fit."""
    free = shutil.disk_usage(where).free
    want = int(needed * SPACE_FACTOR) + SPACE_MARGIN
    if free < want:
        raise ResetError(
            f"not enough space for the backup in {where}: about {want // 1024} KiB needed, "
            f"{free // 1024} KiB free; nothing was changed (use --backup-dir)."
        )


def tree_size(path: Path) -> int:
    """Bytes in a data directory, walked without following links; refuses what a backup could
    not hold or a restore must not recreate (reset/paths.py `scan`)."""
    return paths.scan(path)


def dir_digest(path: Path) -> str:
    """sha256 over every entry's relative path, type, mode and content (or link target)."""
    h = hashlib.sha256()
    for rel in sorted(_walk(path)):
        p = path / rel
        st = os.lstat(p)
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(p).encode())
        elif stat.S_ISREG(st.st_mode):
            h.update(_file_sha(p).encode())
        h.update(b"\n")
    return h.hexdigest()


def _walk(path: Path) -> Iterator[str]:
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            yield os.path.relpath(os.path.join(root, name), path)


def _file_sha(p: Path) -> str:
    with p.open("rb") as f:
        return stream_sha(f)


def stream_sha(f: IO[bytes]) -> str:
    """Piece by piece: a big store's files (a SQLite database in its data directory, the tar
    holding it, its members) never have to fit in memory. reset/covered.py hashes with it too."""
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 16), b""):
        h.update(chunk)
    return h.hexdigest()


def tar_dir(src: Path, dest: Path) -> str:
    """Write src's contents (not src itself) to dest; return dest's sha256 read back from disk."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for rel in sorted(_walk(src)):
            tf.add(src / rel, arcname=rel, recursive=False)
    with dest.open("rb") as f:
        os.fsync(f.fileno())
    return _file_sha(dest)


def copy_file(src: Path, dest: Path) -> str:
    """Copy src to a new private dest, on disk before this returns; dest's sha256 read back."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, src.open("rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    return _file_sha(dest)


def verify_copy(copy: Path, expected_sha: str, src: Path) -> None:
    """Re-read a copied file: as written, and the same as its source (the bridge is stopped)."""
    if _file_sha(copy) != expected_sha or _file_sha(src) != expected_sha:
        raise ResetError(f"{copy.name} differs from {src} in the backup; nothing was changed.")


def verify_tar(tar: Path, expected_sha: str, src: Path) -> None:
    """Re-read the tar: its checksum, and every regular file's content against the source."""
    if _file_sha(tar) != expected_sha:
        raise ResetError(f"the backup {tar} does not read back as written; nothing was changed.")
    with tarfile.open(tar) as tf:
        for m in tf.getmembers():
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                if stream_sha(f) != _file_sha(src / m.name):
                    raise ResetError(f"{m.name} differs in the backup; nothing was changed.")


def clear_dir(path: Path) -> None:
    """Empty a directory, keeping the directory itself (its owner and mode stay the bridge's).
    Works below a descriptor of `path` (not a symlink) and follows no link inside it."""
    if not path.is_dir():
        path.mkdir(parents=True)
        return
    with safetar.dir_fd(path) as fd:
        clear_at(fd)


def clear_at(fd: int) -> None:
    for entry in list(os.scandir(fd)):
        if entry.is_dir(follow_symlinks=False):
            sub = os.open(
                entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            try:
                clear_at(sub)
            finally:
                os.close(sub)
            os.rmdir(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)


def untar_into(tar: Path, dest: Path) -> None:
    """Put a data-directory tar back: every member checked first (reset/safetar.py), then the
    directory emptied and the members recreated without following any link."""
    with tarfile.open(tar, "r:") as tf:
        members = safetar.check_members(tf.getmembers())
        if not dest.is_dir():
            dest.mkdir(parents=True)
        with safetar.dir_fd(dest) as fd:
            clear_at(fd)
            safetar.extract_checked(tf, members, fd)


def verify_tar_sha(tar: Path, expected_sha: str) -> None:
    if _file_sha(tar) != expected_sha:
        raise ResetError(f"the backup {tar} is damaged; nothing restored.")
