"""reset/paths.py: pinning a bridge's paths, walking a data directory, root-only backups."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bridgedoctor.reset import paths
from bridgedoctor.reset.errors import ResetError


@pytest.fixture
def base(tmp_path: Path) -> Path:
    b = tmp_path / "mautrix-x"
    (b / "data" / "media").mkdir(parents=True)
    (b / "data" / "x.db").write_bytes(b"SQLite format 3\0")
    (b / "data" / "media" / "f").write_bytes(b"12345")
    return b


def test_pins(base: Path, tmp_path: Path) -> None:
    pin = paths.pin_dir(base, base / "data")
    assert pin.ident == (os.stat(base / "data").st_dev, os.stat(base / "data").st_ino)
    assert paths.pin_file(base, base / "data" / "x.db").ident is not None
    assert paths.pin_file(base, base / "data" / "missing.db").ident is None
    with pytest.raises(ResetError, match="outside the bridge directory"):
        paths.pin_dir(base, tmp_path)
    (base / "elsewhere").mkdir()
    os.rename(base / "data", base / "data.real")
    (base / "data").symlink_to(base / "elsewhere")
    with pytest.raises(ResetError, match="is a symbolic link"):
        paths.pin_dir(base, base / "data")


def test_repin_sees_a_replacement(base: Path) -> None:
    pin = paths.pin_file(base, base / "data" / "x.db")
    assert paths.repin(base, pin, directory=False) is None
    (base / "data" / "y.db").write_bytes(b"other")
    os.replace(base / "data" / "y.db", base / "data" / "x.db")
    assert paths.repin(base, pin, directory=False) == f"{base / 'data' / 'x.db'} was replaced"


def test_scan(base: Path) -> None:
    assert paths.scan(base / "data") == len(b"SQLite format 3\0") + 5
    (base / "data" / "inside").symlink_to("media/f")
    (base / "data" / "media" / "up").symlink_to("../x.db")
    assert paths.scan(base / "data") > 0  # links that stay inside are fine


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: (d / "out").symlink_to("/etc"), "leading out"),
        (lambda d: (d / "media" / "up").symlink_to("../../.."), "leading out"),
        (lambda d: ((d / "a").symlink_to("media"), (d / "media" / "b").symlink_to("../a/../..")),
         "leading out"),
        (lambda d: _socket(d / "s.sock"), "is a socket"),
        (lambda d: os.mknod(d / "dev", 0o600 | 0o020000, os.makedev(1, 3)), "character device"),
        (lambda d: (d / ("d/" * (paths.MAX_DEPTH + 1))).mkdir(parents=True), "nests deeper"),
    ],
)  # fmt: skip
def test_scan_refuses(base: Path, make, needle: str) -> None:  # noqa: ANN001
    make(base / "data")
    with pytest.raises(ResetError, match=needle):
        paths.scan(base / "data")


def _socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


def test_copy_new_never_writes_through(base: Path, tmp_path: Path) -> None:
    src = tmp_path / "backup.db"
    src.write_bytes(b"restored")
    target = tmp_path / "authorized_keys"
    target.write_text("root's")
    (base / "data" / "x.db").unlink()
    (base / "data" / "x.db").symlink_to(target)
    with pytest.raises(FileExistsError):
        paths.copy_new(src, base / "data" / "x.db")
    assert target.read_text() == "root's"
    (base / "data" / "x.db").unlink()
    paths.copy_new(src, base / "data" / "x.db")
    st = os.stat(base / "data" / "x.db")
    assert (base / "data" / "x.db").read_bytes() == b"restored"
    assert st.st_uid == os.stat(base / "data").st_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root")
def test_private_dir(tmp_path: Path) -> None:
    ok = tmp_path / "root-only" / "backups"
    ok.mkdir(parents=True)
    paths.private_dir(ok)  # /tmp is world-writable but sticky: fine
    paths.private_dir(ok / "not-yet")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    with pytest.raises(ResetError, match="is not root's alone"):
        paths.private_dir(shared / "backups")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 64_991, 64_991)
    with pytest.raises(ResetError, match="owned by uid 64991"):
        paths.private_dir(theirs / "backups")
