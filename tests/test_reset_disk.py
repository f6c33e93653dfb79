"""A backup directory that fills up (tmpfs) or fails (ext4 answering EIO, then EROFS) in the
middle of a reset: the bridge is never left down when nothing was changed, every command says in
a sentence what happened and what is safe, none prints a traceback, and once the disk is usable
again the next command finishes the record."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgedoctor.reset import manifest
from bridgedoctor.reset.manifest import RESERVE, RESERVE_BYTES, Manifest, RecordError, all_for
from bridgedoctor.reset.target import resolve
from tests.support import outside
from tests.support.disks import failing_ext4, fill, tmpfs
from tests.support.judge import digests
from tests.support.pg import PgServer
from tests.support.reset_env import RESET_BRIDGE, RESET_UNIT, Systemd, options
from tests.test_reset import deploy

BRIDGE, UNIT = RESET_BRIDGE, RESET_UNIT
HOOK = Path(__file__).parent / "support" / "disks.py"


def fill_command(path: Path) -> str:
    """Another program on the host takes every free byte of `path`'s file system."""
    code = f"import sys; sys.path.insert(0, {str(HOOK.parent)!r}); import disks; "
    code += f"disks.fill(__import__('pathlib').Path({str(path)!r}))"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Error:" not in text.replace("OSError", ""), text


def test_disk_fills_during_the_backup(tmp_path: Path, pg: PgServer, systemd: Systemd) -> None:
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    before = digests(target)
    backups = tmp_path / "backups"
    args = [*host.args(), "--backup-dir", str(backups)]
    with tmpfs(backups, "4m"):
        systemd.on_stop_once(UNIT, fill_command(backups))
        rc, text = outside.run("reset", BRIDGE, "--yes", *args)
        assert rc == 1, text
        no_traceback(text)
        assert "no space left in" in text and "nothing was changed" in text
        assert f"{UNIT} is running again" in text
        assert systemd.get(UNIT) == "active" and digests(target) == before
        (m,) = all_for(backups / BRIDGE)
        assert m.state == "rolled_back"  # the reserve let the record be written
        assert sorted(p.name for p in m.dir.iterdir()) == ["manifest.json"]  # partial gone

        # The disk is still full: every later command says so, none crashes.
        rc, text = outside.run("backups", BRIDGE, *args)
        assert rc == 0 and m.id in text and "rolled_back" in text, text
        rc, text = outside.run("reset", BRIDGE, "--yes", *args)
        assert rc == 1 and "not enough space" in text, text
        no_traceback(text)
        assert systemd.get(UNIT) == "active" and digests(target) == before

        (backups / "filler").unlink()
        rc, text = outside.run("reset", BRIDGE, "--yes", *args)
        assert rc == 0, text
        assert [x.state for x in all_for(backups / BRIDGE)] == ["rolled_back", "done"]


