"""docs/helper.md's manual steps, run as written under real systemd; the unit's hardening score."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap

import pytest

from .mdad_host import DOCS, REPO, MdadHost, sh_blocks
from .test_install import UNIT

# `systemd-analyze security` of the unit on main before this work (2.4 "OK"): never worse.
EXPOSURE_LIMIT = 2.4
CHECKOUT = "/srv/bridgedoctor-checkout"


def exposure(unit_file: str) -> float:
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", unit_file],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m is not None, r.stdout + r.stderr
    return float(m.group(1))


def test_unit_exposure_stays_at_or_below_today() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian: systemd)")
    assert exposure(str(REPO / "deploy" / "bridgedoctor-helper.service")) <= EXPOSURE_LIMIT


def test_manual_steps_as_written(mdad_host: MdadHost, tmp_path) -> None:
    """Every command of "Manual install (reference)" and of "Resets from the room", verbatim, run
    from a checkout; the config is the YAML block the docs show."""
    h, m = mdad_host, mdad_host.m
    m.run("mkdir", "-p", CHECKOUT)
    text = DOCS.read_text()
    blocks = sh_blocks("### Manual install (reference)")
    yaml_block = re.search(r"### Manual install.*?```yaml\n(.*?)```", text, re.S)
    assert yaml_block is not None and len(blocks) == 2
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "deploy", checkout / "deploy", symlinks=True)
    shutil.copytree(
        REPO / "bridgedoctor" / "helper" / "deploy",
        checkout / "bridgedoctor" / "helper" / "deploy",
    )
    # The checkout is copied in through stdin (a tar), as an admin would have it on the host.
    tar = subprocess.run(
        ["tar", "-C", str(checkout), "-c", "."], capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["nsenter", "-t", str(m._leader()), "-a", "tar", "-C", CHECKOUT, "-x"],
        input=tar,
        check=True,
    )
    for cmd in blocks[0]:
        m.sh(cmd)
    m.write("/etc/bridgedoctor/helper.yaml", textwrap.dedent(yaml_block.group(1)))
    for cmd in blocks[1]:
        m.sh(f"cd {CHECKOUT} && {cmd}")
    h.wait_answering()
    assert h.ask("list")["result"]["bridges"] == ["gmessages", "whatsapp"]
    assert (
        m.run("cat", f"/etc/systemd/system/{UNIT}").stdout == (REPO / "deploy" / UNIT).read_text()
    )
    assert m.run("test", "-d", "/run/bridgedoctor").returncode == 0
    assert "bridgedoctor.conf" in m.run("ls", "/etc/tmpfiles.d").stdout

    # Resets from the room, by hand: allow_reset and the drop-in, then a reset works.
    m.sh("echo 'allow_reset: true' >> /etc/bridgedoctor/helper.yaml")
    for cmd in sh_blocks("## Resets from the room")[0]:
        m.sh(f"cd {CHECKOUT} && {cmd}")
    assert "reset.conf" in m.show(UNIT, "DropInPaths")
    h.wait_answering()
    done = h.reset("gmessages", "crypto")
    assert done["state"] == "done", done
