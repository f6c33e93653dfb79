"""Recovery re-establishes its preconditions instead of trusting the record.

The CLI runs as a real process and is killed from outside (SIGKILL to its process group); a
reboot is simulated at the systemctl boundary: every unit's process dies, the enabled unit starts
by itself and its stand-in bridge writes new crypto rows, as a real bridge would, before
recovery runs. Judged by the tests' own digests and by where every stand-in row went.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgedoctor.reset import lock
from bridgedoctor.reset.dbio import FENCE
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.manifest import FINAL, Manifest, RecordError, all_for
from bridgedoctor.reset.manifest import now as manifest_now
from bridgedoctor.reset.recover import describe, recover, roll_back
from bridgedoctor.reset.target import resolve
from tests.support import outside
from tests.support.fleet import Host
from tests.support.judge import STANDIN_TABLE, digests, standin_in_backups, standin_present
from tests.support.pg import PgServer
from tests.support.reset_env import (
    RESET_BRIDGE,
    RESET_UNIT,
    Systemd,
    options,
    standin_command,
    standin_rows,
)
from tests.test_reset import CRYPTO_GONE, _as_superuser, _exec, deploy

BRIDGE, UNIT = RESET_BRIDGE, RESET_UNIT
CRASH = "BRIDGEDOCTOR_CRASH_AT"


def slow_once(host, table: str, event: str, seconds: int) -> None:  # type: ignore[no-untyped-def]
    """bridgedoctor's first `event` statement on `table` sleeps: a window to kill the CLI inside
    it (a sequence, not a table, counts: it does not roll back with the killed transaction)."""
    _exec(
        host,
        "CREATE SEQUENCE slow_once",
        "CREATE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF current_setting('application_name') = 'bridgedoctor-reset' "
        f"AND nextval('slow_once') = 1 THEN PERFORM pg_sleep({seconds}); END IF; "
        "RETURN NULL; END $$",
        f"CREATE TRIGGER slow_once BEFORE {event} ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION slow_once()",
    )


def args(host, backups: Path) -> list[str]:  # type: ignore[no-untyped-def]
    return [*host.args(), "--backup-dir", str(backups)]


def start_bridge(host, systemd: Systemd, log: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FAKE_SYSTEMCTL_BRIDGE", standin_command(host, BRIDGE, log))
    systemd.reboot([UNIT])
    n = len(standin_rows(log))
    outside.wait_until(lambda: len(standin_rows(log)) >= n + 3, what="the bridge writing")


def kill_inside_the_delete(host: Host, backups: Path) -> None:
    """A crypto reset killed after its verified backup, inside its (slowed) delete."""
    slow_once(host, "crypto_olm_session", "DELETE OR TRUNCATE", 4)
    kill_after_the_backup(host, backups)


def kill_after_the_backup(host: Host, backups: Path, *extra: str) -> None:
    """Run a reset and kill it half a second after its verified backup is on record: inside
    its destructive step, which the caller has slowed."""
    p = outside.spawn("reset", BRIDGE, *extra, "--yes", *args(host, backups))
    outside.wait_until(
        lambda: (
            outside.manifest_where(backups / BRIDGE, lambda m: m["state"] == "backed_up")
            or p.poll() is not None
        ),
        what="the verified backup",
    )
    assert p.poll() is None, p.communicate()
    time.sleep(0.5)  # inside the destructive step now
    outside.kill_group(p)


def test_reboot_mid_crypto_reset_loses_no_row(
    tmp_path: Path, pg: PgServer, systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the verified backup, inside the delete; the host reboots and the enabled
    bridge stores new sessions. Recovery must stop it before touching the database, and must not
    delete what no backup holds: the reset is rolled back, every row is still there."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    log, backups = tmp_path / "standin.log", tmp_path / "backups"
    start_bridge(host, systemd, log, monkeypatch)
    before = digests(target)
    kill_inside_the_delete(host, backups)
    n = len(standin_rows(log))
    systemd.reboot([UNIT])
    outside.wait_until(lambda: len(standin_rows(log)) >= n + 5, what="new rows after the boot")

    (r,) = asyncio.run(recover(backups))

    (m,) = all_for(backups / BRIDGE)
    assert m.state == "rolled_back", (m.state, m.error)
    assert "changed after it was backed up" in m.error
    assert m.error.endswith("; nothing was removed, run the reset again")
    assert r.sentence == f"the interrupted reset {m.id} of {BRIDGE} was rolled back: {m.error}."
    assert digests(target) == before  # nothing of the bridge's own was removed
    written = set(standin_rows(log))
    lost = written - standin_present(target) - standin_in_backups(backups / BRIDGE)
    assert not lost, f"{len(lost)} rows the bridge wrote are gone"
    after_boot = systemd.calls_since_reboot()
    assert after_boot[0] == f"stop {UNIT}", after_boot  # stopped before anything else
    assert systemd.get(UNIT) == "active"


@pytest.mark.parametrize("damaged", [False, True])
def test_a_crypto_reset_killed_in_its_delete_goes_on_only_from_a_backup_that_still_holds(
    tmp_path: Path, pg: PgServer, systemd: Systemd, damaged: bool
) -> None:
    """Killed inside the delete, with nothing run since: the verified backup still describes
    the store exactly, so recovery finishes the reset. If a backup file no longer reads back
    as verified, it rolls back instead and says which file."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    before = digests(target)
    kill_inside_the_delete(host, backups)
    (m,) = all_for(backups / BRIDGE)
    name = m.tables["crypto_olm_session"]["file"]
    if damaged:
        with open(m.dir / name, "ab") as f:
            f.write(b"a line more\n")

    (r,) = asyncio.run(recover(backups))

    (m,) = all_for(backups / BRIDGE)
    assert systemd.get(UNIT) == "active"
    if damaged:
        assert (m.state, m.error) == (
            "rolled_back",
            f"the backup file {name} no longer reads back as verified; nothing was removed, "
            "run the reset again",
        )
        assert digests(target) == before
        return
    assert r.sentence == f"the interrupted reset {m.id} of {BRIDGE} was finished: done."
    after = digests(target)
    assert [t for t in CRYPTO_GONE if after[t][0]] == []


