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


def refusal(call) -> ResetError:  # noqa: ANN001
    with pytest.raises(ResetError) as e:
        call()
    assert e.value.usage is True  # a refusal of the bridge's layout, not a failure halfway
    return e.value


def test_a_pinned_store_is_refused_word_for_word(base: Path, tmp_path: Path) -> None:
    store = base / "data" / "x.db"
    NOTHING = "; nothing was changed."
    # Outside: the message of the base's own name is kept whole (it may end in a letter the
    # trailing dot is stripped from, here an X).
    based = tmp_path / "mautrix-X"
    (based / "data").mkdir(parents=True)
    assert str(refusal(lambda: paths.pin_dir(based, tmp_path))) == (
        f"{tmp_path} is outside the bridge directory {based}{NOTHING}"
    )
    gone = base / "data" / "gone" / "x.db"
    assert str(refusal(lambda: paths.pin_file(base, gone))) == f"{gone} does not exist{NOTHING}"
    os.link(store, base / "data" / "x.db.bak")
    assert str(refusal(lambda: paths.pin_file(base, store))) == (
        f"{store} has 2 hard links, so it may be another file's content; it was not read (MDAD "
        f"writes a file with one link){NOTHING}"
    )
    os.unlink(base / "data" / "x.db.bak")
    os.chown(store, 64_991, 64_991)
    assert str(refusal(lambda: paths.pin_file(base, store))) == (
        f"{store} is owned by uid 64991, not by the bridge's owner (uid {os.getuid()}) or root; "
        f"it was not read{NOTHING}"
    )
    os.chown(base / "data", 64_991, 64_991)  # the bridge's own file in its own directory
    assert paths.pin_file(base, store).ident == (os.stat(store).st_dev, os.stat(store).st_ino)
    store.unlink()
    store.symlink_to(tmp_path / "elsewhere.db")
    assert str(refusal(lambda: paths.pin_file(base, store))) == (
        f"{store} is a symbolic link; bridgedoctor does not follow links or special files in a "
        f"bridge's directory (MDAD writes real files there){NOTHING}"
    )


def test_a_store_that_is_a_fifo_is_refused_without_waiting(base: Path) -> None:
    import threading

    store = base / "data" / "x.db"
    store.unlink()
    os.mkfifo(store)
    got: list[object] = []

    def pin() -> None:
        try:
            got.append(paths.pin_file(base, store))
        except ResetError as e:
            got.append(e)

    t = threading.Thread(target=pin, daemon=True)
    t.start()
    t.join(10)
    waited = t.is_alive()
    if waited:  # opened without O_NONBLOCK: it waits for a writer; release it
        fd = os.open(store, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(10)
    assert not waited, "pin_file waited for a writer to open the FIFO"
    assert len(got) == 1
    assert str(got[0]) == (
        f"{store} is a FIFO, not a regular file; it was not read; nothing was changed."
    )


def test_a_store_deeper_down_is_pinned(base: Path) -> None:
    deep = base / "data" / "db" / "store" / "x.db"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"SQLite format 3\0")
    st = os.stat(deep)
    assert paths.pin_file(base, deep).ident == (st.st_dev, st.st_ino)


def test_a_backup_directory_refusal_is_a_usage_error(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 64_991, 64_991)
    assert "owned by uid 64991" in str(refusal(lambda: paths.private_dir(theirs / "backups")))


def test_links_leading_out_are_named_by_their_path(base: Path) -> None:
    data = base / "data"
    (data / "media" / "abs").symlink_to("/etc/passwd")
    with pytest.raises(ResetError) as e:
        paths.scan(data)
    assert str(e.value) == (
        f"{data}/media/abs is a link leading out of the data directory; a full reset would back "
        "it up and a restore recreate it, so remove it first; nothing was changed."
    )
    (data / "media" / "abs").unlink()
    (data / "media" / "up").symlink_to("../../..")
    with pytest.raises(ResetError) as e:
        paths.scan(data)
    assert str(e.value).startswith(f"{data}/media/up is a link leading out of the data directory;")


def test_a_tree_exactly_max_depth_deep_is_walked(base: Path) -> None:
    deepest = base / "data" / "/".join(["d"] * paths.MAX_DEPTH)
    deepest.mkdir(parents=True)
    (deepest / "f").write_bytes(b"1")  # a file below the deepest directory: depth + 1
    with pytest.raises(ResetError) as e:
        paths.scan(base / "data")
    shown = ("d/" * paths.MAX_DEPTH + "f")[:77] + "..."  # names are shown at most 80 long
    assert str(e.value) == (
        f"{base / 'data'} nests deeper than {paths.MAX_DEPTH} directories ('{shown}'); nothing "
        "was changed."
    )
    (deepest / "f").unlink()
    assert paths.scan(base / "data") == len(b"SQLite format 3\0") + 5


def test_a_missing_data_directory_is_named(base: Path) -> None:
    gone = base / "gone"
    assert str(refusal(lambda: paths.pin_dir(base, gone))) == (
        f"{gone} does not exist; nothing was changed."
    )


def test_a_data_directory_replaced_during_the_stop_is_refused(base: Path) -> None:
    data = paths.pin_dir(base, base / "data")
    os.rename(base / "data", base / "data.old")
    (base / "data").mkdir()
    with pytest.raises(ResetError) as e:
        paths.after_stop(base, data, None, False, "matrix-mautrix-x.service", was_active=False)
    assert str(e.value) == (
        f"{base / 'data'} was replaced while the bridge was stopping, so nothing was touched; "
        "look at what changed in the bridge's directory"
    )
