"""reset/run.py's own decisions, in process: what a plan measures and refuses, what the unit is
taken to be doing, which backup a restore may use, the record a reset or restore starts, and the
sentence a failed reset ends with. Real PostgreSQL and SQLite stores, real files, the fake
systemctl of the reset tests."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bridgedoctor.reset import run as runner
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.manifest import Manifest, all_for
from bridgedoctor.reset.target import resolve
from tests.support.fleet import Host
from tests.support.reset_env import RESET_BRIDGE, RESET_UNIT, Systemd, options
from tests.test_reset import deploy, engine, host
from tests.test_reset_integrity import fence_left

__all__ = ["engine", "host"]  # fixtures used by name below
BRIDGE, UNIT = RESET_BRIDGE, RESET_UNIT


def yes(_plan: object) -> bool:
    return True


def record(
    bridge_dir: Path,
    ident: str,
    state: str,
    created_at: str,
    was_active: bool,
    kind: str = "reset",
    steps: tuple[str, ...] = (),
) -> Manifest:
    """A reset's or restore's record as an earlier run left it on disk."""
    d = bridge_dir / ident
    d.mkdir(parents=True)
    m = Manifest(
        id=ident,
        kind=kind,  # type: ignore[arg-type]
        bridge=BRIDGE,
        mode="crypto",
        requested_by="t",
        created_at=created_at,
        location=str(d) if kind == "reset" else str(bridge_dir / ident.split(".")[0]),
        unit=UNIT,
        was_active=was_active,
        state=state,  # type: ignore[arg-type]
        extra={} if kind == "reset" else {"op_dir": str(d)},
        steps=[{"step": s, "at": created_at} for s in steps],
    )
    m.save()
    return m


# --- _after_rollback: the sentence a failed reset ends with ----------------------------------------


def rolled(state: str, was_active: bool = True) -> Manifest:
    return Manifest(id="ID", kind="reset", bridge=BRIDGE, mode="crypto", requested_by="t",
                    created_at="T", location="/b/ID", unit=UNIT, was_active=was_active,
                    state=state)  # type: ignore[arg-type]  # fmt: skip


def test_a_failed_reset_says_what_became_of_the_bridge() -> None:
    after = runner._after_rollback
    # Its undo failed too: stopped, and how to put the backup back.
    assert after(rolled("failed"), "the unit did not start.", True) == (
        "reset failed (the unit did not start) and putting the backup back failed too; the "
        "bridge is left stopped. The backup is intact in /b/ID: bridgedoctor restore "
        f"{BRIDGE} ID."
    )
    # The undo could not be recorded: the reason only (roll_back's tail says the rest).
    assert after(rolled("rolling_back"), "disk full.", True) == "reset failed (disk full)."
    # Only the full stop goes, not letters before it.
    assert after(rolled("rolling_back"), "cannot write /b/BOX.", True) == (
        "reset failed (cannot write /b/BOX)."
    )
    # Past the point of no return, undone.
    assert after(rolled("rolled_back"), "the unit did not start.", True) == (
        "reset failed (the unit did not start); its backup was put back, the bridge is as before."
    )
    # Nothing changed: the unit running again is said only when it was running.
    assert after(rolled("rolled_back"), "no space left.", False) == (
        f"reset failed (no space left); nothing was changed. {UNIT} is running again."
    )
    assert after(rolled("rolled_back", was_active=False), "no space left.", False) == (
        "reset failed (no space left); nothing was changed."
    )
    # A reason that already says nothing changed is not said twice, whatever its case.
    assert after(
        rolled("rolled_back"), "systemctl stop u failed; Nothing Was Changed.", False
    ) == (f"systemctl stop u failed; Nothing Was Changed. {UNIT} is running again.")
    assert after(
        rolled("rolled_back", was_active=False), "refused; nothing was changed", False
    ) == ("refused; nothing was changed.")


# --- RestorePlan: what a restore is shown as --------------------------------------------------------


def restore_plan(mode: str, was_active: bool) -> runner.RestorePlan:
    return runner.RestorePlan(bridge=BRIDGE, backup="ID", mode=mode, unit=UNIT,
                              was_active=was_active, location="/b/ID", backed_up_at="T",
                              put_back="P", lost="L", database="db", data_dir="/d")  # fmt: skip


@pytest.mark.parametrize("mode", ["crypto", "full"])
@pytest.mark.parametrize("was_active", [True, False])
def test_a_restore_plan_says_what_it_puts_back_and_what_is_lost(
    mode: str, was_active: bool
) -> None:
    start = "start it" if was_active else "leave it stopped (it is not running now)"
    fate = "not touched" if mode == "crypto" else "replaced by the backup's"
    assert restore_plan(mode, was_active).render() == (
        f"Restore {BRIDGE} from ID ({mode}): stop {UNIT}, put back P from /b/ID, then {start}. "
        "Lost: L.\n"
        "  database:       db\n"
        f"  data directory: /d ({fate})"
    )
    d = restore_plan(mode, was_active).to_dict()
    assert d.pop("digest") == restore_plan(mode, was_active).digest
    assert d == {"bridge": BRIDGE, "backup": "ID", "mode": mode, "unit": UNIT,
                 "was_active": was_active, "location": "/b/ID", "backed_up_at": "T",
                 "put_back": "P", "lost": "L", "database": "db", "data_dir": "/d"}  # fmt: skip


# --- _was_active: the unit as it will be once any interrupted operation is recovered ---------------


def was_active(host: Host, backups: Path) -> bool:
    return runner._was_active(resolve(BRIDGE, options(host)), backups / BRIDGE)


def test_a_running_unit_counts_as_running_and_a_stopped_one_without_history_as_stopped(
    tmp_path: Path, systemd: Systemd
) -> None:
    host = deploy(tmp_path, None, "sqlite")
    assert was_active(host, tmp_path / "b") is True
    systemd.set(UNIT, "inactive")
    assert was_active(host, tmp_path / "b") is False


def stopped(tmp_path: Path, systemd: Systemd) -> tuple[Host, Path]:
    """A SQLite bridge whose unit is stopped, and where its backups go."""
    host = deploy(tmp_path, None, "sqlite")
    systemd.set(UNIT, "inactive")
    return host, tmp_path / "b" / BRIDGE


def test_an_unfinished_operation_says_how_the_unit_was_before_it(
    tmp_path: Path, systemd: Systemd
) -> None:
    """It stopped the unit: recovery starts it again, so the plan counts it as running."""
    host, bridge_dir = stopped(tmp_path, systemd)
    record(bridge_dir, "A", "done", "2026-01-01T00:00:00Z", False)
    record(bridge_dir, "B", "backed_up", "2026-01-02T00:00:00Z", True)
    assert was_active(host, tmp_path / "b") is True


def test_a_stopped_unit_counts_as_running_only_after_an_operation_that_failed_half_way(
    tmp_path: Path, systemd: Systemd
) -> None:
    """The last operation by time, not by name: a restore sorts right after its backup."""
    host, bridge_dir = stopped(tmp_path, systemd)
    record(bridge_dir, "A", "done", "2026-01-01T00:00:00Z", True)
    record(bridge_dir, "B", "done", "2026-01-02T00:00:00Z", False)
    restore = record(bridge_dir, "A.restore-x", "failed", "2026-01-03T00:00:00Z", True,
                     kind="restore")  # fmt: skip
    assert [m.id for m in all_for(bridge_dir)] == ["A", "A.restore-x", "B"]
    assert was_active(host, tmp_path / "b") is True
    # The same failure by one the admin had stopped: stopped.
    restore.was_active = False
    restore.save()
    assert was_active(host, tmp_path / "b") is False
    # The last one done (the admin stopped the unit since): stopped, whatever it was before.
    restore.state, restore.was_active = "done", True
    restore.save()
    assert was_active(host, tmp_path / "b") is False
    restore.state = "rolled_back"
    restore.save()
    assert was_active(host, tmp_path / "b") is False


# --- _plan: what planning refuses and what it measures ----------------------------------------------


def test_a_plan_under_the_id_of_a_backup_that_exists_is_refused(
    host: Host, systemd: Systemd, tmp_path: Path
) -> None:
    (tmp_path / "b" / BRIDGE / "ID-crypto").mkdir(parents=True)
    with pytest.raises(ResetError) as e:
        asyncio.run(runner.prepare(BRIDGE, "crypto", options(host), tmp_path / "b", "ID-crypto"))
    assert str(e.value) == f"backup ID-crypto of {BRIDGE} already exists; plan again."
    b, plan = asyncio.run(runner.prepare(BRIDGE, "crypto", options(host), tmp_path / "b", "ID-2"))
    assert b == resolve(BRIDGE, options(host))
    assert (plan.id, plan.bridge, plan.mode, plan.unit, plan.was_active) == (
        "ID-2",
        BRIDGE,
        "crypto",
        UNIT,
        True,
    )
    assert (plan.database, plan.data_dir) == (b.db.location, b.data_dir)
    assert plan.backup_dir == tmp_path / "b" / BRIDGE / "ID-2"
    assert "all rows of crypto_olm_session" in plan.removed  # a table the store has
    # kv_store holds a recovery key (PostgreSQL), or the plan cannot tell (SQLite): kept.
    assert plan.kept.startswith("kv_store row recovery_key")


def test_a_sqlite_store_that_is_not_a_database_is_bad_input(
    tmp_path: Path, systemd: Systemd
) -> None:
    host = deploy(tmp_path, None, "sqlite")
    db = resolve(BRIDGE, options(host)).db
    db.path.write_bytes(b"not a database, " * 512)  # type: ignore[union-attr]
    with pytest.raises(ResetError) as e:
        asyncio.run(runner.prepare(BRIDGE, "crypto", options(host), tmp_path / "b"))
    assert e.value.usage is True and not e.value.touched
    assert str(e.value).startswith(f"cannot use {db.location}: ")


def test_a_postgres_server_that_is_not_there_is_bad_input(
    tmp_path: Path, pg, systemd: Systemd
) -> None:
    host = deploy(tmp_path, pg, "postgres")
    opts = options(host)
    opts = type(opts)(**{**vars(opts), "db_host": "127.0.0.1:9"})  # discard: nothing listens
    location = resolve(BRIDGE, opts).db.location
    with pytest.raises(ResetError) as e:
        asyncio.run(runner.prepare(BRIDGE, "crypto", opts, tmp_path / "b"))
    assert e.value.usage is True
    assert str(e.value) == f"cannot open {location} (ConnectionRefusedError)."


async def _pg_sizes(dsn: str, vacuum: bool = False) -> tuple[int, int]:
    import asyncpg

    from bridgedoctor.reset.crypto import CLEARED

    conn = await asyncpg.connect(dsn)
    try:
        if vacuum:
            # Autovacuum may add a table's free-space and visibility maps at any moment; a
            # vacuum first makes them now, so the sizes hold still while the plan measures.
            await conn.execute("VACUUM")
        whole = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        cleared = 0
        for t in CLEARED:
            if await conn.fetchval("SELECT to_regclass($1)", t) is not None:
                cleared += int(await conn.fetchval("SELECT pg_total_relation_size($1)", t))
        return whole, cleared
    finally:
        await conn.close()


def test_a_plan_measures_the_backup_where_it_would_go(
    tmp_path: Path, pg, systemd: Systemd
) -> None:
    """On the file system of the nearest directory that exists (the backup root, a small disk of
    its own here): for a crypto reset what its tables take, for a full reset the whole database
    and the data directory."""
    from tests.support.disks import tmpfs

    host = deploy(tmp_path, pg, "postgres")
    (name,) = host.databases.values()
    data = resolve(BRIDGE, options(host)).data_dir
    tree = sum(p.stat().st_size for p in data.rglob("*") if p.is_file() and not p.is_symlink())
    asyncio.run(_pg_sizes(pg.dsn(name), vacuum=True))
    backups = tmp_path / "backups"
    with tmpfs(backups, "512k"):
        for mode in ("crypto", "full"):
            # The server may still grow the database by a page while the plan runs (statistics,
            # a late map), so what the plan saw is bracketed by a measure before and one after.
            sizes = [asyncio.run(_pg_sizes(pg.dsn(name)))]
            with pytest.raises(ResetError) as e:
                asyncio.run(runner.prepare(BRIDGE, mode, options(host), backups))  # type: ignore[arg-type]
            sizes.append(asyncio.run(_pg_sizes(pg.dsn(name))))
            need = [cleared if mode == "crypto" else whole + tree for whole, cleared in sizes]
            want = [(int(n * 2.0) + (1 << 20)) // 1024 for n in need]
            head = f"not enough space for the backup in {backups}: about "
            message = str(e.value)
            assert message.startswith(head), message
            got = int(message[len(head) :].split(" KiB needed, ", 1)[0])
            assert want[0] <= got <= want[1], (mode, want, message)
            assert message.endswith(" KiB free; nothing was changed (use --backup-dir)."), message
        assert not (backups / BRIDGE).exists()


def test_a_postgres_plan_knows_when_there_is_no_recovery_key_to_keep(
    tmp_path: Path, pg, systemd: Systemd
) -> None:
    from bridgedoctor.reset.plan import KEPT_CRYPTO
    from tests.support.store import StoreSpec

    host = Host.at(tmp_path, pg)
    host.add(BRIDGE, StoreSpec(BRIDGE, recovery_key=False), engine="postgres", db_prefix="rk0_")
    _, plan = asyncio.run(runner.prepare(BRIDGE, "crypto", options(host), tmp_path / "b"))
    assert plan.kept == KEPT_CRYPTO


# --- reset: the record it starts, where, and who asked ---------------------------------------------


def test_a_reset_records_what_it_was_asked_and_for_whom(
    host: Host, systemd: Systemd, tmp_path: Path, engine: str
) -> None:
    backups = tmp_path / "b"
    b = resolve(BRIDGE, options(host))
    shown: list[object] = []
    m = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups,
                                 lambda p: shown.append(p) or True, "alice", "ID-shown"))  # fmt: skip
    assert m.id == "ID-shown" and [p.id for p in shown] == ["ID-shown"]  # type: ignore[attr-defined]
    bridge_dir = backups / BRIDGE
    assert stat.S_IMODE(bridge_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(m.dir.stat().st_mode) == 0o700
    on_disk = json.loads((m.dir / "manifest.json").read_text())
    assert on_disk["requested_by"] == "alice" and on_disk["kind"] == "reset"
    assert (on_disk["id"], on_disk["bridge"], on_disk["mode"]) == ("ID-shown", BRIDGE, "crypto")
    assert on_disk["created_at"].startswith("20") and on_disk["created_at"].endswith("Z")
    assert on_disk["engine"] == engine
    assert (on_disk["database"], on_disk["data_dir"]) == (b.db.location, str(b.data_dir))
    assert (on_disk["unit"], on_disk["was_active"]) == (UNIT, True)
    assert on_disk["location"] == str(bridge_dir / m.id)
    extra = on_disk["extra"]
    assert extra["plan"].startswith(f"Reset plan for {BRIDGE} (crypto):")
    assert extra["after"] and all(isinstance(x, str) for x in extra["after"])
    assert extra["options"]["root"] == str(host.root)
    # Without a name, the one who runs it.
    m2 = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes))
    assert m2.requested_by == f"{getpass.getuser()} (uid {os.getuid()})"


def test_a_reset_not_confirmed_changes_nothing_and_makes_no_directory(
    host: Host, systemd: Systemd, tmp_path: Path
) -> None:
    with pytest.raises(ResetError, match=r"^not confirmed; nothing was changed\.$"):
        asyncio.run(runner.reset(BRIDGE, "crypto", options(host), tmp_path / "b", lambda p: False))
    assert not (tmp_path / "b").exists() and systemd.calls() == [
        f"show -p ActiveState --value {UNIT}"
    ]


# --- restore: which backup, the plan shown, the record it starts ----------------------------------


def test_a_restore_takes_only_a_reset_s_verified_backup(tmp_path: Path, systemd: Systemd) -> None:
    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    bridge_dir = backups / BRIDGE
    first = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    done = asyncio.run(runner.restore(BRIDGE, first.id, options(host), backups, yes, "t"))
    # A restore's own id names no backup, nor does an unknown one: bad input.
    for ident in (done.id, "20260101T000000Z-crypto"):
        with pytest.raises(ResetError) as e:
            runner.plan_restore(BRIDGE, ident, options(host), backups)
        assert str(e.value) == f"no backup {ident} of {BRIDGE} in {bridge_dir}."
        assert e.value.usage is True
    # A second backup is found by its id, not the first one there.
    systemd.refuse_stop_once(UNIT)
    with pytest.raises(ResetError):
        asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    (unverified,) = [m for m in all_for(bridge_dir) if m.state == "rolled_back"]
    with pytest.raises(ResetError) as e:
        runner.plan_restore(BRIDGE, unverified.id, options(host), backups)
    assert str(e.value) == (
        f"backup {unverified.id} was never completed and verified; cannot restore."
    )
    assert e.value.usage is False
    second = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    assert runner.plan_restore(BRIDGE, second.id, options(host), backups).backup == second.id
    assert runner.plan_restore(BRIDGE, first.id, options(host), backups).backup == first.id


@pytest.mark.parametrize("mode", ["crypto", "full"])
def test_a_restore_plan_is_the_backup_s_and_the_bridge_s(
    host: Host, systemd: Systemd, tmp_path: Path, mode: str
) -> None:
    backups = tmp_path / "b"
    b = resolve(BRIDGE, options(host))
    m = asyncio.run(runner.reset(BRIDGE, mode, options(host), backups, yes, "t"))  # type: ignore[arg-type]
    systemd.set(UNIT, "inactive")  # the admin stopped it since
    plan = runner.plan_restore(BRIDGE, m.id, options(host), backups)
    lost = ("the crypto device and keys the bridge made since the reset" if mode == "crypto"
            else "every login, portal and message the bridge stored since the reset")  # fmt: skip
    put_back = "the crypto rows" if mode == "crypto" else "the whole database and data directory"
    assert plan == runner.RestorePlan(
        bridge=BRIDGE, backup=m.id, mode=mode, unit=UNIT, was_active=False, location=m.location,
        backed_up_at=m.created_at, put_back=put_back, lost=lost, database=b.db.location,
        data_dir=str(b.data_dir),
    )  # fmt: skip
    systemd.set(UNIT, "active")
    assert runner.plan_restore(BRIDGE, m.id, options(host), backups).was_active is True


def test_a_restore_records_what_it_was_asked_and_for_whom(
    host: Host, systemd: Systemd, tmp_path: Path
) -> None:
    backups = tmp_path / "b"
    b = resolve(BRIDGE, options(host))
    src = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    shown: list[runner.RestorePlan] = []
    m = asyncio.run(runner.restore(BRIDGE, src.id, options(host), backups,
                                   lambda p: shown.append(p) or True, "bob"))  # fmt: skip
    assert shown == [runner.plan_restore(BRIDGE, src.id, options(host), backups)]
    assert m.state == "done"
    stamp = m.id.removeprefix(f"{src.id}.restore-")
    assert m.id.startswith(f"{src.id}.restore-") and len(stamp) == len("2026-12-01T135400.123456Z")
    assert ":" not in stamp and stamp[:4].isdigit() and "X" not in stamp
    assert m.dir == backups / BRIDGE / m.id and stat.S_IMODE(m.dir.stat().st_mode) == 0o700
    on_disk = json.loads((m.dir / "manifest.json").read_text())
    assert (on_disk["id"], on_disk["kind"], on_disk["requested_by"]) == (m.id, "restore", "bob")
    assert (on_disk["source"], on_disk["location"], on_disk["mode"]) == (
        src.id,
        src.location,
        "crypto",
    )
    assert (on_disk["unit"], on_disk["was_active"], on_disk["database"]) == (
        UNIT,
        True,
        b.db.location,
    )
    assert on_disk["extra"]["op_dir"] == str(m.dir)
    assert on_disk["extra"]["options"]["root"] == str(host.root)
    again = asyncio.run(runner.restore(BRIDGE, src.id, options(host), backups, yes))
    assert again.requested_by == f"{getpass.getuser()} (uid {os.getuid()})"
    with pytest.raises(ResetError, match=r"^not confirmed; nothing was changed\.$"):
        asyncio.run(runner.restore(BRIDGE, src.id, options(host), backups, lambda p: False))
    assert len(all_for(backups / BRIDGE)) == 3


# --- under the lock: recovery first, then the record ----------------------------------------------


def test_an_operation_recovery_cannot_finish_blocks_a_new_one(
    tmp_path: Path, systemd: Systemd
) -> None:
    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    # A restore whose backup is gone: recovery cannot finish it.
    record(backups / BRIDGE, "GONE.restore-x", "stopped", "2026-01-01T00:00:00Z", True,
           kind="restore")  # fmt: skip
    for go in (
        lambda: runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"),
        lambda: runner.restore(BRIDGE, "GONE", options(host), backups, yes, "t"),
    ):
        with pytest.raises(ResetError) as e:
            asyncio.run(go())
        if "no backup GONE" in str(e.value):
            continue  # the restore is refused before the lock: there is no such backup
        assert str(e.value).startswith(
            f"the interrupted restore GONE.restore-x of {BRIDGE} could not be finished ("
        )
        assert str(e.value).endswith(" The next bridgedoctor command tries again. Nothing new "
                                     "was started.")  # fmt: skip
    assert [m.id for m in all_for(backups / BRIDGE)] == ["GONE.restore-x"]
    assert systemd.get(UNIT) == "active"


def test_a_finished_recovery_lets_the_reset_go_on(tmp_path: Path, systemd: Systemd) -> None:
    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    record(backups / BRIDGE, "OLD", "planned", "2026-01-01T00:00:00Z", True)  # never verified
    m = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    assert {x.id: x.state for x in all_for(backups / BRIDGE)} == {
        "OLD": "rolled_back", m.id: "done"
    }  # fmt: skip


def test_a_disk_that_fills_while_the_plan_is_confirmed_is_caught_by_the_second_plan(
    tmp_path: Path, systemd: Systemd
) -> None:
    """Under the lock the plan is made again, space included: no record, nothing stopped."""
    from tests.support.disks import fill, tmpfs

    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"

    def fill_then_yes(_plan: object) -> bool:
        fill(backups)
        return True

    with tmpfs(backups, "4m"):
        with pytest.raises(ResetError) as e:
            asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, fill_then_yes))
        assert str(e.value).startswith(f"not enough space for the backup in {backups / BRIDGE}:")
        assert sorted(p.name for p in (backups / BRIDGE).iterdir()) == [".lock"]
    assert [c for c in systemd.calls() if not c.startswith("show")] == []


def test_a_record_directory_that_cannot_be_made_is_a_sentence(
    tmp_path: Path, systemd: Systemd
) -> None:
    """No inode left for the operation's directory: its error, and nothing to clean up."""
    import subprocess

    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    backups.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64,mode=0700", "tmpfs",
                        str(backups)], capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def take_every_inode(_plan: object) -> bool:
        n = 0
        (backups / "x").mkdir()
        while True:
            try:
                (backups / "x" / str(n)).touch()
            except OSError:
                return True
            n += 1

    try:
        (backups / BRIDGE).mkdir()
        (backups / BRIDGE / ".lock").touch()
        (backups / BRIDGE / ".reserve").touch()
        with pytest.raises(ResetError) as e:
            asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, take_every_inode))
        assert str(e.value).startswith("No space left on device (")
        assert str(e.value).endswith("); nothing was changed.")
        assert sorted(p.name for p in (backups / BRIDGE).iterdir()) == [".lock", ".reserve"]
    finally:
        subprocess.run(["umount", "-l", str(backups)], capture_output=True)
    assert [c for c in systemd.calls() if not c.startswith("show")] == []