def test_disk_fails_during_the_backup(tmp_path: Path, pg: PgServer, systemd: Systemd) -> None:
    """EIO, then a read-only file system: nothing can be recorded at all. The bridge is started
    again, the record stays behind for later, and later commands refuse in a sentence."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    before = digests(target)
    backups, backing = tmp_path / "backups", tmp_path / "backing"
    args = [*host.args(), "--backup-dir", str(backups)]
    with failing_ext4(backups, backing):
        systemd.on_stop_once(UNIT, fill_command(backing))
        rc, text = outside.run("reset", BRIDGE, "--yes", *args)
        assert rc == 1, text
        no_traceback(text)
        # The kernel says EIO, ENOSPC or EROFS depending on which write met the dead blocks.
        errors = ("Input/output error", "No space left on device", "Read-only file system")
        assert any(e in text for e in errors), text
        assert "was not changed" in text and "could not be updated" in text, text
        assert systemd.get(UNIT) == "active" and digests(target) == before
        (m,) = all_for(backups / BRIDGE)
        assert m.state == "planned"  # on disk: what could be written before it failed

        rc, text = outside.run("backups", BRIDGE, *args)
        assert rc == 1 and "could not be finished" in text and m.id in text, text
        no_traceback(text)
        rc, text = outside.run("reset", BRIDGE, "--yes", *args)
        assert rc == 1, text
        no_traceback(text)
        assert systemd.get(UNIT) == "active" and digests(target) == before


# --- The manifest's reserve and atomic writes, without a reset around them ----------------


def record(bridge_dir: Path) -> Manifest:
    d = bridge_dir / "20261130T120000Z-crypto"
    d.mkdir(parents=True)
    return Manifest(id=d.name, kind="reset", bridge="whatsapp", mode="crypto",
                    requested_by="@admin:example.com", created_at=manifest.now(),
                    location=str(d), unit="matrix-mautrix-whatsapp.service")  # fmt: skip


def test_the_reserve_is_allocated_private_and_kept(tmp_path: Path) -> None:
    assert manifest.keep_reserve(tmp_path) is True
    st = os.stat(tmp_path / RESERVE)
    assert st.st_size == RESERVE_BYTES and st.st_blocks * 512 >= RESERVE_BYTES  # not sparse
    assert stat.S_IMODE(st.st_mode) == 0o600
    # Kept as it is: not written again.
    before = os.stat(tmp_path / RESERVE).st_mtime_ns
    assert manifest.keep_reserve(tmp_path) is True
    assert os.stat(tmp_path / RESERVE).st_mtime_ns == before


def test_a_sparse_reserve_is_allocated_again(tmp_path: Path) -> None:
    path = tmp_path / RESERVE
    with path.open("wb") as f:
        f.truncate(RESERVE_BYTES)  # the right size, no blocks: a full disk would not hold it
    assert os.stat(path).st_blocks == 0
    assert manifest.keep_reserve(tmp_path) is True
    assert os.stat(path).st_blocks * 512 >= RESERVE_BYTES


def test_no_reserve_where_there_is_no_directory_or_no_room(tmp_path: Path) -> None:
    assert manifest.keep_reserve(tmp_path / "gone") is False
    disk = tmp_path / "disk"
    with tmpfs(disk, "4m"):
        fill(disk, leave=RESERVE_BYTES // 2)
        assert manifest.keep_reserve(disk) is False
        assert not (disk / RESERVE).exists()  # a reserve that does not fit is not left half


def test_a_record_is_private_whole_and_never_written_through_a_link(tmp_path: Path) -> None:
    m = record(tmp_path)
    path = m.dir / m.FILE
    tmp = path.with_name(f".{path.name}.tmp")
    m.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and not tmp.exists()
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))
    tmp.write_text("x" * 100_000)  # a longer temp file left by a crash: truncated, not reused
    m.save()
    assert json.loads(path.read_text())["id"] == m.id and not tmp.exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("root's")
    tmp.symlink_to(elsewhere)
    m.state = "backed_up"
    with pytest.raises(RecordError) as e:
        m.save()
    assert str(e.value) == f"cannot write {path} (Too many levels of symbolic links)"
    assert elsewhere.read_text() == "root's"
    assert json.loads(path.read_text())["state"] == "planned"


@contextlib.contextmanager
def full_disk_with_a_reserve(tmp_path: Path) -> Iterator[tuple[Path, Manifest]]:
    """A 4 MiB tmpfs holding the reserve and a record, every other byte taken."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "4m"):
        assert manifest.keep_reserve(disk)
        m = record(disk)
        fill(disk)
        yield disk, m


def no_space(m: Manifest) -> RecordError:
    with pytest.raises(RecordError) as e:
        m.save()
    assert str(e.value) == f"cannot write {m.dir / m.FILE} (No space left on device)"
    assert e.value.errno == 28
    return e.value


def test_a_full_disk_draws_on_the_reserve_once(tmp_path: Path) -> None:
    with full_disk_with_a_reserve(tmp_path) as (disk, m):
        m.state = "rolled_back"
        m.save()  # ENOSPC, the reserve given up, written
        assert json.loads((m.dir / m.FILE).read_text())["state"] == "rolled_back"
        assert not (disk / RESERVE).exists()
        fill(disk, name="more")
        m.extra = {"pad": "x" * 20_000}  # larger than what is left once the reserve is gone
        no_space(m)


def test_a_record_larger_than_the_reserve_still_fails_in_a_sentence(tmp_path: Path) -> None:
    with full_disk_with_a_reserve(tmp_path) as (disk, m):
        m.extra = {"pad": "x" * (2 * RESERVE_BYTES)}  # the freed reserve is not enough
        no_space(m)  # ENOSPC, the reserve given up, ENOSPC again
        assert not (disk / RESERVE).exists()


def test_giving_up_a_reserve_that_is_not_there(tmp_path: Path) -> None:
    assert manifest.give_up_reserve(tmp_path) is False
    assert manifest.keep_reserve(tmp_path) and manifest.give_up_reserve(tmp_path) is True


def test_an_error_without_errno_is_named_by_its_kind(tmp_path: Path) -> None:
    e = manifest.record_error(tmp_path / "m.json", OSError("no errno"))
    assert (str(e), e.errno) == (f"cannot write {tmp_path / 'm.json'} (OSError)", 0)
    e = manifest.record_error(tmp_path / "m.json", PermissionError(13, "denied"))
    assert (str(e), e.errno) == (f"cannot write {tmp_path / 'm.json'} (Permission denied)", 13)


def test_a_record_is_written_for_people_and_a_damaged_one_is_passed_over(tmp_path: Path) -> None:
    m = record(tmp_path)
    m.save()
    text = (m.dir / m.FILE).read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    damaged = tmp_path / "20261130T110000Z-crypto"  # sorts first
    damaged.mkdir()
    (damaged / m.FILE).write_text("{not json")
    assert [r.id for r in manifest.load_all(Manifest, tmp_path)] == [m.id]
