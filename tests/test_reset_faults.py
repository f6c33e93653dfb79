"""Crash at every step (a real process dying with os._exit), then recovery; disk full."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridgedoctor.cli.main import main
from bridgedoctor.reset.engine import CRASH_ENV, RESET_STEPS, RESTORE_STEPS
from bridgedoctor.reset.manifest import all_for
from bridgedoctor.reset.recover import recover
from tests.support.pg import PgServer
from tests.support.reset_env import Systemd, state
from tests.test_reset import BRIDGE, CRYPTO_GONE, UNIT, deploy

REPO = Path(__file__).resolve().parents[1]


def cli(host_args: list[str], backups: Path, *argv: str, crash: str) -> int:
    env = {**os.environ, CRASH_ENV: crash, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bridgedoctor.cli.main", *argv, *host_args]
    cmd += ["--backup-dir", str(backups)]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=60).returncode


def is_reset(now: dict, mode: str) -> bool:
    tables = now["tables"]
    if mode == "full":
        return tables == {}
    return all(tables[t][0] == 0 for t in CRYPTO_GONE)


CASES = [(mode, step) for mode, steps in RESET_STEPS.items() for step in steps]


@pytest.mark.parametrize(("mode", "step"), CASES)
def test_crash_during_reset_then_recover(
    tmp_path: Path, pg: PgServer, systemd: Systemd, mode: str, step: str
) -> None:
    host = deploy(tmp_path, pg, "postgres")
    before = state(host, BRIDGE)
    backups = tmp_path / "backups"
    rc = cli(host.args(), backups, "reset", BRIDGE, "--mode", mode, "--yes", crash=step)
    assert rc == 137
    recovered = asyncio.run(recover(backups))
    # The process dies after `step` and before the manifest records it. Until "verify" is
    # recorded nothing in the database was changed: roll back. From then on: roll forward.
    steps = RESET_STEPS[mode]
    expected = "rolled_back" if steps.index(step) <= steps.index("verify") else "done"
    assert [r.manifest.state for r in recovered] == [expected]
    now = state(host, BRIDGE)
    assert systemd.get(UNIT) == "active"
    (m,) = all_for(backups / BRIDGE)
    if expected == "rolled_back":
        assert now == before
        return
    assert is_reset(now, mode), "half-reset bridge after recovery"
    assert (
        main(["restore", BRIDGE, m.id, "--yes", *host.args(), "--backup-dir", str(backups)]) == 0
    )
    assert state(host, BRIDGE) == before


RESTORE_CASES = [(mode, step) for mode, steps in RESTORE_STEPS.items() for step in steps]


@pytest.mark.parametrize(("mode", "step"), RESTORE_CASES)
def test_crash_during_restore_then_recover(
    tmp_path: Path, pg: PgServer, systemd: Systemd, mode: str, step: str
) -> None:
    host = deploy(tmp_path, pg, "postgres")
    before = state(host, BRIDGE)
    backups = tmp_path / "backups"
    argv = ["reset", BRIDGE, "--mode", mode, "--yes", *host.args(), "--backup-dir", str(backups)]
    assert main(argv) == 0
    (m,) = all_for(backups / BRIDGE)
    rc = cli(host.args(), backups, "restore", BRIDGE, m.id, "--yes", crash=step)
    assert rc == 137
    recovered = asyncio.run(recover(backups))
    assert [r.manifest.state for r in recovered] == ["done"]
    assert state(host, BRIDGE) == before
    assert systemd.get(UNIT) == "active"


def test_next_reset_recovers_first(tmp_path: Path, pg: PgServer, systemd: Systemd, capsys) -> None:
    host = deploy(tmp_path, pg, "postgres")
    backups = tmp_path / "backups"
    assert cli(host.args(), backups, "reset", BRIDGE, "--yes", crash="apply") == 137
    assert (backups / BRIDGE / ".lock").exists()  # left by the dead process
    argv = ["reset", BRIDGE, "--yes", *host.args(), "--backup-dir", str(backups)]
    assert main(argv) == 0
    assert [m.state for m in all_for(backups / BRIDGE)] == ["done", "done"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_backup_that_does_not_fit_touches_nothing(
    tmp_path: Path, pg: PgServer, systemd: Systemd, capsys
) -> None:
    host = deploy(tmp_path, pg, "postgres")
    before = state(host, BRIDGE)
    backups = tmp_path / "backups"
    backups.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(backups)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount tmpfs here (container without CAP_SYS_ADMIN)")
    try:
        code = main(["reset", BRIDGE, "--yes", *host.args(), "--backup-dir", str(backups)])
        out, err = capsys.readouterr()
        assert code == 1
        assert "not enough space" in err and "nothing was changed" in err
        assert not any(c.startswith("stop") for c in systemd.calls())
        assert state(host, BRIDGE) == before
        assert all_for(backups / BRIDGE) == []  # no manifest: refused before planning
    finally:
        subprocess.run(["umount", str(backups)])