def test_a_done_operation_whose_last_record_failed_says_so_after_what_it_says() -> None:
    from bridgedoctor.reset.engine import Ctx
    from bridgedoctor.reset.manifest import RecordError

    m = rolled("done")
    ctx = Ctx(m, None)  # type: ignore[arg-type]
    runner._unsaved_note(m, ctx)
    assert m.error == ""
    ctx.unsaved = RecordError(28, "cannot write /b/ID/manifest.json (No space left on device)")
    runner._unsaved_note(m, ctx)
    note = ("its record could not be updated (cannot write /b/ID/manifest.json (No space left "
            "on device)); the next command does it")  # fmt: skip
    assert m.error == note
    m.error = "kept what the bridge wrote"
    runner._unsaved_note(m, ctx)
    assert m.error == f"kept what the bridge wrote; {note}"


# --- failures: what the error says and whether it says the bridge was touched ----------------------


def test_a_failed_reset_says_whether_it_touched_the_bridge(
    tmp_path: Path, systemd: Systemd
) -> None:
    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    systemd.refuse_stop_once(UNIT)  # before anything is written
    with pytest.raises(ResetError) as e:
        asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    assert e.value.touched is False and "nothing was changed" in str(e.value)
    systemd.set(UNIT, "active")
    systemd.refuse_start_once(UNIT)  # after the crypto tables were cleared
    with pytest.raises(ResetError) as e:
        asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    assert e.value.touched is True
    assert str(e.value).startswith(
        f"reset failed (systemctl start {UNIT} failed; see journalctl -u {UNIT}); its backup was "
        "put back, the bridge is as before."
    )


