"""Full resets and restores under real systemd on Debian's Python 3.11.2 (no tarfile filter=)."""

from __future__ import annotations

import pytest

from .mdad_host import PG_BRIDGE, SQLITE_BRIDGE, MdadHost
from .test_install import docs_install


@pytest.mark.parametrize("bridge", [PG_BRIDGE, SQLITE_BRIDGE])
def test_full_reset_and_restore(mdad_host: MdadHost, bridge: str) -> None:
    h, m = mdad_host, mdad_host.m
    docs_install(m, "--allow-reset")
    unit = f"matrix-mautrix-{bridge}.service"
    before = h.state(bridge)
    done = h.reset(bridge, "full")
    assert h.state(bridge)["tables"] == {}
    assert m.run("find", f"/matrix/mautrix-{bridge}/data", "-mindepth", "1").stdout == ""
    if bridge == PG_BRIDGE:
        # No host client can dump PostgreSQL here: the schema came through the container's.
        assert m.run("ls", "/usr/lib/postgresql").stdout == ""
        schema = m.run("cat", f"{done['location']}/schema-pre.sql").stdout
        assert "CREATE TABLE" in schema
    h.restore(bridge, done["id"])
    assert h.state(bridge) == before
    assert m.show(unit, "SubState") == "running"
    # Owners and modes came back as MDAD had them.
    listing = m.run("stat", "-c", "%u:%g %a", f"/matrix/mautrix-{bridge}/data/media/blob.bin")
    assert listing.stdout.split() == ["991:991", "600"]
