"""Reset test helpers: fake systemctl on PATH, and table/data-dir snapshots of a bridge."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bridgedoctor.diagnose import Options
from bridgedoctor.reset.backup import dir_digest
from bridgedoctor.reset.dbio import open_db, snapshot
from bridgedoctor.reset.target import resolve

from .fleet import Host

FAKE = Path(__file__).with_name("fake_systemctl")
# The bridge the reset tests deploy, and its unit (the `systemd` fixture marks it running).
RESET_BRIDGE = "gmessages"
RESET_UNIT = f"matrix-mautrix-{RESET_BRIDGE}.service"


@dataclass
class Systemd:
    bin: Path
    state: Path
    log: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_SYSTEMCTL_STATE": str(self.state),
            "FAKE_SYSTEMCTL_LOG": str(self.log),
        }

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