def _drop(host: Host, table: str) -> None:
    _sql(host, f"DROP TABLE {table}")


def _sql(host: Host, *statements: str) -> None:
    """From the confirmation callback, which runs inside the reset's event loop."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.test_reset import _exec

    with ThreadPoolExecutor(1) as pool:
        pool.submit(_exec, host, *statements).result()


def test_a_reset_whose_delete_fails_is_undone_with_its_reason_on_record(
    host: Host, engine: str, systemd: Systemd, tmp_path: Path
) -> None:
    """The crypto delete fails inside its transaction, after the backup was verified (a trigger
    of the bridge's raises, say): nothing was changed, the record keeps the reason, and the
    fence the transaction would have removed goes with the undo."""
    backups = tmp_path / "b"
    if engine == "postgres":
        no_delete = (
            "CREATE FUNCTION bd_no_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no delete here'; END $$",
            "CREATE TRIGGER bd_no_delete BEFORE DELETE OR TRUNCATE ON crypto_account "
            "FOR EACH STATEMENT EXECUTE FUNCTION bd_no_delete()",
        )
    else:
        no_delete = (
            "CREATE TRIGGER bd_no_delete BEFORE DELETE ON crypto_account "
            "BEGIN SELECT RAISE(ABORT, 'no delete here'); END",
        )

    def trigger_then_yes(_plan: object) -> bool:
        _sql(host, *no_delete)
        return True

    with pytest.raises(ResetError) as e:
        asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, trigger_then_yes, "t"))
    (m,) = all_for(backups / BRIDGE)
    assert (m.state, "verify" in m.done_steps(), e.value.touched) == ("rolled_back", True, False)
    assert "no delete here" in m.error
    assert (
        str(e.value) == f"reset failed ({m.error}); nothing was changed. {UNIT} is running again."
    )
    assert not fence_left(host) and systemd.get(UNIT) == "active"


def test_a_restore_whose_load_fails_changes_nothing_and_says_it_failed(
    host: Host, systemd: Systemd, tmp_path: Path
) -> None:
    """Not a refusal (the backup was fine): the load itself failed, inside its transaction."""
    backups = tmp_path / "b"
    src = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))

    def drop_then_yes(_plan: object) -> bool:
        _drop(host, "crypto_secrets")  # a migration of the bridge, say
        return True

    with pytest.raises(ResetError) as e:
        asyncio.run(runner.restore(BRIDGE, src.id, options(host), backups, drop_then_yes, "t"))
    assert str(e.value).startswith("restore failed (")
    assert str(e.value).endswith("; nothing was changed).")
    assert "crypto_secrets" in str(e.value) and e.value.touched is False
    (m,) = [x for x in all_for(backups / BRIDGE) if x.kind == "restore"]
    assert m.state == "rolled_back" and systemd.get(UNIT) == "active"
    assert "crypto_secrets" in m.error and f"restore failed ({m.error}; " in str(e.value)
    assert not fence_left(host)  # the restore's fence went with the undo


def test_a_crypto_restore_that_cannot_start_the_unit_is_left_half_restored(
    tmp_path: Path, systemd: Systemd
) -> None:
    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    src = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
    systemd.refuse_start_once(UNIT)
    with pytest.raises(ResetError) as e:
        asyncio.run(runner.restore(BRIDGE, src.id, options(host), backups, yes, "t"))
    reason = f"systemctl start {UNIT} failed; see journalctl -u {UNIT}"
    assert str(e.value) == (
        f"restore failed ({reason}); the bridge is left stopped, half restored. Retry with "
        f"'bridgedoctor restore {BRIDGE} {src.id}'."
    )
    assert e.value.touched is True
    (m,) = [x for x in all_for(backups / BRIDGE) if x.kind == "restore"]
    assert (m.state, m.error) == ("failed", reason)
    assert systemd.get(UNIT) == "inactive"


def test_a_postgres_plan_reads_through_a_read_only_plan_session(
    tmp_path: Path, pg, systemd: Systemd
) -> None:
    """A live bridge's database is planned through a read-only session named as a plan's: here
    kv_store lets no other session read it (a row policy that raises)."""
    import asyncpg

    host = deploy(tmp_path, pg, "postgres")
    (name,) = host.databases.values()
    pg.as_superuser(
        name,
        "CREATE FUNCTION plan_only() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
        "IF current_setting('transaction_read_only') <> 'on' "
        "OR current_setting('application_name') <> 'bridgedoctor-plan' THEN "
        "RAISE EXCEPTION 'kv_store read outside a plan'; END IF; RETURN true; END $$; "
        "ALTER TABLE kv_store ENABLE ROW LEVEL SECURITY; "
        "ALTER TABLE kv_store FORCE ROW LEVEL SECURITY; "
        "CREATE POLICY plan_only ON kv_store USING (plan_only())",
    )
    for mode in ("crypto", "full"):
        _, plan = asyncio.run(runner.prepare(BRIDGE, mode, options(host), tmp_path / "b"))  # type: ignore[arg-type]
        assert "recovery_key" in plan.kept or mode == "full"
    with pytest.raises(asyncpg.RaiseError, match="outside a plan"):
        asyncio.run(_read_kv_store(resolve(BRIDGE, options(host)).db))


async def _read_kv_store(target: object) -> None:
    from bridgedoctor.reset.dbio import open_db

    db = await open_db(target)  # type: ignore[arg-type]  # a reset's session
    try:
        await db.conn.fetch("SELECT * FROM kv_store")  # type: ignore[union-attr]
    finally:
        await db.close()


def test_a_bridge_that_changes_while_the_plan_is_confirmed_is_left_alone(
    tmp_path: Path, systemd: Systemd
) -> None:
    """The admin stops the unit while reading the plan: the plan made again under the lock
    differs from the one confirmed, so nothing is done."""
    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    src = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))

    def stop_then_yes(_plan: object) -> bool:
        systemd.set(UNIT, "inactive")
        return True

    for go in (
        lambda: runner.reset(BRIDGE, "crypto", options(host), backups, stop_then_yes, "t"),
        lambda: runner.restore(BRIDGE, src.id, options(host), backups, stop_then_yes, "t"),
    ):
        systemd.set(UNIT, "active")
        with pytest.raises(ResetError) as e:
            asyncio.run(go())
        assert str(e.value) == runner.CHANGED
        assert [m.id for m in all_for(backups / BRIDGE)] == [src.id]
    assert [c for c in systemd.calls() if not c.startswith("show")][-1] == f"start {UNIT}"


# --- the record's reserve: a disk that fills once the unit is stopped ------------------------------


def test_a_disk_that_fills_once_the_unit_stopped_is_caught_before_the_next_step(
    tmp_path: Path, systemd: Systemd
) -> None:
    """The record of the stop draws on the reserve; the run then stops before anything is
    written, for a reset and for a restore alike (the reserve existed when each began)."""
    from tests.support.disks import tmpfs
    from tests.test_reset_disk import fill_command

    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    bridge_dir = backups / BRIDGE
    with tmpfs(backups, "4m"):
        src = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
        why = f"no space left in {bridge_dir} (the room kept for the record had to be used)"
        systemd.on_stop_once(UNIT, fill_command(backups))
        with pytest.raises(ResetError) as e:
            asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
        assert (
            str(e.value) == f"reset failed ({why}); nothing was changed. {UNIT} is running again."
        )
        (backups / "filler").unlink()
        systemd.on_stop_once(UNIT, fill_command(backups))
        with pytest.raises(ResetError) as e:
            asyncio.run(runner.restore(BRIDGE, src.id, options(host), backups, yes, "t"))
        assert str(e.value) == f"restore refused ({why}; nothing was changed)."
    assert systemd.get(UNIT) == "active"


def fill_at_start(backups: Path) -> Callable[[dict], None]:
    """A progress hook: as the unit is to start, the reserve is gone and the disk is full."""
    from bridgedoctor.reset.manifest import RESERVE
    from tests.support.disks import fill

    def at_start(state: dict) -> None:
        if state.get("step") == "start" and "table" not in state:
            (backups / BRIDGE / RESERVE).unlink()
            fill(backups)

    return at_start


def test_a_half_restored_bridge_whose_record_cannot_be_written_still_says_so(
    tmp_path: Path, systemd: Systemd
) -> None:
    """The disk fills (and the reserve is gone) just as the unit is to start, and it will not:
    the record stays as it was, the sentence says what to do."""
    from tests.support.disks import tmpfs

    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    at_start = fill_at_start(backups)

    with tmpfs(backups, "4m"):
        src = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t"))
        systemd.refuse_start_once(UNIT)
        with pytest.raises(ResetError) as e:
            asyncio.run(runner.restore(BRIDGE, src.id, options(host), backups, yes, "t",
                                       progress=at_start))  # fmt: skip
        assert str(e.value) == (
            f"restore failed (systemctl start {UNIT} failed; see journalctl -u {UNIT}); the "
            f"bridge is left stopped, half restored. Retry with 'bridgedoctor restore {BRIDGE} "
            f"{src.id}'."
        )
        (m,) = [x for x in all_for(backups / BRIDGE) if x.kind == "restore"]
        assert m.state != "failed"  # its record could not say so


def test_a_done_operation_whose_last_record_failed_says_so(
    tmp_path: Path, systemd: Systemd
) -> None:
    """The disk fills (the reserve gone) as the unit starts again: the reset and the restore
    are done all the same, and each says its record could not be updated."""
    from tests.support.disks import tmpfs

    host = deploy(tmp_path, None, "sqlite")
    backups = tmp_path / "b"
    at_start = fill_at_start(backups)

    with tmpfs(backups, "4m"):
        m = asyncio.run(runner.reset(BRIDGE, "crypto", options(host), backups, yes, "t",
                                     progress=at_start))  # fmt: skip
        assert m.state == "done"
        assert m.error == (
            f"its record could not be updated (cannot write {m.dir / 'manifest.json'} (No space "
            "left on device)); the next command does it"
        )
        (backups / "filler").unlink()
        r = asyncio.run(runner.restore(BRIDGE, m.id, options(host), backups, yes, "t",
                                       progress=at_start))  # fmt: skip
        assert r.state == "done"
        assert r.error == (
            f"its record could not be updated (cannot write {r.dir / 'manifest.json'} (No space "
            "left on device)); the next command does it"
        )
    assert systemd.get(UNIT) == "active"
