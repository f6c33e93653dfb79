"""Reboots of an MDAD host with the helper installed: /run starts empty, units start in parallel."""

from __future__ import annotations

import time

from tests.fixtures import mdad

from .mdad_host import PG_BRIDGE, MdadHost
from .test_install import UNIT, docs_install

MAUBOT = "matrix-bot-maubot.service"
MOUNT = "--mount type=bind,src=/run/bridgedoctor,dst=/run/bridgedoctor,readonly"


def add_maubot(h: MdadHost) -> None:
    """maubot as MDAD renders it with the vars.yml line install prints (its mount of the
    helper's socket directory); the fake docker refuses a missing bind source, as dockerd does."""
    m = h.m
    m.sh("mkdir -p /matrix/maubot/config /matrix/maubot/data")
    m.standin("matrix-bot-maubot", ["INF maubot stand-in started"])
    m.install_unit(MAUBOT, mdad.render_maubot_unit(extra_arguments=(MOUNT,)))
    m.systemctl("enable", "--now", MAUBOT)


def maubot_runs(h: MdadHost) -> bool:
    return (
        h.m.show(MAUBOT, "SubState") == "running"
        and ["start", "--attach", "matrix-bot-maubot"] in h.m.docker_calls()
    )


def test_reboot_helper_socket_and_maubot_come_back(mdad_host: MdadHost) -> None:
    h, m = mdad_host, mdad_host.m
    docs_install(m)
    add_maubot(h)
    m.wait_for(lambda: maubot_runs(h), what="maubot running")

    m.reboot()
    m.wait_for(lambda: m.show(UNIT, "SubState") == "running", what="the helper after reboot")
    h.wait_answering()
    assert h.ask("list")["result"]["bridges"] == ["gmessages", "whatsapp"]
    m.wait_for(lambda: maubot_runs(h), what="maubot after reboot")

    # maubot does not depend on the helper: with the helper off, /run/bridgedoctor is still made
    # at boot (tmpfiles.d), so maubot's container is created and starts.
    m.systemctl("disable", "--now", UNIT)
    m.reboot()
    m.wait_for(lambda: maubot_runs(h), timeout=30, what="maubot after a reboot without the helper")
    assert m.show(UNIT, "ActiveState") == "inactive"
    assert "bind source path does not exist" not in m.journal(MAUBOT, "-b")


def test_reset_cut_by_power_loss_is_recovered_at_boot(mdad_host: MdadHost) -> None:
    h, m = mdad_host, mdad_host.m
    docs_install(m, "--allow-reset")
    before = h.state(PG_BRIDGE)
    # The helper dies right after deleting the crypto rows, before recording it, and stays down.
    m.install_unit(
        UNIT, m.run("cat", f"/etc/systemd/system/{UNIT}").stdout,
        {"crash.conf": "[Service]\nEnvironment=BRIDGEDOCTOR_CRASH_AT=apply\nRestart=no\n"},
    )  # fmt: skip
    m.systemctl("restart", UNIT)
    h.wait_answering()
    plan = h.ask("reset_plan", bridge=PG_BRIDGE, mode="crypto")["result"]
    cut = h.ask(
        "reset", bridge=PG_BRIDGE, mode="crypto", plan=plan["id"], digest=plan["digest"],
        requested_by="@admin:example.com",
    )  # fmt: skip
    assert cut["code"] == "unreachable", cut  # the helper died mid-reset
    m.wait_for(lambda: m.show(UNIT, "ActiveState") in ("failed", "inactive"), what="the crash")
    m.power_cut()
    (m.etc_upper / "systemd" / "system" / f"{UNIT}.d" / "crash.conf").unlink()
    m.boot()
    m.wait_for(lambda: m.show(UNIT, "SubState") == "running", what="the helper after boot")
    m.wait_for(lambda: "recovered" in m.journal(UNIT, "-b"), what="recovery at start")
    backups = h.ask("backups", bridge=PG_BRIDGE)["result"]["backups"]
    assert len(backups) == 1 and backups[0]["state"] in ("done", "rolled_back")
    now = h.state(PG_BRIDGE)
    assert now == before or all(now["tables"][t][0] == 0 for t in ("crypto_account",))


def test_bad_config_fails_once_with_its_sentence(mdad_host: MdadHost) -> None:
    m = mdad_host.m
    docs_install(m)
    m.sh("echo 'colour: blue' >> /etc/bridgedoctor/helper.yaml")
    m.systemctl("restart", UNIT, check=False)
    m.wait_for(lambda: m.show(UNIT, "ActiveState") == "failed", what="the unit failing")
    time.sleep(7)  # past RestartSec=5: a restart would have happened by now
    props = m.show(UNIT, "ActiveState", "ExecMainStatus", "NRestarts")
    assert props == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
    assert "unknown setting 'colour'" in m.journal(UNIT)
    assert "Traceback" not in m.journal(UNIT)
