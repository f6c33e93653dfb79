"""The reset's own guards, each made to fire: a lock held by a live process is respected (a room
reset and a CLI reset of one bridge never run together), and a full backup whose files lost rows
on the way to disk is refused before anything is removed. Real PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgedoctor.reset import full, lock
from bridgedoctor.reset.dbio import open_db
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.target import resolve
from tests.support.cli import run
from tests.support.fleet import Host
from tests.support.reset_env import Systemd, options, state
from tests.test_reset import BRIDGE, engine, host

HOLD = (
    "import fcntl, os, sys, time; "
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(300)"
)
BUSY = "another reset or restore of this bridge is running"


def hold(bridge_dir: Path) -> subprocess.Popen[str]:
    """Another process (the 'other' reset) holding the bridge's lock until it is killed."""
    bridge_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(bridge_dir / lock.NAME)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Path]:
    """The bridge directory of a backup root, its lock held by a live process."""
    bridge_dir = tmp_path / "backups" / BRIDGE
    proc = hold(bridge_dir)
    yield bridge_dir
    proc.kill()
    proc.wait()


def test_lock_held_by_a_live_process_is_respected(holder: Path) -> None:
    with pytest.raises(ResetError, match=BUSY), lock.held(holder):
        pytest.fail("entered a lock another live process holds")
    assert lock.is_held(holder)  # still theirs


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """SIGKILL, as a crash or a reboot would: the kernel releases the lock with the process.
    The PID left in the file names a live process here (after a reboot PIDs are reused): it
    must not matter."""
    bridge_dir = tmp_path / "gmessages"
    proc = hold(bridge_dir)
    proc.kill()
    proc.wait()
    (bridge_dir / lock.NAME).write_text(str(os.getpid()))  # a live, unrelated PID
    assert not lock.is_held(bridge_dir)
    with lock.held(bridge_dir):
        assert lock.is_held(bridge_dir)
        with pytest.raises(ResetError, match=BUSY), lock.held(bridge_dir):
            pytest.fail("a second holder in the same process")
    assert not lock.is_held(bridge_dir)


def test_cli_reset_while_another_holds_the_lock_touches_nothing(
    host: Host, systemd: Systemd, holder: Path, capsys
) -> None:
    before = state(host, BRIDGE)
    argv = ["reset", BRIDGE, "--yes", *host.args(), "--backup-dir", str(holder.parent)]
    code, out = run(capsys, *argv)
    assert code == 1 and BUSY in out
    assert not [c for c in systemd.calls() if c.startswith(("stop", "start"))]
    assert state(host, BRIDGE) == before


def test_full_backup_missing_rows_on_disk_is_refused(tmp_path: Path, host: Host) -> None:
    """The full reset's verify step, like the crypto one (tests/test_reset_integrity.py): a
    table file that lost a row between the dump and the read-back is refused."""

    async def go() -> None:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            files = {}
            for t in await db.tables():
                rows = await db.dump(t, tmp_path / f"table.{t}.copy")
                files[t] = {"table": t, "where": "", "file": f"table.{t}.copy", "rows": rows}
            await full.verify_db(db, tmp_path, {"files": files})  # as written: accepted
            assert files["crypto_secrets"]["rows"] == 1
            assert len(files["crypto_secrets"]["sha256"]) == 64
            (tmp_path / files["crypto_secrets"]["file"]).write_bytes(b"")
            with pytest.raises(
                ResetError, match="crypto_secrets has 0 rows on disk, the dump sent 1"
            ):
                await full.verify_db(db, tmp_path, {"files": files})
        finally:
            await db.close()

    before = state(host, BRIDGE)
    asyncio.run(go())
    assert state(host, BRIDGE) == before


def test_a_lock_nobody_holds_is_free(tmp_path: Path) -> None:
    bridge_dir = tmp_path / "backups" / BRIDGE
    assert not lock.is_held(bridge_dir)  # no lock file yet
    with lock.held(bridge_dir):
        pass
    assert (bridge_dir / lock.NAME).exists() and not lock.is_held(bridge_dir)


def test_a_lock_file_that_is_a_link_is_never_followed(tmp_path: Path) -> None:
    """Only root can write the backup directory, but a link there is still never followed: a
    lock taken through it would lock some other file."""
    bridge_dir = tmp_path / "backups" / BRIDGE
    bridge_dir.mkdir(parents=True, mode=0o700)
    proc = hold(tmp_path / "elsewhere")  # a live process holds the file the link points to
    try:
        (bridge_dir / lock.NAME).symlink_to(tmp_path / "elsewhere" / lock.NAME)
        with pytest.raises(OSError) as e:
            lock.is_held(bridge_dir)
        assert e.value.errno == errno.ELOOP
        with pytest.raises(OSError) as e, lock.held(bridge_dir):
            pytest.fail("locked through a link")
        assert e.value.errno == errno.ELOOP
    finally:
        proc.kill()
        proc.wait()


