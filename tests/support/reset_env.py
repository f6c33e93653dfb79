"""Reset test helpers: fake systemctl on PATH, and table/data-dir snapshots of a bridge."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bridgedoctor.diagnose import Options
from bridgedoctor.probes.database import PgTarget
from bridgedoctor.reset.backup import dir_digest
from bridgedoctor.reset.dbio import open_db, snapshot
from bridgedoctor.reset.target import resolve

from . import outside
from .fleet import Host

FAKE = Path(__file__).with_name("fake_systemctl")
STANDIN = Path(__file__).with_name("standin_bridge.py")
# The bridge the reset tests deploy, and its unit (the `systemd` fixture marks it running).
RESET_BRIDGE = "gmessages"
RESET_UNIT = f"matrix-mautrix-{RESET_BRIDGE}.service"


@dataclass
class Systemd:
    bin: Path
    state: Path
    log: Path
    bridge: str = ""  # FAKE_SYSTEMCTL_BRIDGE for the processes this harness starts itself

    def env(self) -> dict[str, str]:
        out = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_SYSTEMCTL_STATE": str(self.state),
            "FAKE_SYSTEMCTL_LOG": str(self.log),
        }
        if self.bridge:
            out["FAKE_SYSTEMCTL_BRIDGE"] = self.bridge
        return out

    def set(self, unit: str, state: str) -> None:
        (self.state / unit).write_text(state + "\n")

    def get(self, unit: str) -> str:
        p = self.state / unit
        return p.read_text().strip() if p.exists() else "inactive"

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def refuse_stop_once(self, unit: str) -> None:
        (self.state / f"{unit}.refuse-stop").touch()

    def refuse_start_once(self, unit: str) -> None:
        (self.state / f"{unit}.refuse-start").touch()

    def hang_start(self, unit: str, on: bool = True) -> None:
        """Every `start` of the unit hangs (before doing anything) while this is on."""
        flag = self.state / f"{unit}.hang-start"
        flag.touch() if on else flag.unlink(missing_ok=True)

    def on_stop_once(self, unit: str, script: str) -> None:
        """A shell script run once, right after the unit's next stop."""
        hook = self.state / f"{unit}.after-stop-once"
        hook.write_text(f"#!/bin/sh\n{script} >>{self.state}/hook.log 2>&1\n")
        hook.chmod(0o755)

    def processes(self, units_only: bool = False) -> list[int]:
        """Every live process started under this harness (its FAKE_SYSTEMCTL_STATE is in their
        environment): CLIs, systemctl clients and jobs, and the units' processes (stand-in
        bridges), or only the latter. Found in /proc, so no pid file has to be right."""
        return harness_processes(str(self.state), exact=True, units_only=units_only)

    def kill(self, units_only: bool = False, timeout: float = 10.0) -> list[int]:
        """SIGKILL every process (group) `processes` finds, until none is left; returns the PIDs
        found at first. Raises if some survive (a test must not leave a bridge running)."""
        first = self.processes(units_only)
        deadline = time.monotonic() + timeout
        while left := self.processes(units_only):
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # a stand-in leads its own group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of {self.state} survive SIGKILL: {left}")
            time.sleep(0.02)
        return first

    def settle_jobs(self, timeout: float = 60.0) -> None:
        """Wait for the jobs a killed systemctl client left to finish, as systemd would finish
        them, before anything else talks to the units (the fake does not queue jobs)."""
        outside.wait_until(
            lambda: set(self.processes()) <= set(self.processes(units_only=True)) or None,
            timeout=timeout, what="systemctl jobs to finish",
        )  # fmt: skip

    def reboot(self, enabled: Iterable[str]) -> None:
        """The host restarts: every unit's process dies at once (SIGKILL, no stop), then the
        enabled units start by themselves, stand-in bridges included (FAKE_SYSTEMCTL_BRIDGE)."""
        self.kill()  # everything: the units, and any job a killed client left running
        for pidfile in self.state.glob("*.pid"):
            pidfile.unlink()
        for unit in self.state.iterdir():
            if unit.is_file() and unit.name.endswith(".service"):
                unit.write_text("inactive\n")
        with self.log.open("a") as f:
            f.write("# reboot\n")
        for unit in enabled:
            env = {**os.environ, **self.env()}
            subprocess.run(
                [str(self.bin / "systemctl"), "__job", "start", unit], env=env, check=True
            )

    def calls_since_reboot(self) -> list[str]:
        calls = self.calls()
        marks = [i for i, c in enumerate(calls) if c == "# reboot"]
        return calls[marks[-1] + 1 :] if marks else calls


def harness_processes(state: str, exact: bool, units_only: bool = False) -> list[int]:
    """Live processes whose FAKE_SYSTEMCTL_STATE is `state` (or, not `exact`, under it)."""
    mark = f"FAKE_SYSTEMCTL_STATE={state}".encode()
    mine = {os.getpid(), os.getppid()}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            continue  # dead, waiting for its parent to reap it
        ours = any(e == mark if exact else e.startswith(mark) for e in env)
        if ours and (not units_only or any(e.startswith(b"FAKE_SYSTEMCTL_UNIT=") for e in env)):
            found.append(int(proc.name))
    return found


def fake_systemd(tmp: Path) -> Systemd:
    b = tmp / "fakebin"
    b.mkdir()
    shutil.copy(FAKE, b / "systemctl")
    (tmp / "units").mkdir()
    return Systemd(b, tmp / "units", tmp / "systemctl.log")


def options(host: Host) -> Options:
    db_host = f"{host.pg.host}:{host.pg.port}" if host.pg else None
    return Options(root=host.root, systemd_dir=host.systemd, db_host=db_host, db_pins=host.pins())


def state(host: Host, bridge: str) -> dict[str, object]:
    """Every table's (rows, sha256) plus the data directory digest."""
    b = resolve(bridge, options(host))

    async def go() -> dict[str, object]:
        db = await open_db(b.db)
        try:
            return {t: (s.rows, s.sha256) for t, s in (await snapshot(db)).items()}
        finally:
            await db.close()

    tables = asyncio.run(go()) if _db_exists(b.db) else {}
    return {"tables": tables, "data": dir_digest(b.data_dir)}


def _db_exists(t: object) -> bool:
    p = getattr(t, "path", None)
    return p is None or p.exists()


def standin_command(host: Host, bridge: str, log: Path, interval: float = 0.02) -> str:
    """FAKE_SYSTEMCTL_BRIDGE for a stand-in bridge writing into `bridge`'s store."""
    t = resolve(bridge, options(host)).db
    if isinstance(t, PgTarget):
        dsn = f"postgres://{t.user}:{t.password}@{t.host}:{t.port}/{t.database}"
        where = f"STANDIN_DSN={shlex.quote(dsn)}"
    else:
        where = f"STANDIN_SQLITE={shlex.quote(str(t.path))}"
    return (
        f"{where} STANDIN_LOG={shlex.quote(str(log))} STANDIN_INTERVAL={interval} "
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}"
    )


def standin_rows(log: Path) -> list[str]:
    """Every row a stand-in bridge committed (and logged), in order."""
    return log.read_text().split() if log.exists() else []
