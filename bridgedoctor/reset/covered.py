"""Empty a data directory of exactly what its verified backup holds, nothing else.

A full reset clears the data directory after the database. Normally everything in it is in the
backup tar, unchanged, and all of it goes. But when a crash falls between the two and the host
reboots, the enabled bridge starts on its empty database and writes new files before recovery
runs: those are in no backup and must stay. So an entry is removed only if the tar holds the same
path with the same type and content; anything else is kept and named.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

from .backup import stream_sha

Entry = tuple[str, str]  # (type, content sha256 or link target; "" for a directory)


def tar_index(tar: Path) -> dict[str, Entry]:
    """Path → (type, content) of every member of our own data tar."""
    out: dict[str, Entry] = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            name = m.name.rstrip("/")
            if m.isdir():
                out[name] = ("d", "")
            elif m.issym():
                out[name] = ("l", m.linkname)
            elif m.isfile() or m.islnk():  # a hard link reads as the file it links to
                f = tf.extractfile(m)
                assert f is not None
                out[name] = ("f", stream_sha(f))
    return out


def _entry(path: str) -> Entry | None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        return ("d", "")
    if stat.S_ISLNK(st.st_mode):
        return ("l", os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            return ("f", stream_sha(f))
    return None  # a socket or FIFO is never in our tar: kept


def clear_covered(data_dir: Path, tar: Path) -> list[str]:
    """Remove every entry of data_dir that the tar holds unchanged (the directory itself stays);
    returns the relative paths kept because they are new or changed, sorted."""
    index = tar_index(tar)
    kept: list[str] = []
    # Bottom-up, never following symlinks: a directory goes only once it is empty.
    for root, dirs, files in os.walk(data_dir, topdown=False):
        for name in files + dirs:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, data_dir)
            try:
                have = _entry(path)
            except OSError:
                kept.append(rel)
                continue
            if have is None or index.get(rel) != have:
                kept.append(rel)
            elif have[0] == "d":
                if not os.listdir(path):
                    os.rmdir(path)
            else:
                os.unlink(path)
    # A new directory is named once, not with everything in it.
    return sorted(k for k in kept if not any(k.startswith(o + os.sep) for o in kept))