def kill_inside_the_drop(host: Host, pg: PgServer, backups: Path) -> None:
    """A full reset killed after its verified backup, inside its (slowed) DROP OWNED: an event
    trigger, which only a superuser of the bridge's database can make, sleeps once."""
    _exec(host, "CREATE SEQUENCE slow_once")
    (name,) = host.databases.values()
    pg.as_superuser(
        name,
        "CREATE FUNCTION slow_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF current_setting('application_name') = 'bridgedoctor-reset' "
        "AND nextval('slow_once') = 1 THEN PERFORM pg_sleep(4); END IF; END $$",
        "CREATE EVENT TRIGGER slow_drop ON ddl_command_start "
        "WHEN TAG IN ('DROP OWNED') EXECUTE FUNCTION slow_drop()",
    )
    kill_after_the_backup(host, backups, "--mode", "full")


@pytest.mark.parametrize(
    "since", ["nothing", "database written", "data written", "data.tar damaged"]
)
def test_a_full_reset_killed_in_its_drop_goes_on_only_if_the_backup_still_describes_it(
    tmp_path: Path, pg: PgServer, systemd: Systemd, since: str
) -> None:
    """Before its point of no return a full reset goes on after a crash only if the backup
    still describes the bridge: its database, its data directory (the bridge may have run
    and written there), and the data.tar that holds that directory."""
    host = deploy(tmp_path, pg, "postgres")
    bridge = resolve(BRIDGE, options(host))
    backups = tmp_path / "backups"
    before = digests(bridge.db)
    kill_inside_the_drop(host, pg, backups)
    (m,) = all_for(backups / BRIDGE)
    if since == "database written":
        _exec(host, "CREATE TABLE written_since (id integer)")  # a migration, say
    elif since == "data written":
        (bridge.data_dir / "written-since").write_text("the bridge ran")
    elif since == "data.tar damaged":
        with open(m.dir / "data.tar", "ab") as f:
            f.write(bytes(512))

    (r,) = asyncio.run(recover(backups))

    (m,) = all_for(backups / BRIDGE)
    assert systemd.get(UNIT) == "active"
    why = {
        "database written": "the database changed after it was backed up (the bridge ran "
        "meanwhile)",
        "data written": "the data directory changed after it was backed up (the bridge ran "
        "meanwhile)",
        "data.tar damaged": "the backup data.tar no longer reads back as verified",
    }.get(since)
    if why is None:
        assert r.sentence == f"the interrupted reset {m.id} of {BRIDGE} was finished: done."
        assert digests(bridge.db) == {}
        return
    assert (m.state, m.error) == (
        "rolled_back",
        f"{why}; nothing was removed, run the reset again",
    )
    after = digests(bridge.db)
    assert (after.pop("written_since", None) is not None) == (since == "database written")
    assert after == before


def test_reboot_mid_restore_stops_the_bridge_first(
    tmp_path: Path, pg: PgServer, systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore killed inside its load; the host reboots, the bridge runs on the reset store.
    Recovery stops it before redoing the load, then the backup is back exactly."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    original = digests(target)
    rc, text = outside.run("reset", BRIDGE, "--yes", *args(host, backups))
    assert rc == 0, text
    (reset,) = all_for(backups / BRIDGE)
    log = tmp_path / "standin.log"
    start_bridge(host, systemd, log, monkeypatch)
    slow_once(host, "crypto_olm_session", "INSERT", 4)
    p = outside.spawn("restore", BRIDGE, reset.id, "--yes", *args(host, backups))
    outside.wait_until(
        lambda: outside.manifest_where(
            backups / BRIDGE, lambda m: m["kind"] == "restore" and "stop" in outside.steps(m)
        ),
        what="the restore past its stop",
    )
    time.sleep(0.5)  # inside the load now
    outside.kill_group(p)
    systemd.reboot([UNIT])
    n = len(standin_rows(log))
    outside.wait_until(lambda: len(standin_rows(log)) >= n + 5, what="new rows after the boot")

    asyncio.run(recover(backups))

    assert [m.state for m in all_for(backups / BRIDGE)] == ["done", "done"]
    after_boot = systemd.calls_since_reboot()
    assert after_boot[0] == f"stop {UNIT}", after_boot  # before the load was redone
    restored = digests(target)
    assert {t: restored[t] for t in original} == original  # the backup, exactly
    assert systemd.get(UNIT) == "active"


def test_crash_before_the_bridge_is_started_again(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """A reset interrupted before its backup was verified is rolled back; recovery itself is
    then killed while `systemctl start` runs. The next recovery must still start the bridge:
    a manifest is only final once the unit is as the admin had it."""
    host = deploy(tmp_path, pg, "postgres")
    backups = tmp_path / "backups"
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "backup"})
    assert rc == 137 and systemd.get(UNIT) == "inactive"
    systemd.hang_start(UNIT)
    code = "import asyncio, sys; from bridgedoctor.reset.recover import recover; "
    code += f"asyncio.run(recover(__import__('pathlib').Path({str(backups)!r})))"
    p = subprocess.Popen([sys.executable, "-c", code], env=outside.cli_env(),
                         start_new_session=True, text=True)  # fmt: skip
    outside.wait_until(lambda: f"start {UNIT}" in systemd.calls(), what="the start")
    outside.kill_group(p)
    systemd.hang_start(UNIT, on=False)
    assert systemd.get(UNIT) == "inactive"

    asyncio.run(recover(backups))

    (m,) = all_for(backups / BRIDGE)
    assert m.state == "rolled_back"
    assert systemd.get(UNIT) == "active"


