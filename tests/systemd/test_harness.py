"""The systemd-nspawn harness itself: real systemd, MDAD's bridge unit, the fake docker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.fixtures import mdad
from tests.support.nspawn import Machine

FATAL = (
    'FTL Failed to start bridge error="failed to start Matrix connector: '
    'the supplied account key is invalid"'
)


def test_mdad_unit_crash_loop_stop_and_reboot(
    nspawn: Callable[..., Machine], tmp_path: Path
) -> None:
    root = tmp_path / "matrix"
    config = mdad.render_config("gmessages", db_uri=mdad.mdad_db_uri("gmessages"))
    mdad.write_host(root, tmp_path / "units", "gmessages", config_text=config, unit_text=None)
    m = nspawn("harness", binds={"/matrix": root})
    # Only the restart delay differs from MDAD (30 s), to keep the test short.
    unit = m.bridge_unit("gmessages", dropins={"fast.conf": "[Service]\nRestartSec=1\n"})
    m.standin("matrix-mautrix-gmessages", [FATAL], exit_code=1)
    m.boot()

    # dockerd refuses a bind mount whose source is missing, and so does the fake.
    m.run("mv", "/matrix/mautrix-gmessages/data", "/matrix/mautrix-gmessages/data.away")
    r = m.systemctl("start", unit, check=False)
    assert r.returncode != 0
    assert "bind source path does not exist: /matrix/mautrix-gmessages/data" in m.journal(unit)
    m.run("mv", "/matrix/mautrix-gmessages/data.away", "/matrix/mautrix-gmessages/data")

    # A real crash loop: Restart=always restarts it, the journal holds the bridge's line.
    m.systemctl("start", unit)
    m.wait_for(lambda: int(m.show(unit, "NRestarts")) >= 2, what="two restarts")
    props = m.wait_for(
        lambda: (
            (p := m.show(unit, "SubState", "ExecMainStatus", "Result"))["SubState"]
            == "auto-restart"
            and p
        ),
        what="the auto-restart state",
    )
    assert props["ExecMainStatus"] == "1" and props["Result"] == "exit-code"  # type: ignore[index]
    assert FATAL in m.journal(unit)
    calls = m.docker_calls()
    create = next(c for c in calls if c[0] == "create")
    assert "--name=matrix-mautrix-gmessages" in create
    assert (
        "--mount" in create and "type=bind,src=/matrix/mautrix-gmessages/data,dst=/data" in create
    )
    assert ["start", "--attach", "matrix-mautrix-gmessages"] in calls

    # A healthy stand-in stays up; systemctl stop runs MDAD's ExecStop (docker stop) and ends it.
    m.standin("matrix-mautrix-gmessages", ["INF bridge started"])
    m.systemctl("restart", unit)
    m.wait_for(lambda: "INF bridge started" in m.journal(unit), what="the stand-in's line")
    assert m.show(unit, "SubState") == "running"
    m.systemctl("stop", unit)
    assert m.show(unit, "ActiveState") == "inactive"
    assert ["stop", "-t", "3", "matrix-mautrix-gmessages"] in m.docker_calls()

    # Enabled, it comes back after a reboot; /run started empty (no old container record).
    m.systemctl("enable", unit)
    boot_id = m.run("cat", "/proc/sys/kernel/random/boot_id").stdout
    m.reboot()
    assert m.run("cat", "/proc/sys/kernel/random/boot_id").stdout != boot_id
    m.wait_for(lambda: "INF bridge started" in m.journal(unit), what="the unit after reboot")
    assert m.show(unit, "SubState") == "running"
    # /run started empty: this boot's calls only, beginning with the unit's ExecStartPre.
    assert [c[0] for c in m.docker_calls()][:3] == ["stop", "rm", "create"]
