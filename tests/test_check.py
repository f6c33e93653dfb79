"""`bridgedoctor check` against MDAD-shaped hosts with real PostgreSQL and SQLite crypto stores."""

from __future__ import annotations

import itertools
import secrets
from pathlib import Path

import pytest

from tests.fixtures import mdad
from tests.support.cli import run, run_json
from tests.support.fleet import Host, flavour, mdad_default_key
from tests.support.pg import PgServer
from tests.support.store import StoreSpec

_counter = itertools.count()


@pytest.fixture
def host(tmp_path: Path, pg: PgServer) -> Host:
    return Host.at(tmp_path, pg)


@pytest.fixture
def prefix() -> str:
    """Unique database-name prefix: all tests share one PostgreSQL cluster."""
    return f"t{next(_counter)}_"


def codes(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"]]


def finding(report: dict, code: str) -> dict:
    return next(f for f in report["findings"] if f["code"] == code)


# Healthy bridges: no false alarm, on every bridge MDAD knows, in PostgreSQL.
@pytest.mark.parametrize("bridge", mdad.BRIDGES)
def test_healthy_bridge_is_ok(host: Host, prefix: str, capsys, bridge: str) -> None:
    key = mdad_default_key(bridge)
    built = host.add(
        bridge, StoreSpec(bridge, flavour=flavour(bridge), account_key=key), db_prefix=prefix
    )
    code, report = run_json(capsys, "check", bridge, *host.args())
    assert report["status"] == "ok", report
    assert code == 0
    ok = finding(report, "pickle_key_ok")
    assert "MAC verified" in ok["summary"]
    assert built is not None and built.ed25519 in report["facts"]["identity"]


SQLITE_BRIDGES = [b for b in mdad.BRIDGES if mdad.sqlite_filename(b)]


@pytest.mark.parametrize("bridge", SQLITE_BRIDGES)
def test_healthy_sqlite_bridge_is_ok(tmp_path: Path, capsys, bridge: str) -> None:
    host = Host.at(tmp_path)
    key = mdad_default_key(bridge)
    host.add(bridge, StoreSpec(bridge, flavour=flavour(bridge), account_key=key), engine="sqlite")
    code, report = run_json(capsys, "check", bridge, *host.args())
    assert (code, report["status"]) == (0, "ok"), report
    assert report["facts"]["database"].startswith("sqlite ")
    assert str(host.root / f"mautrix-{bridge}" / "data") in report["facts"]["database"]


def test_gmessages_upgraded_from_legacy_gets_exact_snippet(
    host: Host, prefix: str, capsys
) -> None:
    host.add(
        "gmessages",
        StoreSpec("gmessages", account_key="go.mau.fi/mautrix-gmessages", migrated=True),
        db_prefix=prefix,
    )
    code, report = run_json(capsys, "check", "gmessages", *host.args())
    assert code == 1 and report["status"] == "broken"
    f = finding(report, "pickle_key_mismatch")
    assert f["severity"] == "error"
    assert "the supplied account key is invalid" in f["summary"]
    assert f["fix"]["vars_yml"] == (
        'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"'
    )
    assert any("just install-service mautrix-gmessages" in s for s in f["fix"]["steps"])
    assert "migrated" in report["facts"]["history"]


@pytest.mark.parametrize(
    "tag,expected",
    [
        ("v0.2604.0", ["legacy", "legacy-extension"]),
        ("v0.2605.0", ["current", "legacy", "legacy-extension"]),
        ("v0.2608.0", ["current"]),
    ],
)
def test_gmessages_snippet_follows_the_pinned_image(
    host: Host, prefix: str, capsys, tag: str, expected: list[str]
) -> None:
    host.add(
        "gmessages",
        StoreSpec("gmessages", account_key="go.mau.fi/mautrix-gmessages"),
        image_tag=tag,
        db_prefix=prefix,
    )
    _, report = run_json(capsys, "check", "gmessages", *host.args())
    fix = finding(report, "pickle_key_mismatch")["fix"]
    assert [v["naming"] for v in fix["variants"]] == expected
    by = {v["naming"]: v for v in fix["variants"]}
    if "legacy" in by:
        assert by["legacy"]["vars_yml"] == (
            'matrix_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"'
        )
        assert by["legacy"]["applies"] == "MDAD checkouts from 2024-10-11 to 2026-07-15"
        assert (
            "matrix_mautrix_gmessages_configuration_extension_yaml: |"
            in (by["legacy-extension"]["vars_yml"])
        )
    if len(expected) > 1:  # ambiguous: every form labelled in the one snippet
        assert "# MDAD checkouts from 2026-07-16 on:" in fix["vars_yml"] or "current" not in by


def test_naming_flag_overrides_auto(host: Host, prefix: str, capsys) -> None:
    host.add(
        "whatsapp", StoreSpec("whatsapp", account_key="mautrix.bridge.e2ee"), db_prefix=prefix
    )
    _, report = run_json(capsys, "check", "whatsapp", "--naming", "legacy", *host.args())
    fix = finding(report, "pickle_key_mismatch")["fix"]
    assert (
        fix["vars_yml"]
        == 'matrix_mautrix_whatsapp_bridge_encryption_pickle_key: "mautrix.bridge.e2ee"'
    )


def test_slack_created_while_mdad_rendered_generate(host: Host, prefix: str, capsys) -> None:
    lost = secrets.token_urlsafe(48)[:64]
    host.add("slack", StoreSpec("slack", account_key=lost), db_prefix=prefix)
    code, report = run_json(capsys, "check", "slack", *host.args())
    assert code == 1 and report["status"] == "broken"
    f = finding(report, "pickle_key_unknown")
    assert "the key is lost" in f["summary"]
    assert "2024-08-17" in f["summary"] and "crypto reset" in f["summary"]
    assert "nothing is changed until you ask" in f["summary"]
    assert len(f["evidence"]) >= 8  # every candidate tried is listed


def test_generate_in_config_is_its_own_finding(host: Host, prefix: str, capsys) -> None:
    host.add(
        "slack", StoreSpec("slack", account_key=None), pickle_key="generate", db_prefix=prefix
    )
    code, report = run_json(capsys, "check", "slack", *host.args())
    assert code == 1 and report["status"] == "warning"
    f = finding(report, "pickle_key_generate")
    assert "--no-update" in f["summary"]
    assert f["fix"]["vars_yml"] == (
        'matrix_bridge_mautrix_slack_bridge_encryption_pickle_key: "maunium.net/go/mautrix-whatsapp"'
    )


def test_signal_set_up_in_2023_needs_extension_yaml(host: Host, prefix: str, capsys) -> None:
    host.add(
        "signal",
        StoreSpec("signal", account_key="maunium.net/go/mautrix-signal"),
        db_prefix=prefix,
    )
    code, report = run_json(capsys, "check", "signal", *host.args())
    assert code == 1
    fix = finding(report, "pickle_key_mismatch")["fix"]
    assert fix["vars_yml"].endswith(
        "matrix_bridge_mautrix_signal_configuration_extension_yaml: |\n"
        "  encryption:\n"
        '    pickle_key: "maunium.net/go/mautrix-signal"'
    )
    assert "Merge into an existing" in fix["vars_yml"]


def test_encryption_off_without_store_is_ok(host: Host, prefix: str, capsys) -> None:
    host.add(
        "telegram",
        StoreSpec("telegram", crypto_tables=False),
        encryption_allow=False,
        db_prefix=prefix,
    )
    code, report = run_json(capsys, "check", "telegram", *host.args())
    assert (code, report["status"]) == (0, "ok")
    assert "encryption is off" in finding(report, "no_crypto_store")["summary"]


def test_encryption_off_with_wrong_key_is_a_warning(host: Host, prefix: str, capsys) -> None:
    host.add(
        "gmessages",
        StoreSpec("gmessages", account_key="go.mau.fi/mautrix-gmessages"),
        encryption_allow=False,
        db_prefix=prefix,
    )
    code, report = run_json(capsys, "check", "gmessages", *host.args())
    assert (code, report["status"]) == (1, "warning")
    assert finding(report, "pickle_key_mismatch")["severity"] == "warning"


def test_no_account_yet(host: Host, prefix: str, capsys) -> None:
    host.add("whatsapp", StoreSpec("whatsapp", account_key=None), db_prefix=prefix)
    code, report = run_json(capsys, "check", "whatsapp", *host.args())
    assert (code, report["status"]) == (0, "ok")
    assert codes(report) == ["no_crypto_account"]


def test_try_key_proves_a_secret_key_without_printing_it(host: Host, prefix: str, capsys) -> None:
    secret = "Zq8" + secrets.token_hex(30)
    host.add("slack", StoreSpec("slack", account_key=secret), db_prefix=prefix)
    code, text = run(capsys, "check", "slack", *host.args("--try-key", secret))
    assert code == 1
    assert secret not in text
    assert "sha256:" in text and "--reveal-keys" in text
    code, text = run(capsys, "check", "slack", *host.args("--try-key", secret, "--reveal-keys"))
    assert f'matrix_bridge_mautrix_slack_bridge_encryption_pickle_key: "{secret}"' in text


def test_configured_secret_key_is_fingerprinted(host: Host, prefix: str, capsys) -> None:
    secret = "Kq" + secrets.token_hex(31)
    host.add(
        "twitter", StoreSpec("twitter", account_key=secret), pickle_key=secret, db_prefix=prefix
    )
    code, text = run(capsys, "check", "twitter", *host.args())
    # Works, but MDAD's defaults render another key: the unpinned warning, still fingerprinted.
    assert code == 1 and secret not in text and "<secret key sha256:" in text
    assert "An upgrade or a playbook run without a pin will lock the bridge out" in text


def test_mixed_key_sessions_are_reported(host: Host, prefix: str, capsys) -> None:
    host.add(
        "whatsapp",
        StoreSpec(
            "whatsapp", account_key="maunium.net/go/mautrix-whatsapp", session_key="other-key"
        ),
        db_prefix=prefix,
    )
    code, report = run_json(capsys, "check", "whatsapp", *host.args())
    assert (code, report["status"]) == (1, "warning")
    assert "inbound Megolm sessions" in finding(report, "sessions_other_key")["summary"]


@pytest.mark.parametrize(
    ("bridge", "key"),
    [("whatsapp", "maunium.net/go/mautrix-whatsapp"), ("meta-instagram", "mautrix.bridge.e2ee")],
)
def test_pre_megabridge_database_owner(
    host: Host, prefix: str, capsys, bridge: str, key: str
) -> None:
    """The legacy owner row holds the program's name, which for both meta roles is mautrix-meta."""
    host.add(bridge, StoreSpec(bridge, account_key=key, owner="legacy"), db_prefix=prefix)
    _, report = run_json(capsys, "check", bridge, *host.args())
    assert "db_pre_megabridge" in codes(report)
    host.add(bridge, StoreSpec(bridge, account_key=key), db_prefix=prefix)
    _, report = run_json(capsys, "check", bridge, *host.args())
    assert "db_pre_megabridge" not in codes(report)


def test_corrupt_account_row(host: Host, prefix: str, capsys) -> None:
    host.add("bluesky", StoreSpec("bluesky", corrupt_account=True), db_prefix=prefix)
    code, report = run_json(capsys, "check", "bluesky", *host.args())
    assert (code, report["status"]) == (1, "broken")
    assert "not a libolm pickle" in finding(report, "pickle_corrupt")["summary"]


def test_unix_socket_db_host(host: Host, prefix: str, capsys, pg: PgServer) -> None:
    if not pg.socket_dir:
        pytest.skip("external PostgreSQL: no socket directory known")
    host.add("gvoice", StoreSpec("gvoice"), db_prefix=prefix)
    args = [
        "--root",
        str(host.root),
        "--systemd-dir",
        str(host.systemd),
        "--db-host",
        f"{pg.socket_dir}:{pg.port}",
    ]
    code, report = run_json(capsys, "check", "gvoice", *args)
    assert (code, report["status"]) == (0, "ok"), report


def test_check_all_is_one_line_each_with_a_pin_block(host: Host, prefix: str, capsys) -> None:
    host.add_broken_gmessages_healthy_whatsapp(prefix)
    host.add("meta-instagram", StoreSpec("meta-instagram"), db_prefix=prefix)
    host.add(
        "discord",
        StoreSpec("discord", account_key="maunium.net/go/mautrix-whatsapp"),
        db_prefix=prefix,
    )
    host.add("telegram", StoreSpec("telegram", account_key=None), db_prefix=prefix)
    code, text = run(capsys, "check", "all", *host.args())
    assert code == 1
    lines = text.splitlines()
    summary = lines[: lines.index("")]
    assert [line.split()[0] for line in summary] == [
        "discord",
        "gmessages",
        "meta-instagram",
        "telegram",
        "whatsapp",
    ]
    assert "broken" in summary[1] and "ok" in summary[0]
    assert (
        'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"'
        in text
    )
    # Only the bridges that need a pin: the broken one. MDAD's defaults render the keys of the
    # others (or the key is compiled in), so pinning them would change nothing.
    block = text.split("Pin these keys in vars.yml before the next playbook run:\n")[1]
    block = block.split("Details and fixes")[0]
    assert "# gmessages: proven key" in block
    for bridge in ("whatsapp", "meta_instagram", "discord"):
        assert f"# {bridge}" not in block and f"mautrix_{bridge}_" not in block
    assert "No key was proven for telegram (no crypto account yet" in block
    code, fleet = run_json(capsys, "check", "all", *host.args())
    assert {b["bridge"]: b["status"] for b in fleet["bridges"]} == {
        "discord": "ok",
        "gmessages": "broken",
        "meta-instagram": "ok",
        "telegram": "ok",
        "whatsapp": "ok",
    }
    assert "pin" in fleet and fleet["pin"]["vars_yml"]
    # docs/json.md: `pin` is the snippet and the steps that apply it, in order.
    assert set(fleet["pin"]) == {"vars_yml", "steps"}
    assert fleet["pin"]["steps"] and all(isinstance(s, str) and s for s in fleet["pin"]["steps"])


def test_unit_paths_are_rerooted(tmp_path: Path, capsys) -> None:
    host = Host.at(tmp_path)
    host.add("signal", StoreSpec("signal"), engine="sqlite")
    unit = (host.systemd / "matrix-mautrix-signal.service").read_text()
    assert "src=/matrix/mautrix-signal/config" in unit
    code, report = run_json(capsys, "check", "signal", *host.args())
    assert code == 0
    assert report["facts"]["config"] == str(host.root / "mautrix-signal/config/config.yaml")


def test_check_all_asks_systemd_once_for_the_fleet(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `systemctl show` for every bridge's unit and Synapse's (a process per bridge cost
    more than the rest of the check); each bridge still gets its own verdict."""
    host = Host.at(tmp_path / "host")
    bridges = ["whatsapp", "signal", "gmessages"]
    for b in bridges:
        host.add(b, StoreSpec(b, flavour=flavour(b)), engine="sqlite")
    (host.systemd / "matrix-synapse.service").write_text("[Service]\nExecStart=/bin/true\n")
    tools, log = tmp_path / "tools", tmp_path / "calls"
    tools.mkdir()
    (tools / "systemctl").write_text(
        f'#!/bin/sh\necho "$*" >> {log}\necho "Failed to connect to bus: Host is down" >&2\n'
        "exit 1\n"
    )
    (tools / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    code, fleet = run_json(capsys, "check", "all", *host.args())
    assert sorted(b["bridge"] for b in fleet["bridges"]) == sorted(bridges)
    (call,) = log.read_text().splitlines()
    units = call.split(" --")[0].split()[1:]
    assert call.startswith("show ") and sorted(units) == sorted(
        [f"matrix-mautrix-{b}.service" for b in bridges] + ["matrix-synapse.service"]
    )