def test_listing_backups_finishes_an_interrupted_reset(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """On a host without the helper, `bridgedoctor backups` is a moment that brings the bridge
    back: it recovers, then lists."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "apply"})
    assert rc == 137 and systemd.get(UNIT) == "inactive"
    rc, text = outside.run("backups", BRIDGE, *args(host, backups))
    assert rc == 0, text
    assert "was finished: done" in text and "Traceback" not in text
    (m,) = all_for(backups / BRIDGE)
    assert m.state in FINAL and m.state == "done"
    assert systemd.get(UNIT) == "active"
    assert all(digests(target)[t][0] == 0 for t in CRYPTO_GONE)
    rc, text = outside.run("backups", BRIDGE, *args(host, backups))
    assert rc == 0 and "was finished" not in text  # nothing left to do: a plain list


def test_no_bridge_outlives_the_harness(systemd: Systemd, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness finds a unit's processes by what they inherit, not by its pid file (a race
    can lose that), and its teardown kills them: no stand-in bridge is left running."""
    monkeypatch.setenv("FAKE_SYSTEMCTL_BRIDGE", "sleep 600 & exec sleep 600")
    systemd.reboot([UNIT])
    pidfile = systemd.state / f"{UNIT}.pid"
    leader = int(pidfile.read_text())
    pidfile.unlink()
    # The unit's process and its child (forked a moment after the start returned).
    found = outside.wait_until(
        lambda: f if len(f := systemd.processes(units_only=True)) == 2 else None,
        timeout=10, what="the unit's two processes",
    )  # fmt: skip
    assert leader in found, found
    assert set(systemd.kill()) >= set(found)
    assert systemd.processes() == []


@pytest.mark.parametrize(
    ("error", "phrase"),
    [
        # Refusals are sentences already: their closing full stop goes, the rest stays.
        (
            ResetError("the disk is full. Free space on /dev/sdX."),
            "the disk is full. Free space on /dev/sdX",
        ),
        (ResetError("...the lock is held..."), "...the lock is held"),
        (
            RecordError(errno.ENOSPC, "the record cannot be written."),
            "the record cannot be written",
        ),
        # A system error reads as the system's own words and the file it was about.
        (
            OSError(errno.ENOSPC, "ignored", "/srv/backups/x"),
            "No space left on device (/srv/backups/x)",
        ),
        (OSError(errno.EIO, "ignored"), "Input/output error"),
        # Anything else keeps its type, which says more than an empty message.
        (OSError("no errno here"), "OSError: no errno here"),
        (ValueError(), "ValueError"),
        (KeyError("step"), "KeyError: 'step'"),
    ],
)
def test_a_failure_is_one_phrase(error: BaseException, phrase: str) -> None:
    assert describe(error) == phrase


def test_recovery_says_when_the_bridge_will_not_start_again(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """A reset interrupted before its backup was verified is rolled back; the bridge's own start
    then fails. The admin reads systemd's refusal, not a placeholder."""
    host = deploy(tmp_path, pg, "postgres")
    backups = tmp_path / "backups"
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "backup"})
    assert rc == 137 and systemd.get(UNIT) == "inactive"
    systemd.refuse_start_once(UNIT)

    (r,) = asyncio.run(recover(backups))

    assert r.manifest.state == "rolled_back"
    assert r.sentence.endswith(
        f"was rolled back (interrupted before the backup was verified; nothing was changed). "
        f"systemctl start {UNIT} failed; see journalctl -u {UNIT}."
    ), r.sentence
    assert systemd.get(UNIT) == "inactive"


