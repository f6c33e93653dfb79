"""Reset and restore against MDAD-shaped hosts (real PostgreSQL and SQLite), fake systemctl."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import asyncpg
import pytest

from bridgedoctor.reset.backup import dir_digest
from bridgedoctor.reset.dbio import open_db
from bridgedoctor.reset.engine import Ctx, _stands, fence_token, options_of
from bridgedoctor.reset.manifest import all_for
from bridgedoctor.reset.run import plan_restore
from bridgedoctor.reset.target import resolve
from tests.support.cli import run
from tests.support.fleet import Host
from tests.support.pg import PgServer, bindir
from tests.support.reset_env import RESET_BRIDGE, RESET_UNIT, Systemd, options, state
from tests.support.store import StoreSpec

BRIDGE, UNIT = RESET_BRIDGE, RESET_UNIT
CRYPTO_GONE = (
    "crypto_account",
    "crypto_olm_session",
    "crypto_megolm_inbound_session",
    "crypto_megolm_outbound_session",
    "crypto_secrets",
)
_counter = itertools.count()


def deploy(tmp: Path, pg: PgServer | None, engine: str) -> Host:
    host = Host.at(tmp, pg if engine == "postgres" else None)
    prefix = f"r{next(_counter)}_" if engine == "postgres" else ""
    host.add(BRIDGE, StoreSpec(BRIDGE, recovery_key=True), engine=engine, db_prefix=prefix)
    b = resolve(BRIDGE, options(host))
    b.data_dir.mkdir(parents=True, exist_ok=True)
    (b.data_dir / "media").mkdir(exist_ok=True)
    (b.data_dir / "media" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    _exec(
        host,
        "INSERT INTO crypto_device (user_id, device_id, identity_key, signing_key, trust, "
        "deleted, name) VALUES ('@a:example.com', 'DEV', 'ik', 'sk', 0, false, 'phone')",
        "INSERT INTO crypto_tracked_user (user_id) VALUES ('@a:example.com')",
        "INSERT INTO crypto_secrets (account_id, name, secret) VALUES ('', 'm.megolm_backup.v1', "
        "'c2VjcmV0')",
    )
    return host


async def run_sql(db: object, sql: str) -> None:
    """One statement on either engine's connection (asyncpg awaits, sqlite3 does not)."""
    r = db.conn.execute(sql)  # type: ignore[attr-defined]
    if asyncio.iscoroutine(r):
        await r


def _exec(host: Host, *sqls: str) -> None:
    async def go() -> None:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            for sql in sqls:
                await run_sql(db, sql)
        finally:
            await db.close()

    asyncio.run(go())


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def host(tmp_path: Path, pg: PgServer, engine: str) -> Host:
    return deploy(tmp_path, pg, engine)


def backup_args(tmp: Path) -> list[str]:
    return ["--backup-dir", str(tmp / "backups")]


def only_backup(capsys: pytest.CaptureFixture[str], host: Host, tmp: Path) -> dict:
    code, text = run(capsys, "backups", BRIDGE, "--json", *host.args(), *backup_args(tmp))
    assert code == 0
    items = json.loads(text)
    assert len(items) == 1
    return items[0]


