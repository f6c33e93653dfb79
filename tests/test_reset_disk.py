"""A backup directory that fills up (tmpfs) or fails (ext4 answering EIO, then EROFS) in the
middle of a reset: the bridge is never left down when nothing was changed, every command says in
a sentence what happened and what is safe, none prints a traceback, and once the disk is usable
again the next command finishes the record."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bridgedoctor.reset.manifest import all_for
from bridgedoctor.reset.target import resolve
from tests.support import outside
from tests.support.disks import failing_ext4, tmpfs
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