def interrupted(tmp_path: Path, kind: str, steps: list[str], bridge: str = BRIDGE) -> Manifest:
    """A record left on disk as an interrupted reset or restore leaves it, with the files its
    backup step had written so far."""
    d = tmp_path / "backups" / bridge / f"20261201T020000Z-{kind}"
    d.mkdir(parents=True)
    m = Manifest(id=d.name, kind=kind, bridge=bridge, mode="crypto",  # type: ignore[arg-type]
                 requested_by="@admin:example.com", created_at=manifest_now(),
                 location=str(d), unit=UNIT, was_active=True,
                 steps=[{"step": s, "at": manifest_now()} for s in steps],
                 extra={"op_dir": str(d)})  # fmt: skip
    m.save()
    for name in ("crypto_olm_session.tsv", "schema.sql"):
        (d / name).write_text("partial\n")
    (d / "keep").mkdir()
    return m


def test_rolling_back_removes_a_backup_that_never_verified(
    tmp_path: Path, systemd: Systemd
) -> None:
    """It is of no use, and may be what filled the disk: only the record stays."""
    m = interrupted(tmp_path, "reset", ["stop", "backup"])
    systemd.set(UNIT, "inactive")

    assert asyncio.run(roll_back(m, "interrupted")) == ""  # nothing more to tell

    assert sorted(p.name for p in m.dir.iterdir()) == ["keep", "manifest.json"]
    assert Manifest.load(m.dir / "manifest.json").state == "rolled_back"
    assert systemd.get(UNIT) == "active"


@pytest.mark.parametrize(
    ("kind", "steps"),
    [("reset", ["stop", "backup", "verify"]), ("restore", ["stop"])],
    ids=["verified-reset", "restore"],
)
def test_rolling_back_keeps_a_verified_backup_and_a_restores_source(
    tmp_path: Path, systemd: Systemd, kind: str, steps: list[str]
) -> None:
    """A verified backup is what the roll-back puts back; a restore's directory is never
    emptied, whatever it holds."""
    m = interrupted(tmp_path, kind, steps)
    systemd.set(UNIT, "inactive")

    asyncio.run(roll_back(m, "interrupted"))

    names = sorted(p.name for p in m.dir.iterdir())
    assert names == ["crypto_olm_session.tsv", "keep", "manifest.json", "schema.sql"]


