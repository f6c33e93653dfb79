"""Bulk copies have no fixed timeout: a restore whose COPY takes longer than the probes' 10 s
command timeout finishes (a store of 1–2 million sessions takes that long on a real host)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run
from tests.support.pg import PgServer
from tests.support.reset_env import RESET_BRIDGE, RESET_UNIT, Systemd, state
from tests.test_reset import _exec, backup_args, deploy

BRIDGE = RESET_BRIDGE
SLOW_SECONDS = 11  # longer than probes.database.QUERY_TIMEOUT (10 s)


def test_restore_whose_copy_outlasts_ten_seconds(
    tmp_path: Path, pg: PgServer, systemd: Systemd, capsys: pytest.CaptureFixture[str]
) -> None:
    host = deploy(tmp_path, pg, "postgres")
    before = state(host, BRIDGE)
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    # Loading the rows back takes SLOW_SECONDS: a statement trigger stands in for a big table.
    _exec(
        host,
        "CREATE FUNCTION slow_load() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({SLOW_SECONDS}); RETURN NULL; END $$",
        "CREATE TRIGGER slow_load BEFORE INSERT ON crypto_olm_session "
        "FOR EACH STATEMENT EXECUTE FUNCTION slow_load()",
    )
    code, text = run(capsys, "backups", BRIDGE, "--json", *host.args(), *backup_args(tmp_path))
    ident = json.loads(text)[0]["id"]
    code, text = run(capsys, "restore", BRIDGE, ident, "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 0, text
    assert state(host, BRIDGE)["tables"] == before["tables"]
    assert systemd.get(RESET_UNIT) == "active"
