"""Check, crypto and full resets and restores through the helper under real systemd: the hardened
unit with its reset drop-in, real `systemctl stop/start` of MDAD's bridge units, Debian's Python,
a host with no PostgreSQL client (the dump goes through `docker exec matrix-postgres`)."""

from __future__ import annotations

import ipaddress

import pytest

from .mdad_host import PG_BRIDGE, SQLITE_BRIDGE, MdadHost
from .test_install import docs_install

CRYPTO = ("crypto_account", "crypto_olm_session", "crypto_megolm_inbound_session")


@pytest.mark.parametrize("bridge", [PG_BRIDGE, SQLITE_BRIDGE])
def test_check_and_crypto_reset_and_restore(mdad_host: MdadHost, bridge: str) -> None:
    h, m = mdad_host, mdad_host.m
    docs_install(m, "--allow-reset")
    unit, container = f"matrix-mautrix-{bridge}.service", f"matrix-mautrix-{bridge}"
    checked = h.ask("check", bridge=bridge)
    assert checked["ok"] and checked["result"]["bridge"] == bridge, checked
    assert checked["result"]["status"] != "unknown", checked  # the helper reached the database
    before = h.state(bridge)
    starts = h.start_calls(container)

    done = h.reset(bridge, "crypto")
    assert any("recovery key is kept" in a for a in done["plan"]["after"])
    after = h.state(bridge)
    for t in CRYPTO:
        assert after["tables"][t][0] == 0, t
    # The recovery key and every bridge table are kept, row for row.
    for t, digest in before["tables"].items():
        if not t.startswith("crypto_") or t in (
            "crypto_device",
            "crypto_tracked_user",
            "crypto_version",
        ):
            assert after["tables"][t] == digest, t
    # systemd really stopped and started the unit: the bridge ran again, and runs.
    m.wait_for(lambda: h.start_calls(container) == starts + 1, what="the bridge started again")
    assert m.show(unit, "SubState") == "running"
    h.restore(bridge, done["id"])
    restored = h.state(bridge)
    assert restored["tables"] == before["tables"]
    if bridge == PG_BRIDGE:  # a SQLite store is a file in the data directory: its bytes move
        assert restored["data"] == before["data"]
    m.wait_for(lambda: h.start_calls(container) == starts + 2, what="the bridge started again")
    assert m.show(unit, "SubState") == "running"


def test_old_host_finds_postgres_by_the_containers_address(old_mdad_host: MdadHost) -> None:
    h, m = old_mdad_host, old_mdad_host.m
    out = docs_install(m)
    assert "db_host: auto" in m.run("cat", "/etc/bridgedoctor/helper.yaml").stdout
    assert "matrix-postgres container (now at" in out
    # The unit allows no IP address but the container's network, which install allowed.
    allow = m.run("cat", "/etc/systemd/system/bridgedoctor-helper.service.d/postgres-tcp.conf")
    network = str(ipaddress.ip_interface(f"{h.pg.host}/16").network)
    assert f"IPAddressAllow={network}" in allow.stdout
    assert network in m.show("bridgedoctor-helper.service", "IPAddressAllow")
    checked = h.ask("check", bridge=PG_BRIDGE)
    assert checked["ok"] and checked["result"]["status"] != "unknown", checked
