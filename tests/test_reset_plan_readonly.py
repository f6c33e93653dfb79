"""Planning a reset (the CLI without --yes, the helper's reset_plan) reads and never writes: no
database file is created, no backup directory appears, every table and file stays as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgedoctor.reset.backup import dir_digest
from bridgedoctor.reset.target import resolve
from tests.support.cli import run
from tests.support.fleet import Host
from tests.support.reset_env import RESET_BRIDGE, Systemd, options, state
from tests.test_helper_reset import ask, refused
from tests.test_helper_server import Running, make_config, sockdir
from tests.test_reset import backup_args, deploy, engine, host

BRIDGE = RESET_BRIDGE
__all__ = ["engine", "host", "sockdir"]  # fixtures used here


def test_planning_a_missing_sqlite_store_creates_nothing(
    tmp_path: Path, systemd: Systemd, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bridge whose SQLite file is gone: the plan says so and leaves no empty root-owned file
    behind (the bridge could not open it)."""
    host = deploy(tmp_path, None, "sqlite")
    db = resolve(BRIDGE, options(host)).db
    db.path.unlink()  # type: ignore[union-attr]
    code, text = run(capsys, "reset", BRIDGE, *host.args(), *backup_args(tmp_path))
    assert code == 2, text
    assert "does not exist" in text and "nothing was changed" in text
    assert not db.path.exists()  # type: ignore[union-attr]
    assert not (tmp_path / "backups").exists()
    assert systemd.calls() == []


def test_a_plan_changes_no_table_no_file(
    host: Host, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(host, BRIDGE)
    tree = dir_digest(host.root)
    code, text = run(capsys, "reset", BRIDGE, "--mode", "full", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 1 and "Reset plan for gmessages (full)" in text
    assert state(host, BRIDGE) == before
    assert dir_digest(host.root) == tree  # not even a SQLite -journal or -shm appeared
    assert not (tmp_path / "backups").exists()
    assert not [c for c in systemd.calls() if not c.startswith("show")]


@pytest.fixture
def helper_sqlite(
    tmp_path: Path, systemd: Systemd, sockdir: Path
) -> Iterator[tuple[Host, Running]]:
    host = deploy(tmp_path / "host", None, "sqlite")
    r = Running(make_config(host, sockdir, allow_reset=True))
    yield host, r
    r.stop()


def test_helper_plan_of_a_missing_store_creates_nothing(
    helper_sqlite: tuple[Host, Running],
) -> None:
    host, helper = helper_sqlite
    db = resolve(BRIDGE, options(host)).db
    db.path.unlink()  # type: ignore[union-attr]
    message = refused(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    assert "does not exist" in message
    assert not db.path.exists()  # type: ignore[union-attr]
    assert not (helper.cfg.backup_dir / BRIDGE).exists()


def test_the_plan_says_what_a_crypto_reset_means_for_cross_signing() -> None:
    """mautrix-go's doSelfSign: with the recovery key kept the bot keeps its identity; without
    one, a server that has the bot's keys makes the bridge exit 34 (knowledge/failures.md)."""
    from bridgedoctor.reset.crypto import cross_signing_note

    keeps = (
        "so a bridge with self_sign on verifies its new device with the bot's existing "
        "cross-signing keys; the bot's identity does not change"
    )
    exit34 = (
        "stops with exit 34 if the server already has the bot's cross-signing keys (then set "
        "kv_store recovery_key to 'overwrite' for new keys)"
    )
    assert cross_signing_note(True) == f"cross-signing: the stored recovery key is kept, {keeps}"
    assert cross_signing_note(None) == (
        f"cross-signing: a stored recovery key is kept, {keeps}; without one the bridge {exit34}"
    )
    assert cross_signing_note(False) == (
        "cross-signing: no recovery key is stored; with self_sign on the bridge makes new "
        f"cross-signing keys if the server has none, and {exit34}"
    )


@pytest.mark.parametrize("was_active", [True, False])
def test_the_terminal_plan_says_whether_the_unit_starts_again(
    tmp_path: Path, was_active: bool
) -> None:
    from bridgedoctor.reset.plan import make

    p = make("whatsapp", "full", "matrix-mautrix-whatsapp.service", was_active,
             "postgresql://matrix-postgres:5432/matrix_mautrix_whatsapp",
             tmp_path / "data", tmp_path / "backups", ["portal", "user"], ident="ID-full")  # fmt: skip
    lines = p.render().splitlines()
    step4 = (
        "  4. start matrix-mautrix-whatsapp.service"
        if was_active
        else "  4. leave stopped (it was not running): matrix-mautrix-whatsapp.service"
    )
    assert lines[0] == "Reset plan for whatsapp (full):"
    assert step4 in lines
    assert lines[-1] == "Undo: bridgedoctor restore whatsapp ID-full"
    # What the helper sends (JSON): paths as their text, and the digest of all the rest.
    d = p.to_dict()
    assert (d["data_dir"], d["backup_dir"]) == (
        str(tmp_path / "data"),
        str(tmp_path / "backups" / "ID-full"),
    )
    assert d["was_active"] is was_active and d["digest"] == p.digest
    db = "postgresql://matrix-postgres:5432/matrix_mautrix_whatsapp"
    assert d["backed_up"] == [
        f"the whole database {db} (2 tables, schema and rows)",
        f"the data directory {tmp_path / 'data'} (tar)",
    ]
    assert d["kept"] == "the config directory and the database itself (empty, same owner)"


def test_a_crypto_plan_names_the_recovery_key_as_kept_unless_there_is_none(tmp_path: Path) -> None:
    from bridgedoctor.reset.plan import KEPT_CRYPTO, make

    def kept(recovery_key: bool | None) -> str:
        return make("whatsapp", "crypto", "u.service", True, "db", tmp_path / "data",
                    tmp_path / "b", ["crypto_account"], "ID", recovery_key).kept  # fmt: skip

    assert kept(False) == KEPT_CRYPTO
    for stored_or_unknown in (True, None):
        assert kept(stored_or_unknown) == (
            "kv_store row recovery_key (plain text; self-signing needs it), " + KEPT_CRYPTO
        )