def test_a_committed_restore_is_not_loaded_again_after_a_reboot(
    tmp_path: Path, pg: PgServer, systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore killed after its load committed, before its record said so; the host reboots
    and the bridge stores new sessions on the restored store. Recovery must find the load done
    (its fence is gone) instead of loading the backup again over those sessions."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    reset, argv = reset_then_restore(host, backups)
    rc, _ = outside.run(*argv, **{CRASH: "restore_db"})
    assert rc == 137 and systemd.get(UNIT) == "inactive"
    log = tmp_path / "standin.log"
    start_bridge(host, systemd, log, monkeypatch)

    (r,) = asyncio.run(recover(backups))

    assert (r.manifest.state, r.finished) == ("done", True)
    assert r.sentence == f"the interrupted restore {r.manifest.id} of {BRIDGE} was finished: done."
    assert "restore_db" in r.manifest.done_steps()
    none_lost(log, target)
    assert systemd.get(UNIT) == "active"


def test_a_restore_that_fails_while_being_finished_says_how_to_retry(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """A restore killed right after its stop; when recovery finishes it, the database refuses
    the bridge's user. The record says failed, why, and the bridge stays stopped (its store is
    not what either side of the restore holds); the sentence names the command to retry."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    reset, argv = reset_then_restore(host, backups)
    assert outside.run(*argv, **{CRASH: "stop"})[0] == 137
    asyncio.run(_as_superuser(pg, f'ALTER ROLE "{target.user}" CONNECTION LIMIT 0'))
    try:
        (r,) = asyncio.run(recover(backups))
    finally:
        asyncio.run(_as_superuser(pg, f'ALTER ROLE "{target.user}" CONNECTION LIMIT -1'))

    on_disk = Manifest.load(r.manifest.dir / "manifest.json")
    assert on_disk.state == "failed" and on_disk.error, on_disk
    assert "too many connections" in on_disk.error, on_disk.error
    assert r.sentence == (
        f"the interrupted restore {on_disk.id} of {BRIDGE} failed while being finished "
        f"({on_disk.error}); the bridge is left stopped. "
        f"Retry with 'bridgedoctor restore {BRIDGE} {reset.id}'."
    )
    assert systemd.get(UNIT) == "inactive"
    rc, text = outside.run(*argv)
    assert rc == 0, text
    assert systemd.get(UNIT) == "active"


def test_rolling_back_removes_only_the_backups_own_files(tmp_path: Path, systemd: Systemd) -> None:
    """A link in a backup directory was not written by a backup step: it stays, and so does
    what it points to."""
    m = interrupted(tmp_path, "reset", ["stop", "backup"])
    elsewhere = tmp_path / "elsewhere.tsv"
    elsewhere.write_text("not ours\n")
    (m.dir / "link.tsv").symlink_to(elsewhere)

    asyncio.run(roll_back(m, "interrupted"))

    assert sorted(p.name for p in m.dir.iterdir()) == ["keep", "link.tsv", "manifest.json"]
    assert elsewhere.read_text() == "not ours\n"


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Nothing in `path` can be created or removed, not even by root (chattr +i)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip(f"chattr +i is not supported on {path}'s file system")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize(
    ("steps", "done"),
    [
        (["stop", "backup"], "was not changed"),
        (["stop", "backup", "verify", "apply"], "was reset, and its backup is verified"),
    ],
    ids=["before-apply", "after-apply"],
)
def test_a_roll_back_that_cannot_be_recorded_undoes_nothing_and_says_so(
    tmp_path: Path, systemd: Systemd, steps: list[str], done: str
) -> None:
    """Without the decision on record nothing may be undone: the next recovery goes on from
    what the record and the fence say. Files that cannot be removed do not stop it; the unit
    goes back as the admin had it."""
    m = interrupted(tmp_path, "reset", steps)
    systemd.set(UNIT, "inactive")
    with immutable(m.dir):
        tail = asyncio.run(roll_back(m, "interrupted"))
        names = sorted(p.name for p in m.dir.iterdir())

    path = m.dir / "manifest.json"
    assert tail == (
        f" The bridge {done}; its record could not be updated (cannot write {path} "
        "(Operation not permitted)), the next bridgedoctor command finishes it."
    )
    assert names == ["crypto_olm_session.tsv", "keep", "manifest.json", "schema.sql"]
    assert Manifest.load(path).state == "planned"  # as it was
    assert systemd.get(UNIT) == "active"


def test_a_crash_while_rolling_back_goes_on_rolling_back(
    tmp_path: Path, pg: PgServer, systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crypto rows are cleared, the unit will not start, and the reset dies right after
    its own backup went back, before its record said so; the host reboots and the bridge
    stores new sessions. Recovery must go on rolling back (the record says rolling_back), not
    finish the reset the admin was told failed, and must not load the backup again over those
    sessions."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    before = digests(target)
    backups = tmp_path / "backups"
    systemd.refuse_start_once(UNIT)
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "restore_db"})
    assert rc == 137 and systemd.get(UNIT) == "inactive"
    (m,) = all_for(backups / BRIDGE)
    assert m.state == "rolling_back", m.state
    log = tmp_path / "standin.log"
    start_bridge(host, systemd, log, monkeypatch)

    (r,) = asyncio.run(recover(backups))

    assert (r.manifest.state, r.finished) == ("rolled_back", True)
    now = digests(target)
    assert {t: now[t] for t in before if t != STANDIN_TABLE} == {
        t: d for t, d in before.items() if t != STANDIN_TABLE
    }
    none_lost(log, target)
    assert systemd.get(UNIT) == "active"


def test_a_reset_that_fails_while_being_finished_puts_its_backup_back(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """Killed right after its delete committed; when recovery finishes it, the unit will not
    start. As for a reset that fails on its own: its verified backup goes back, and the
    sentence says so."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    before = digests(target)
    backups = tmp_path / "backups"
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "apply"})
    assert rc == 137 and systemd.get(UNIT) == "inactive"
    systemd.refuse_start_once(UNIT)

    (r,) = asyncio.run(recover(backups))

    assert (r.manifest.state, r.finished) == ("rolled_back", True)
    assert r.sentence == (
        f"the interrupted reset {r.manifest.id} of {BRIDGE} failed while being finished "
        f"(systemctl start {UNIT} failed; see journalctl -u {UNIT}); its backup was put back."
    )
    assert digests(target) == before
    assert systemd.get(UNIT) == "active"