def test_crypto_reset_then_restore(host: Host, systemd: Systemd, tmp_path: Path, capsys) -> None:
    before = state(host, BRIDGE)
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    after = state(host, BRIDGE)
    tables = after["tables"]
    for t in CRYPTO_GONE:
        assert tables[t][0] == 0, t
    # Portals, logins, devices and the rest of the bridge are untouched, and so is kv_store's
    # recovery_key (plain text; a self-signing bridge exits 34 without it after a reset).
    for t, digest in before["tables"].items():
        if t not in CRYPTO_GONE:
            assert tables[t] == digest, t
    assert tables["kv_store"][0] == 1
    if host.pg is not None:  # with SQLite the database file itself lives in the data dir
        assert after["data"] == before["data"]
    # Planned (before and again under the lock), then stopped before anything else.
    show = f"show -p ActiveState --value {UNIT}"
    assert systemd.calls()[:3] == [show, show, f"stop {UNIT}"]
    assert f"start {UNIT}" in systemd.calls() and systemd.get(UNIT) == "active"
    code, text = run(capsys, "check", BRIDGE, "--json", *host.args())
    assert "no_crypto_account" in [f["code"] for f in json.loads(text)["findings"]]

    item = only_backup(capsys, host, tmp_path)
    assert (item["mode"], item["state"]) == ("crypto", "done")
    manifest = json.loads((Path(item["location"]) / "manifest.json").read_text())
    assert manifest["tables"]["crypto_account"]["rows"] == 1
    # The file says its format: COPY text from PostgreSQL, JSON lines from SQLite.
    ext = "copy" if host.pg is not None else "jsonl"
    assert manifest["tables"]["crypto_account"]["file"] == f"crypto_account.{ext}"
    assert "kv_store.recovery_key" not in manifest["tables"]
    assert "recovery key is kept" in manifest["extra"]["plan"]
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 0, text
    restored = state(host, BRIDGE)
    assert restored["tables"] == before["tables"]  # every table, by checksum
    if host.pg is not None:
        assert restored["data"] == before["data"]
    assert systemd.get(UNIT) == "active"


def test_full_reset_then_restore(host: Host, systemd: Systemd, tmp_path: Path, capsys) -> None:
    before = state(host, BRIDGE)
    code, text = run(
        capsys, "reset", BRIDGE, "--mode", "full", "--yes", *host.args(), *backup_args(tmp_path)
    )
    assert code == 0, text
    assert "log in to the remote network again" in text
    b = resolve(BRIDGE, options(host))
    assert list(b.data_dir.iterdir()) == []
    assert state(host, BRIDGE)["tables"] == {}
    item = only_backup(capsys, host, tmp_path)
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 0, text
    assert state(host, BRIDGE) == before


def _store_in_config_dir(tmp_path: Path) -> Host:
    """A SQLite bridge whose store is in its config directory, not its data directory (a custom
    setup): a full reset keeps a copy of its own, database.sqlite."""
    host = deploy(tmp_path, None, "sqlite")
    b = resolve(BRIDGE, options(host))
    config = b.data_dir.parent / "config"
    b.db.path.rename(config / b.db.path.name)
    yml = config / "config.yaml"
    yml.write_text(yml.read_text().replace(f"uri: /data/{b.db.path.name}",
                                           f"uri: /config/{b.db.path.name}"))  # fmt: skip
    assert resolve(BRIDGE, options(host)).db.path == config / b.db.path.name
    return host


def test_full_reset_of_a_sqlite_store_outside_the_data_dir_restores_it(
    systemd: Systemd, tmp_path: Path, capsys
) -> None:
    host = _store_in_config_dir(tmp_path)
    before = state(host, BRIDGE)
    item = _full_reset(host, tmp_path, capsys)
    assert not resolve(BRIDGE, options(host)).db.path.exists()
    copy = Path(item["location"]) / "database.sqlite"
    assert copy.stat().st_mode & 0o777 == 0o600
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 0, text
    assert state(host, BRIDGE) == before


