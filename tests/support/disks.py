"""Disks that fill up or fail, for the backup directory: real file systems, real errors.

- `tmpfs(path, size)`: a small tmpfs (ENOSPC once full).
- `failing_ext4(path)`: an ext4 file system on a loop device whose sparse image lives on a small
  tmpfs. Once that tmpfs is full (`fill` it), every write reaching a new part of the image fails
  in the block layer and ext4 answers EIO, then EROFS: a disk that dies mid-backup.
- `fill(path)`: one file that takes every free byte (ENOSPC for whoever writes next).
- `read_only(path)`: a mounted file system remounted read-only, as ext4's errors=remount-ro
  leaves a disk that failed (EROFS for every write, reads still work).

Mounting needs root. Without it the tests skip, unless BRIDGEDOCTOR_REQUIRE_MOUNTS is set
(scripts/test sets it): then they fail, so CI never silently skips them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _need(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("BRIDGEDOCTOR_REQUIRE_MOUNTS"):
        pytest.fail(f"{what} (BRIDGEDOCTOR_REQUIRE_MOUNTS is set)", pytrace=False)
    pytest.skip(what)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    _need(os.geteuid() == 0, "mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    _need(r.returncode == 0, f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


@contextlib.contextmanager
def failing_ext4(path: Path, backing: Path, image_size: str = "64M") -> Iterator[Path]:
    """ext4 at `path`, its image on a tmpfs at `backing`: `fill(backing)` makes it fail."""
    with tmpfs(backing, "16m"):
        image = backing / "disk.img"
        _run("truncate", "-s", image_size, str(image))
        r = _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                 str(image))  # fmt: skip
        _need(r.returncode == 0, f"mkfs.ext4 failed: {r.stderr.strip()}")
        loop = _run("losetup", "-f", "--show", str(image))
        _need(loop.returncode == 0, f"no loop device: {loop.stderr.strip()}")
        dev = loop.stdout.strip()
        try:
            path.mkdir(parents=True, exist_ok=True)
            r = _run("mount", "-o", "errors=continue", dev, str(path))
            _need(r.returncode == 0, f"cannot mount {dev}: {r.stderr.strip()}")
            try:
                yield path
            finally:
                _run("umount", "-l", str(path))
        finally:
            _run("losetup", "-d", dev)


def read_only(path: Path) -> None:
    r = _run("mount", "-o", "remount,ro", str(path))
    _need(r.returncode == 0, f"cannot remount {path} read-only: {r.stderr.strip()}")


def fill(path: Path, leave: int = 0, name: str = "filler") -> Path:
    """Take every free byte of path's file system but `leave` (ENOSPC for the next writer)."""
    target = path / name
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\0" * (1 << 16)
    try:
        while True:
            free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
            want = free - leave
            if want <= 0:
                break
            try:
                os.write(fd, block[: min(len(block), want)])
            except OSError:
                break
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return target