def test_a_reset_whose_backup_cannot_go_back_while_being_finished_stays_stopped(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """As above, but a backup file was damaged meanwhile: nothing is loaded from it, the
    bridge stays stopped (its crypto store is cleared) and the sentence says where the
    backup is."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "apply"})
    assert rc == 137
    (m,) = all_for(backups / BRIDGE)
    damaged = m.dir / next(iter(m.tables.values()))["file"]
    with damaged.open("a") as f:
        f.write("damage\n")
    cleared = digests(target)
    systemd.refuse_start_once(UNIT)

    (r,) = asyncio.run(recover(backups))

    on_disk = Manifest.load(m.dir / "manifest.json")
    assert on_disk.state == "failed" and damaged.name in on_disk.error, on_disk.error
    assert r.sentence == (
        f"the interrupted reset {m.id} of {BRIDGE} failed while being finished "
        f"(systemctl start {UNIT} failed; see journalctl -u {UNIT}); putting its backup back "
        f"failed too, the bridge is left stopped ({m.location})."
    )
    after = digests(target)
    after.pop(FENCE, None)  # the failed load's fence: the next restore finds it never committed
    assert after == cleared
    assert systemd.get(UNIT) == "inactive"


@contextlib.contextmanager
def immutable_from_stop(systemd: Systemd, path: Path, stop: int) -> Iterator[None]:
    """From the unit's `stop`-th stop on (another program's doing, as a disk failing just then
    would be), nothing in `path` can be created or removed (chattr +i)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip(f"chattr +i is not supported on {path}'s file system")
    subprocess.run(["chattr", "-i", str(path)], check=True)
    hook = systemd.state / f"{UNIT}.after-stop-once"
    count = systemd.state / "stops-seen"
    # The hook runs once (as hook.ran); before the stop that counts it puts itself back.
    systemd.on_stop_once(UNIT, f"sh {shlex.quote(str(systemd.state / 'at-stop.sh'))}")
    (systemd.state / "at-stop.sh").write_text(
        f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n"
        f"if [ $n -lt {stop} ]; then cp {hook}.ran {hook}; "
        f"else chattr +i {shlex.quote(str(path))}; fi\n"
    )
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "unrecorded"])
def test_a_finished_full_reset_says_what_it_kept(
    tmp_path: Path, pg: PgServer, systemd: Systemd, recorded: bool
) -> None:
    """A full reset killed right after its database was cleared; a file was written in the data
    directory since its backup. Recovery finishes the reset, keeps that file and says so; when
    from its stop on the record cannot be written either, it says that too, and the next
    recovery records it."""
    host = deploy(tmp_path, pg, "postgres")
    backups = tmp_path / "backups"
    argv = ("reset", BRIDGE, "--mode", "full", "--yes", *args(host, backups))
    assert outside.run(*argv, **{CRASH: "clear_db"})[0] == 137
    data_dir = resolve(BRIDGE, options(host)).data_dir
    (data_dir / "media" / "new.bin").write_bytes(b"written after the backup")
    (m,) = all_for(backups / BRIDGE)
    path = m.dir / "manifest.json"
    with contextlib.nullcontext() if recorded else immutable_from_stop(systemd, m.dir, 1):
        (r,) = asyncio.run(recover(backups))

    kept = (
        f"kept what the bridge wrote in {data_dir} after its database was cleared (it ran "
        "meanwhile): media/new.bin"
    )
    unsaved = (
        f"; its record could not be updated (cannot write {path} (Operation not permitted)), "
        "the next command does it"
    )
    said = f"the interrupted reset {m.id} of {BRIDGE} was finished: done ({kept})"
    assert r.sentence == said + ("." if recorded else f"{unsaved}.")
    assert r.finished == recorded
    assert (data_dir / "media" / "new.bin").read_bytes() == b"written after the backup"
    assert not (data_dir / "media" / "blob.bin").exists()
    assert systemd.get(UNIT) == "active"
    on_disk = Manifest.load(path)
    assert (on_disk.state, on_disk.error) == (("done", kept) if recorded else ("backed_up", ""))
    if not recorded:
        (r,) = asyncio.run(recover(backups))
        assert (r.sentence, r.finished) == (said + ".", True)
        assert Manifest.load(path).state == "done"