def test_a_restored_sqlite_file_takes_the_place_of_what_was_left_beside_it(
    systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """Between a full reset and its restore the bridge ran on a new store (its WAL, shared
    memory and rollback journal beside it) and an earlier restore was killed after writing its
    copy: the restored file replaces all of them, or SQLite would replay a stranger's journal
    into it."""
    host = _store_in_config_dir(tmp_path)
    before = state(host, BRIDGE)
    item = _full_reset(host, tmp_path, capsys)
    path = resolve(BRIDGE, options(host)).db.path
    left = [path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")]
    left.append(path.with_name(f".{path.name}.bridgedoctor"))
    for f in left:
        f.write_bytes(b"left by someone else")
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 0, text
    assert [f.name for f in left if f.exists()] == []
    assert state(host, BRIDGE) == before


def test_a_reset_records_the_options_recovery_rebuilds_it_from(
    pg: PgServer, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """Recovery after a crash knows the bridge only from its record: the root, the systemd
    directory (the unit's mounts name the data and config directories), the database host and
    pins the reset was started with, not the defaults."""
    host = deploy(tmp_path, pg, "postgres")
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    (m,) = all_for(tmp_path / "backups" / BRIDGE)
    assert options_of(m) == options(host)
    assert options(host).systemd_dir != Path("/etc/systemd/system") and options(host).db_pins


def test_after_a_failed_step_a_store_that_cannot_answer_counts_as_committed(
    systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """When a fenced step fails, its fence is looked for to learn whether its transaction
    committed. A store that cannot answer (here no longer a database at all) counts as
    committed: the roll-back then puts the backup back rather than trust a store it cannot
    read."""
    host = deploy(tmp_path, None, "sqlite")
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    (m,) = all_for(tmp_path / "backups" / BRIDGE)

    async def stands() -> bool:
        ctx = Ctx.of(m)
        try:
            return await _stands(ctx, "apply")
        finally:
            await ctx.close()

    async def fence() -> None:
        ctx = Ctx.of(m)
        try:
            await (await ctx.db()).set_fence(fence_token(m, "apply"))
        finally:
            await ctx.close()

    assert asyncio.run(stands()) is False  # no fence: it committed
    asyncio.run(fence())
    assert asyncio.run(stands()) is True  # the fence stands: it did not
    store = resolve(BRIDGE, options(host)).db.path
    store.write_bytes(b"not a database " * 512)
    assert asyncio.run(stands()) is False


def _sequences(host: Host) -> dict[str, int]:
    """Each sequence's next value, as the bridge's next INSERT would take it."""

    async def go() -> dict[str, int]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            names = await db.conn.fetch(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() "
                "ORDER BY 1"
            )
            return {r[0]: await db.conn.fetchval("SELECT nextval($1)", r[0]) for r in names}
        finally:
            await db.close()

    return asyncio.run(go())


def test_full_restore_puts_sequences_back_where_they_were(
    pg: PgServer, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """A bridge table with a serial key must go on from its last value after a restore, or the
    bridge's next INSERT collides with a restored row; a sequence never used stays unused."""
    host = deploy(tmp_path, pg, "postgres")
    _exec(
        host,
        "CREATE TABLE bridge_log (id BIGSERIAL PRIMARY KEY, msg TEXT)",
        "INSERT INTO bridge_log (msg) VALUES ('a'), ('b'), ('c')",
        "CREATE SEQUENCE never_used",
    )
    item = _full_reset(host, tmp_path, capsys)
    assert _sequences(host) == {}
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 0, text
    assert _sequences(host) == {"bridge_log_id_seq": 4, "never_used": 1}


def _full_reset(host: Host, tmp_path: Path, capsys) -> dict:
    code, text = run(
        capsys, "reset", BRIDGE, "--mode", "full", "--yes", *host.args(), *backup_args(tmp_path)
    )
    assert code == 0, text
    return only_backup(capsys, host, tmp_path)


def _append(path: Path) -> None:
    path.write_text(path.read_text() + "\nDROP TABLE crypto_account;\n")


def _same_rows_other_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"phone", b"phony"))


def _flip_last_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("layout", "name", "damage"),
    [
        ("postgres", "schema-post.sql", _append),
        ("postgres", "table.crypto_device.copy", _same_rows_other_bytes),
        ("sqlite outside data", "database.sqlite", _flip_last_bit),
    ],
)
def test_a_damaged_full_backup_file_restores_nothing(
    layout: str, name: str, damage, pg: PgServer, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """Refused before anything is written: the data directory goes back first, so every file
    the database is rebuilt from must read back as verified before it does."""
    host = (
        deploy(tmp_path, pg, "postgres")
        if layout == "postgres"
        else _store_in_config_dir(tmp_path)
    )
    item = _full_reset(host, tmp_path, capsys)
    emptied = state(host, BRIDGE)
    damage(Path(item["location"]) / name)
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 1, text
    assert f"restore refused (backup file {name} is damaged; nothing was changed)" in text
    assert state(host, BRIDGE) == emptied
    assert systemd.get(UNIT) == "active"  # as the admin had it


def test_a_restore_failing_after_its_data_dir_is_back_says_how_to_finish(
    pg: PgServer, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """Once the data directory is replaced there is no going back to the reset state: the
    bridge stays stopped (half restored, it must not run), and the same command finishes."""
    host = deploy(tmp_path, pg, "postgres")
    before = state(host, BRIDGE)
    item = _full_reset(host, tmp_path, capsys)
    user = resolve(BRIDGE, options(host)).db.user
    psql = bindir() / "psql"
    sql = f'ALTER ROLE "{user}" CONNECTION LIMIT 0'  # the database refuses the bridge's user
    systemd.on_stop_once(UNIT, f"PGPASSWORD={pg.password} {psql} -qX -h {pg.host} -p {pg.port} "
                               f"-U {pg.user} -d postgres -c '{sql}'")  # fmt: skip
    args = ["restore", BRIDGE, item["id"], "--yes", *host.args(), *backup_args(tmp_path)]
    code, text = run(capsys, *args)
    assert code == 1, text
    assert "the bridge is left stopped, half restored. Retry with " in text
    assert f"'bridgedoctor restore {BRIDGE} {item['id']}'" in text
    assert systemd.get(UNIT) == "inactive"
    # The data directory is back (read directly: the bridge's user cannot connect yet).
    assert dir_digest(resolve(BRIDGE, options(host)).data_dir) == before["data"]

    asyncio.run(_as_superuser(pg, f'ALTER ROLE "{user}" CONNECTION LIMIT -1'))
    plan = plan_restore(BRIDGE, item["id"], options(host), tmp_path / "backups")
    assert "then start it" in plan.render()  # as the admin had it before the failed restore
    code, text = run(capsys, *args)
    assert code == 0, text
    assert state(host, BRIDGE) == before and systemd.get(UNIT) == "active"


def test_a_full_restore_whose_tables_differ_from_the_backups_record_commits_nothing(
    pg: PgServer, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """After the load, every table is compared with the backup's record of it, inside the
    restore's transaction: one the record names that the load did not bring back (here a
    record that names one more) aborts it, and the database stays as the reset left it."""
    host = deploy(tmp_path, pg, "postgres")
    item = _full_reset(host, tmp_path, capsys)
    emptied = state(host, BRIDGE)
    record = Path(item["location"]) / "manifest.json"
    m = json.loads(record.read_text())
    m["snapshot"]["ghost"] = {"rows": 1, "sha256": "0" * 64}
    record.write_text(json.dumps(m))
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 1, text
    assert "restore failed (the restored table ghost differs from its backup; aborted)" in text
    assert state(host, BRIDGE)["tables"] == emptied["tables"]
    assert systemd.get(UNIT) == "inactive"  # its data directory is back: half restored


NOT_OWNED = (
    "the bridge's database user does not own its database (or is a superuser); a full reset "
    "would touch more than the bridge. Nothing was changed."
)


def test_full_reset_of_a_database_the_bridge_does_not_own_is_refused(
    pg: PgServer, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """DROP OWNED is the bridge's own database emptied only in MDAD's shape (the bridge's user
    owns it): in a shared database it would take other owners' grants and objects along. The
    plan says so, before the bridge is stopped."""
    host = deploy(tmp_path, pg, "postgres")
    (name,) = host.databases.values()
    asyncio.run(_as_superuser(pg, f'ALTER DATABASE "{name}" OWNER TO "{pg.user}"'))
    before = state(host, BRIDGE)
    code, text = run(
        capsys, "reset", BRIDGE, "--mode", "full", "--yes", *host.args(), *backup_args(tmp_path)
    )
    assert code == 1, text
    assert NOT_OWNED in text
    assert state(host, BRIDGE) == before
    assert f"stop {UNIT}" not in systemd.calls() and systemd.get(UNIT) == "active"


def test_a_database_given_away_while_the_bridge_stops_is_refused_too(
    pg: PgServer, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """The backup step asks again: what the plan saw may have changed by the stop."""
    host = deploy(tmp_path, pg, "postgres")
    (name,) = host.databases.values()
    psql = bindir() / "psql"
    sql = f'ALTER DATABASE "{name}" OWNER TO "{pg.user}"'
    systemd.on_stop_once(UNIT, f"PGPASSWORD={pg.password} {psql} -qX -h {pg.host} -p {pg.port} "
                               f"-U {pg.user} -d postgres -c '{sql}'")  # fmt: skip
    before = state(host, BRIDGE)
    code, text = run(
        capsys, "reset", BRIDGE, "--mode", "full", "--yes", *host.args(), *backup_args(tmp_path)
    )
    assert code == 1, text
    # One sentence, not "... Nothing was changed); nothing was changed."
    assert f"{NOT_OWNED} {UNIT} is running again." in text
    assert state(host, BRIDGE) == before and systemd.get(UNIT) == "active"


async def _as_superuser(pg: PgServer, sql: str) -> None:
    conn = await asyncpg.connect(pg.dsn("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_unit_that_does_not_stop_aborts_untouched(
    host: Host, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    before = state(host, BRIDGE)
    systemd.refuse_stop_once(UNIT)
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 1
    assert "still active" in text and "nothing was changed" in text
    assert state(host, BRIDGE) == before
    assert only_backup(capsys, host, tmp_path)["state"] == "rolled_back"


def test_failure_after_clearing_puts_the_backup_back(
    host: Host, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """The crypto rows are cleared, then the unit will not start: the reset restores its own
    verified backup, starts the unit again and says so. Nothing is lost."""
    before = state(host, BRIDGE)
    systemd.refuse_start_once(UNIT)
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 1
    assert f"systemctl start {UNIT} failed" in text
    assert "its backup was put back, the bridge is as before" in text
    assert state(host, BRIDGE)["tables"] == before["tables"]  # every table, by checksum
    assert systemd.calls().count(f"start {UNIT}") == 2 and systemd.get(UNIT) == "active"
    item = only_backup(capsys, host, tmp_path)
    assert item["state"] == "rolled_back"


def test_interactive_yes_and_no(
    host: Host, systemd: Systemd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """On a terminal the plan is shown and only the word 'yes' runs it."""
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    before = state(host, BRIDGE)
    monkeypatch.setattr("sys.stdin", Tty("y\n"))
    code, text = run(capsys, "reset", BRIDGE, *host.args(), *backup_args(tmp_path))
    assert code == 1 and "not confirmed; nothing was changed" in text
    assert state(host, BRIDGE) == before and not systemd.calls()[1:]
    monkeypatch.setattr("sys.stdin", Tty("yes\n"))
    code, text = run(capsys, "reset", BRIDGE, *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    assert "Reset plan for gmessages (crypto)" in text and "Undo: bridgedoctor restore" in text
    assert all(state(host, BRIDGE)["tables"][t][0] == 0 for t in CRYPTO_GONE)


def test_no_tty_without_yes_refuses(host: Host, systemd: Systemd, tmp_path: Path, capsys) -> None:
    before = state(host, BRIDGE)
    code, text = run(capsys, "reset", BRIDGE, *host.args(), *backup_args(tmp_path))
    assert code == 1
    assert "Reset plan for gmessages (crypto)" in text and "--yes" in text
    assert "bridgedoctor restore gmessages" in text
    assert not any(c.startswith("stop") for c in systemd.calls())
    assert state(host, BRIDGE) == before