def test_a_backup_needs_twice_its_size_free_and_a_margin(tmp_path: Path) -> None:
    """COPY text of bytea is larger than the table's pages: a backup is refused before anything
    is touched unless twice its estimated size (and a MiB) is free."""
    from bridgedoctor.reset.backup import SPACE_FACTOR, SPACE_MARGIN, ensure_space

    assert (SPACE_FACTOR, SPACE_MARGIN) == (2.0, 1 << 20)
    half = (shutil.disk_usage(tmp_path).free - SPACE_MARGIN) // 2
    slack = 64 << 20  # other writers on this disk may move the free space a little meanwhile
    ensure_space(tmp_path, half - slack)
    before = shutil.disk_usage(tmp_path).free
    with pytest.raises(ResetError) as e:
        ensure_space(tmp_path, half + slack)
    after = shutil.disk_usage(tmp_path).free
    want = (half + slack) * 2 + SPACE_MARGIN
    said = re.fullmatch(
        rf"not enough space for the backup in {re.escape(str(tmp_path))}: about (\d+) KiB "
        r"needed, (\d+) KiB free; nothing was changed \(use --backup-dir\)\.",
        str(e.value),
    )
    assert said is not None, str(e.value)
    assert int(said[1]) == want // 1024
    low, high = sorted((before, after))
    assert low // 1024 - 1024 <= int(said[2]) <= high // 1024 + 1024  # within a MiB of a read


def test_resolve_finds_and_pins_the_bridge_s_places(host: Host, engine: str) -> None:
    """reset/target.py: the unit's mounts name the directories (MDAD's defaults without a
    unit), the data directory and a SQLite store are pinned, a PostgreSQL store is the bridge's
    own; each refusal of the layout is a usage error in one sentence."""
    from bridgedoctor.reset import paths

    def ident(p: Path) -> tuple[int, int]:
        st = os.stat(p)
        return (st.st_dev, st.st_ino)

    b = resolve(BRIDGE, options(host))
    base = host.root / b.spec.dirname
    assert (b.base_dir, b.config_dir, b.data_dir) == (base, base / "config", base / "data")
    assert b.unit == f"{b.spec.service}.service" and b.name == BRIDGE
    assert b.data_pin == paths.Pin(base / "data", ident(base / "data"))
    if engine == "sqlite":
        assert b.store_pin is not None and b.store_pin.ident == ident(b.db.path)  # type: ignore[union-attr]
    else:
        assert b.store_pin is None and b.db.pin is not None  # type: ignore[union-attr]

    # The unit mounts other directories: those are the bridge's.
    unit = host.systemd / b.unit
    text = unit.read_text()
    shutil.copytree(base / "config", base / "conf2", symlinks=True)
    shutil.copytree(base / "data", base / "data2", symlinks=True)
    unit.write_text(
        text.replace(f"{b.spec.dirname}/config,dst", f"{b.spec.dirname}/conf2,dst").replace(
            f"{b.spec.dirname}/data,dst", f"{b.spec.dirname}/data2,dst"
        )
    )
    moved = resolve(BRIDGE, options(host))
    assert (moved.config_dir, moved.data_dir) == (base / "conf2", base / "data2")
    assert moved.data_pin == paths.Pin(base / "data2", ident(base / "data2"))
    unit.write_text(text)

    def refused(name: str = BRIDGE) -> str:
        with pytest.raises(ResetError) as e:
            resolve(name, options(host))
        assert e.value.usage is True
        return str(e.value)

    assert "nosuchbridge" in refused("nosuchbridge")
    config = base / "config" / "config.yaml"
    good = config.read_text()
    config.write_text(good.replace("uri:", "uri: 'nonsense://x'\n  old_uri:", 1))
    assert refused() == "the database URI scheme 'nonsense' is not supported."
    config.unlink()
    assert refused() == f"{config} does not exist."


def test_resolve_without_a_unit_and_through_a_linked_config_directory(
    host: Host, engine: str
) -> None:
    b = resolve(BRIDGE, options(host))
    base = b.base_dir
    (host.systemd / b.unit).unlink()  # no unit on this host: MDAD's own layout is assumed
    bare = resolve(BRIDGE, options(host))
    assert (bare.config_dir, bare.data_dir) == (base / "config", base / "data")
    # config.yaml is read from the bridge directory down: a linked config directory is refused.
    os.rename(base / "config", base / "config.real")
    (base / "config").symlink_to(base / "config.real")
    with pytest.raises(ResetError) as e:
        resolve(BRIDGE, options(host))
    assert e.value.usage is True and str(e.value).startswith(
        f"{base / 'config'} is a symbolic link"
    )


def test_a_sqlite_store_the_config_keeps_in_its_own_directory(tmp_path: Path) -> None:
    from tests.test_reset import deploy

    host = deploy(tmp_path / "host", None, "sqlite")
    b = resolve(BRIDGE, options(host))
    config = b.config_dir / "config.yaml"
    uri = str(b.db.path).replace(str(b.data_dir), "/data")  # type: ignore[union-attr]
    config.write_text(config.read_text().replace(uri, "/config/store.db", 1))
    moved = resolve(BRIDGE, options(host))
    assert moved.db.path == b.config_dir / "store.db"  # type: ignore[union-attr]