def test_a_put_back_that_cannot_be_recorded_leaves_the_bridge_as_the_admin_had_it(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """Killed right after its delete committed; when recovery finishes it the unit will not
    start, so its verified backup is to go back, but from that roll-back's stop on the record
    cannot be written: nothing may be loaded without its fence on record. The unit goes back
    as the admin had it (running, as reset), the sentence says so and that the next command
    puts the backup back, and the next recovery does."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    before = digests(target)
    backups = tmp_path / "backups"
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "apply"})
    assert rc == 137
    cleared = digests(target)
    (m,) = all_for(backups / BRIDGE)
    path = m.dir / "manifest.json"
    systemd.refuse_start_once(UNIT)
    with immutable_from_stop(systemd, m.dir, 2):  # recovery's stop, then the roll-back's
        (r,) = asyncio.run(recover(backups))

    refused = f"systemctl start {UNIT} failed; see journalctl -u {UNIT}"
    assert r.sentence == (
        f"the interrupted reset {m.id} of {BRIDGE} failed while being finished ({refused}). "
        f"Its backup could not be put back, its record could not be updated (cannot write "
        f"{path} (Operation not permitted)); the next bridgedoctor command puts it back."
    ), r.sentence
    assert not r.finished
    assert systemd.get(UNIT) == "active"
    now = digests(target)
    now.pop(FENCE, None)  # set before the record that had to name it failed
    assert now == cleared
    on_disk = Manifest.load(path)
    assert (on_disk.state, on_disk.error) == ("rolling_back", refused)

    (r,) = asyncio.run(recover(backups))
    assert (r.manifest.state, r.finished) == ("rolled_back", True), r.sentence
    assert digests(target) == before
    assert systemd.get(UNIT) == "active"


def test_a_half_put_back_full_reset_that_cannot_be_recorded_is_left_stopped(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """A full reset killed right after its database was cleared; when recovery finishes it the
    unit will not start, so its verified backup is to go back. The data directory is put back;
    then, from that roll-back's stop on, nothing can be written beside the record, so the
    database's fence cannot go on record and the database stays cleared. Started now, the bridge
    would run on its old files with an empty database: it is left stopped, the sentence says so,
    and the next recovery puts the rest back and starts it as the admin had it."""
    from bridgedoctor.reset.backup import dir_digest

    host = deploy(tmp_path, pg, "postgres")
    bridge = resolve(BRIDGE, options(host))
    before, files = digests(bridge.db), dir_digest(bridge.data_dir)
    backups = tmp_path / "backups"
    argv = ("reset", BRIDGE, "--mode", "full", "--yes", *args(host, backups))
    assert outside.run(*argv, **{CRASH: "clear_db"})[0] == 137
    cleared = digests(bridge.db)
    (m,) = all_for(backups / BRIDGE)
    path = m.dir / "manifest.json"
    systemd.refuse_start_once(UNIT)
    with immutable_from_stop(systemd, m.dir, 3):  # recovery's stop, its drive's, the roll-back's
        (r,) = asyncio.run(recover(backups))

    refused = f"systemctl start {UNIT} failed; see journalctl -u {UNIT}"
    assert r.sentence == (
        f"the interrupted reset {m.id} of {BRIDGE} failed while being finished ({refused}). "
        f"Its data directory was put back but not its database: its record could not be "
        f"updated (cannot write {path} (Operation not permitted)). The bridge is left stopped; "
        "the next bridgedoctor command puts the rest back."
    ), r.sentence
    assert not r.finished
    assert systemd.get(UNIT) == "inactive"
    now = digests(bridge.db)
    now.pop(FENCE, None)  # set before the record that had to name it failed
    assert now == cleared and dir_digest(bridge.data_dir) == files
    assert Manifest.load(path).state == "rolling_back"

    # The same when the data directory's return is on record (a crash after that record, before
    # the database's fence): the next recovery finds it done and must still not start the unit.
    m = Manifest.load(path)
    m.steps.append({"step": "restore_data", "at": manifest_now()})
    m.save()
    with immutable_from_stop(systemd, m.dir, 1):
        (r,) = asyncio.run(recover(backups))
    assert (r.finished, systemd.get(UNIT)) == (False, "inactive"), r.sentence
    assert "Its data directory was put back but not its database" in r.sentence

    (r,) = asyncio.run(recover(backups))
    assert (r.manifest.state, r.finished) == ("rolled_back", True), r.sentence
    assert digests(bridge.db) == before and dir_digest(bridge.data_dir) == files
    assert systemd.get(UNIT) == "active"


def test_recovery_goes_through_every_bridge_directory_on_its_own(
    tmp_path: Path, systemd: Systemd
) -> None:
    """The backup directory holds a file, a bridge with nothing left to finish, a bridge whose
    lock is held, one whose lock file cannot be made, a link to another bridge's directory and
    three bridges each with a reset interrupted before its backup was verified. None of them
    stops the rest: every unfinished reset under a real directory is rolled back once, in
    order; the held one is left to its holder, the link is not followed, the one without a
    lock says what to do; a named bridge is the only one recovered."""
    names = ("alpha", "charlie", "delta", "echo", "zeta")
    m = {b: interrupted(tmp_path, "reset", ["stop", "backup"], bridge=b) for b in names}
    beta = interrupted(tmp_path, "reset", ["stop", "backup"], bridge="beta")
    beta.state = "rolled_back"
    beta.save()
    elsewhere = interrupted(tmp_path / "other", "reset", ["stop", "backup"], bridge="linked")
    backups = tmp_path / "backups"
    (backups / "0-notes").write_text("not a bridge\n")
    (backups / "link").symlink_to(elsewhere.dir.parent)
    systemd.set(UNIT, "inactive")

    def state(x: Manifest) -> str:
        return Manifest.load(x.dir / "manifest.json").state

    (r,) = asyncio.run(recover(backups, "zeta"))
    assert (r.manifest.bridge, r.finished, state(m["zeta"])) == ("zeta", True, "rolled_back")
    assert {b: state(m[b]) for b in names[:-1]} == dict.fromkeys(names[:-1], "planned")

    no_lock = backups / "echo" / ".lock"
    with immutable(backups / "echo"), lock.held(backups / "charlie"):
        found = asyncio.run(recover(backups))
    assert [(x.manifest.bridge, x.finished) for x in found] == [
        ("alpha", True),
        ("delta", True),
        ("echo", False),
    ]
    assert found[-1].sentence == (
        f"the interrupted reset {m['echo'].id} of echo cannot be finished now "
        f"(Operation not permitted ({no_lock})); free the disk, then run "
        "'bridgedoctor backups echo'."
    )
    assert [state(m[b]) for b in names] == [
        "rolled_back",
        "planned",
        "rolled_back",
        "planned",
        "rolled_back",
    ]
    assert (state(beta), state(elsewhere)) == ("rolled_back", "planned")
    assert (backups / "0-notes").read_text() == "not a bridge\n"
    assert systemd.get(UNIT) == "active"


def test_a_roll_back_goes_on_with_the_reason_on_record(tmp_path: Path, systemd: Systemd) -> None:
    """Killed while rolling back a reset that never verified its backup: recovery goes on
    rolling back and says why with the reason its record holds, whose closing full stop (an
    unexpected error's own) goes before the sentence's."""
    m = interrupted(tmp_path, "reset", ["stop", "backup"])
    m.state, m.error = "rolling_back", "RuntimeError: no program to run: /usr/bin/X."
    m.save()
    systemd.set(UNIT, "inactive")

    (r,) = asyncio.run(recover(tmp_path / "backups"))

    assert r.sentence == (
        f"the interrupted reset {m.id} of {BRIDGE} was rolled back "
        "(RuntimeError: no program to run: /usr/bin/X)."
    )
    on_disk = Manifest.load(m.dir / "manifest.json")
    # The reason stays on record, as it was: the helper's listing of backups shows it.
    assert (r.finished, on_disk.state) == (True, "rolled_back")
    assert on_disk.error == "RuntimeError: no program to run: /usr/bin/X."
    assert sorted(p.name for p in m.dir.iterdir()) == ["keep", "manifest.json"]
    assert systemd.get(UNIT) == "active"


@pytest.mark.parametrize("kind", ["reset", "restore"])
def test_a_roll_back_killed_before_it_dropped_the_fence_goes_on(
    tmp_path: Path, pg: PgServer, systemd: Systemd, kind: str
) -> None:
    """The fenced transaction of a reset (or a restore) failed and rolled back, and its
    roll-back was killed right after its record said rolling_back: the fence still stands.
    Recovery goes on rolling back: it stops the unit (a reboot may have started it) and drops
    the fence, and nothing else changes in the bridge's store."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    if kind == "reset":
        argv: tuple[str, ...] = ("reset", BRIDGE, "--yes", *args(host, backups))
        fenced, event = "apply", "DELETE OR TRUNCATE"
    else:
        _, argv = reset_then_restore(host, backups)
        fenced, event = "restore_db", "INSERT"
    slow_once(host, "crypto_olm_session", event, 4)
    before = digests(target)
    p = outside.spawn(*argv)

    def fence_on_record(m: dict) -> bool:  # type: ignore[type-arg]
        return m["kind"] == kind and m["extra"].get("fence", "").endswith(f":{fenced}")

    outside.wait_until(
        lambda: outside.manifest_where(backups / BRIDGE, fence_on_record) or p.poll() is not None,
        what="the fence on record",
    )
    assert p.poll() is None, p.communicate()
    time.sleep(0.5)  # inside the transaction now
    outside.kill_group(p)
    (m,) = [x for x in all_for(backups / BRIDGE) if x.kind == kind]
    assert fenced not in m.done_steps()
    reason = "QueryCanceledError: canceling statement due to statement timeout"
    m.state, m.error = "rolling_back", reason
    m.save()
    systemd.set(UNIT, "active")  # a reboot started it
    assert FENCE in digests(target)
    calls = len(systemd.calls())

    (r,) = asyncio.run(recover(backups))

    assert r.sentence == f"the interrupted {kind} {m.id} of {BRIDGE} was rolled back ({reason})."
    assert (r.manifest.state, r.finished) == ("rolled_back", True)
    assert digests(target) == before  # the fence gone, nothing else changed
    assert f"stop {UNIT}" in systemd.calls()[calls:]
    assert systemd.get(UNIT) == "active"


def test_a_reset_killed_at_its_start_is_finished_without_its_database(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """Killed after its delete was recorded, while the unit started: what is left is the start
    alone, which needs nothing of the database. Recovery finishes it while the database
    refuses the bridge's user."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    rc, _ = outside.run("reset", BRIDGE, "--yes", *args(host, backups), **{CRASH: "start"})
    assert rc == 137
    asyncio.run(_as_superuser(pg, f'ALTER ROLE "{target.user}" CONNECTION LIMIT 0'))
    try:
        (r,) = asyncio.run(recover(backups))
    finally:
        asyncio.run(_as_superuser(pg, f'ALTER ROLE "{target.user}" CONNECTION LIMIT -1'))

    assert r.sentence == f"the interrupted reset {r.manifest.id} of {BRIDGE} was finished: done."
    assert (r.finished, Manifest.load(r.manifest.dir / "manifest.json").state) == (True, "done")
    assert systemd.get(UNIT) == "active"


def test_a_reset_whose_delete_fails_while_being_finished_changes_nothing(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """Killed inside its delete (which rolled back); when recovery does it again the database
    refuses it. Nothing was changed, so nothing is put back: the fence goes, the store is as
    before, the unit runs again, and the sentence says so."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db
    backups = tmp_path / "backups"
    before = digests(target)
    kill_inside_the_delete(host, backups)
    _exec(
        host,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF current_setting('application_name') = 'bridgedoctor-reset' THEN "
        "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NULL; END $$",
        "CREATE TRIGGER refuse BEFORE DELETE OR TRUNCATE ON crypto_olm_session "
        "FOR EACH STATEMENT EXECUTE FUNCTION refuse()",
    )

    (r,) = asyncio.run(recover(backups))

    assert r.sentence == (
        f"the interrupted reset {r.manifest.id} of {BRIDGE} failed while being finished "
        "(RaiseError: refused by the test); nothing was changed."
    )
    assert (r.manifest.state, r.finished) == ("rolled_back", True)
    assert digests(target) == before
    assert systemd.get(UNIT) == "active"


def none_lost(log: Path, target: object) -> None:
    """Every session the stand-in bridge stored is still in its store."""
    written = set(standin_rows(log))
    assert written, "the stand-in bridge wrote nothing"
    lost = written - standin_present(target)  # type: ignore[arg-type]
    assert not lost, f"{len(lost)} sessions the bridge stored meanwhile are gone"


def reset_then_restore(host, backups: Path) -> tuple[Manifest, tuple[str, ...]]:  # type: ignore[no-untyped-def]
    """A finished reset of the bridge, and the command line of its restore."""
    rc, text = outside.run("reset", BRIDGE, "--yes", *args(host, backups))
    assert rc == 0, text
    (reset,) = all_for(backups / BRIDGE)
    return reset, ("restore", BRIDGE, reset.id, "--yes", *args(host, backups))
