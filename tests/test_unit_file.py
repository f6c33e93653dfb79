"""deploy/bridgedoctor-helper.service: the resource and network caps are there, and systemd reads
every line of it (a misspelt directive is silently ignored by systemd, so it is checked here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "bridgedoctor-helper.service"
DROPIN = UNIT.with_name("bridgedoctor-helper.service.d") / "reset.conf"


def directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_caps() -> None:
    d = directives(UNIT)
    assert d["MemoryMax"] == ["512M"] and d["TasksMax"] == ["128"]
    assert d["LimitNOFILE"] == ["1024"] and d["LimitCORE"] == ["0"]
    # No IP at all unless a drop-in allows the db_host address (docs/helper.md).
    assert d["IPAddressDeny"] == ["any"] and "IPAddressAllow" not in d
    assert "IPAddressAllow" not in directives(DROPIN)
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH CAP_CHOWN"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing")
def test_systemd_reads_every_directive(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    # A stand-in ExecStart that exists here; everything else as shipped.
    unit.write_text(
        UNIT.read_text().replace("/opt/bridgedoctor/bin/bridgedoctor-helper", "/bin/true")
    )
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    noise = [line for line in (r.stdout + r.stderr).splitlines() if unit.name in line]
    assert not [line for line in noise if "Unknown" in line or "ignoring" in line.lower()], noise
