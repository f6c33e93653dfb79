"""The failure catalogue against a real systemd and journald (systemd-nspawn).

Every bridge MDAD deploys runs under its exact unit; its stand-in (the fake docker) prints the
lines the upstream bridge prints for one failure, in the format MDAD configures for it
(pretty-colored with ANSI escapes, pretty, JSON, mautrix-python's), and exits with the upstream
exit status, so Restart=always makes a real crash loop (only RestartSec is shortened). The helper
runs under its own hardened unit; each case is asked through its socket, and again with the CLI
on the same host. Crypto stores are real, in a real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import mdad
from tests.support.debvenv import debian_venv
from tests.support.fleet import DB_PASSWORD, Host, flavour, mdad_default_key
from tests.support.nspawn import Machine, MachineError, unavailable
from tests.support.pg import PgServer
from tests.support.store import StoreSpec

REPO = Path(__file__).resolve().parents[2]
HELPER_UNIT = REPO / "deploy" / "bridgedoctor-helper.service"
SOCKET = "/run/bridgedoctor/helper.sock"
DB_PREFIX = "cat_"
ESC = "\x1b"
# A secret the unknown fatal line carries; it must never come back.
LEAKY = "sup3rSecretValue42x"


def colored(level: str, color: int, message: str, fields: str = "") -> str:
    """A zerolog console line as MDAD's `pretty-colored` writer prints it."""
    line = (
        f"{ESC}[90m2026-08-22T10:00:00.123Z{ESC}[0m {ESC}[{color}m{level}{ESC}[0m "
        f"{ESC}[1m{message}{ESC}[0m"
    )
    return line + (f" {fields}" if fields else "")


def err_field(text: str) -> str:
    return f'{ESC}[36merror={ESC}[0m{ESC}[31m{ESC}[1m"{text}"{ESC}[0m{ESC}[0m'


@dataclass(frozen=True)
class Case:
    bridge: str
    lines: tuple[str, ...]
    exit: int | None  # None: the stand-in stays up
    lead: str  # the code the answer must lead with
    explained: tuple[str, ...] = ()  # codes that must be marked explained_by the lead


AS_TOKEN_COLORED = colored(
    "FTL",
    31,
    "The as_token was not accepted. Is the registration file installed in your homeserver "
    "correctly?",
)
CASES = (
    # gmessages (format: pretty): the bridge names the pickle key, the database proves which.
    Case(
        "gmessages",
        (
            "2026-08-22T10:00:00.123Z FTL Failed to start bridge "
            'error="failed to start Matrix connector: the supplied account key is invalid"',
        ),
        1,
        "pickle_key_mismatch",
        ("service_crash_loop",),
    ),
    # whatsapp (pretty-colored): exit 16, and Synapse does not list its registration.
    Case(
        "whatsapp",
        (AS_TOKEN_COLORED,),
        16,
        "registration_not_loaded",
        ("as_token_rejected", "service_crash_loop"),
    ),
    # signal (pretty-colored): exit 16, and the registration carries other tokens.
    Case(
        "signal",
        (AS_TOKEN_COLORED,),
        16,
        "registration_token_mismatch",
        ("as_token_rejected", "service_crash_loop"),
    ),
    # slack (pretty-colored): the homeserver cannot reach the bridge, exit 13.
    Case(
        "slack",
        (
            colored(
                "ERR",
                31,
                "Homeserver -> appservice connection is not working, retrying in 5 seconds...",
                err_field("M_UNKNOWN: ping failed"),
            ),
            colored(
                "FTL",
                31,
                "Homeserver -> appservice connection is not working",
                err_field("M_UNKNOWN: ping failed"),
            ),
        ),
        13,
        "appservice_unreachable",
        ("service_crash_loop",),
    ),
    # telegram (format: json here): the database is newer than the image, exit 15.
    Case(
        "telegram",
        (
            json.dumps(
                {
                    "level": "fatal",
                    "db_section": "main",
                    "error": "unsupported database schema version: currently on v23 "
                    "(compatible down to v20), latest known: v21",
                    "time": "2026-08-22T10:00:00Z",
                    "message": "Failed to initialize database",
                }
            ),
        ),
        15,
        "schema_too_new",
        ("service_crash_loop",),
    ),
    # googlechat (mautrix-python's coloured formatter), exit 16.
    Case(
        "googlechat",
        (
            f"[2026-08-22 10:00:00,123] [{ESC}[37;1m{ESC}[41mCRITICAL{ESC}[0m@{ESC}[32mmau.init"
            f"{ESC}[0m] The as_token was not accepted. Is the registration file installed in your "
            "homeserver correctly?",
        ),
        16,
        "as_token_rejected",
        ("service_crash_loop",),
    ),
    # twitter: a fatal line nobody knows, carrying a secret: shown scrubbed, never guessed.
    Case(
        "twitter",
        (colored("FTL", 31, "Something nobody has seen before", f"password={LEAKY}"),),
        1,
        "service_crash_loop",
    ),
    # meta-instagram (pretty): self-signing finds server keys but no recovery key, exit 34.
    Case(
        "meta-instagram",
        (
            "2026-08-22T10:00:00.123Z FTL Server already has cross-signing keys, but no key in "
            "database. Add `recovery_key` to `kv_store`, or set it to `overwrite` to generate new "
            "keys.",
        ),
        34,
        "self_sign_recovery_key_missing",
        ("service_crash_loop",),
    ),
    # meta-messenger (pretty): MAS without MSC4190.
    Case(
        "meta-messenger",
        (
            '2026-08-22T10:00:00.123Z FTL Failed to start bridge error="failed to start Matrix '
            "connector: failed to get supported login flows: M_UNRECOGNIZED (HTTP 404): "
            'Unrecognized request"',
        ),
        1,
        "msc4190_required",
        ("service_crash_loop",),
    ),
    # discord (legacy Go): exit 16 and nothing at warn level or above: the exit status speaks.
    Case("discord", ("discord stand-in: nothing logged at warn level",), 16, "as_token_rejected"),
    # bluesky: up, but cannot reach the homeserver (it retries in the same run).
    Case(
        "bluesky",
        (
            colored(
                "ERR",
                31,
                "Failed to connect to homeserver, retrying in 10 seconds...",
                err_field(
                    "failed to GET https://matrix.example.com/_matrix/client/versions"
                    f"?access_token={LEAKY}: connection refused"
                ),
            ),
        ),
        None,
        "homeserver_unreachable",
    ),
    # linkedin: up, double puppeting configured with a plain shared secret.
    Case(
        "linkedin",
        (
            "2026-08-22T10:00:00.123Z ERR Failed to create new user intent "
            'error="failed to GET /_matrix/client/v3/account/whoami: M_UNKNOWN_TOKEN (HTTP 401)" '
            'action="setup double puppet"',
        ),
        None,
        "double_puppet_shared_secret",
    ),
    # gvoice: healthy; a warning line is not a finding.
    Case(
        "gvoice",
        ("2026-08-22T10:00:00.123Z WRN Using SQLite without _txlock=immediate",),
        None,
        "",
    ),
)
CRASHING = [c for c in CASES if c.exit is not None]


@dataclass
class Bed:
    machine: Machine
    host: Host
    pg: PgServer
    token: str
    venv: Path

    def ask(self, op: str, bridge: str) -> dict:
        """One request through the helper's socket, from inside the container."""
        code = (
            "import asyncio, json, sys\n"
            "from bridgedoctor import protocol\n"
            "req = protocol.Request(token=sys.argv[1], op=sys.argv[2], bridge=sys.argv[3])\n"
            "try:\n"
            f"    out = {{'ok': True, 'result': asyncio.run(protocol.call({SOCKET!r}, req, 60))}}\n"
            "except protocol.ProtocolError as e:\n"
            "    out = {'ok': False, 'error': {'code': e.code, 'message': e.message}}\n"
            "print(json.dumps(out))\n"
        )
        r = self.machine.run(str(self.venv / "bin" / "python"), "-c", code, self.token, op, bridge)
        return json.loads(r.stdout)

    def cli(self, *args: str) -> tuple[int, dict]:
        """The CLI on the same host, as an admin runs it."""
        r = self.machine.run(
            str(self.venv / "bin" / "bridgedoctor"),
            *args,
            "--json",
            *(("--db-host", f"{self.pg.host}:{self.pg.port}") if args[0] == "check" else ()),
            check=False,
        )
        assert r.stdout, r.stderr
        return r.returncode, json.loads(r.stdout)


def _deploy(host: Host) -> None:
    for case in CASES:
        key = mdad_default_key(case.bridge)
        store = StoreSpec(case.bridge, flavour=flavour(case.bridge), account_key=key)
        if case.bridge == "gmessages":  # upgraded from the pre-bridgev2 bridge
            store = StoreSpec(
                "gmessages", account_key="go.mau.fi/mautrix-gmessages", migrated=True
            )
        host.add(case.bridge, store, unit=False, db_prefix=DB_PREFIX)
    config = host.root / "mautrix-signal" / "config"
    (config / "registration.yaml").write_text(
        mdad.render_registration("signal", as_token="an-older-as-token-0000000000000")
    )
    linkedin = host.root / "mautrix-linkedin" / "config" / "config.yaml"
    linkedin.write_text(
        linkedin.read_text().replace(
            "as_token:" + mdad.FAKE_DOUBLE_PUPPET_AS_TOKEN, "plain-shared-secret-0000000000"
        )
    )
    # Synapse as MDAD renders its list (to_json): every bridge but whatsapp.
    listed = [
        f"/matrix-mautrix-{c.bridge}-registration.yaml" for c in CASES if c.bridge != "whatsapp"
    ]
    synapse = host.root / "synapse" / "config"
    synapse.mkdir(parents=True)
    (synapse / "homeserver.yaml").write_text(
        "server_name: example.com\nregistration_shared_secret: hs-secret-0000000000\n"
        f"app_service_config_files: {json.dumps(listed)}\n"
    )


@pytest.fixture(scope="module")
def bed(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("BRIDGEDOCTOR_REQUIRE_NSPAWN"):
            pytest.fail(reason + " (BRIDGEDOCTOR_REQUIRE_NSPAWN is set)", pytrace=False)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("catalogue")
    host = Host.at(tmp, pg)
    _deploy(host)
    venv = debian_venv()
    token = secrets.token_hex(32)
    m = Machine(
        tmp / "machine",
        tag="cat-catalogue",
        binds={"/matrix": host.root},
        ro_binds={str(venv): venv, "/opt/bridgedoctor": venv},
    )
    for case in CASES:
        m.bridge_unit(case.bridge, dropins={"fast.conf": "[Service]\nRestartSec=2\n"})
        m.standin(f"matrix-mautrix-{case.bridge}", case.lines, exit_code=case.exit)
    m.seed("/etc/bridgedoctor/token", token + "\n", mode=0o600)
    m.seed(
        "/etc/bridgedoctor/helper.yaml",
        f"root: /matrix\ndb_host: '{pg.host}:{pg.port}'\ntoken_file: /etc/bridgedoctor/token\n"
        "socket_group: null\n",
    )
    m.seed("/etc/systemd/system/bridgedoctor-helper.service", HELPER_UNIT.read_text())
    try:
        m.boot()
        for case in CASES:
            m.systemctl("start", f"matrix-mautrix-{case.bridge}.service", check=False)
        m.systemctl("start", "bridgedoctor-helper.service")
        m.wait_for(lambda: m.run("test", "-S", SOCKET, check=False).returncode == 0, what="socket")
        for case in CRASHING:
            unit = f"matrix-mautrix-{case.bridge}.service"
            m.wait_for(
                lambda u=unit: int(m.show(u, "NRestarts") or 0) >= 2, what=f"{unit} restarts"
            )
        yield Bed(m, host, pg, token, venv)
    finally:
        try:
            m.shutdown()
        except MachineError:
            m.power_cut()


def _codes(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"]]


def _check_case(report: dict, case: Case) -> None:
    dump = json.dumps(report)
    assert LEAKY not in dump and DB_PASSWORD not in dump and mdad.FAKE_AS_TOKEN not in dump
    if not case.lead:
        assert report["status"] == "ok", report
        assert not {"service_crash_loop", "service_failed"} & set(_codes(report)), report
        return
    # On failure, show every finding and the unit and journal facts: a loaded host is slow.
    seen = json.dumps({"findings": report["findings"], "facts": report["facts"]}, indent=1)
    lead = report["findings"][0]
    assert lead["code"] == case.lead, seen
    explained = {f["code"]: f.get("explained_by") for f in report["findings"]}
    for code in case.explained:
        assert explained.get(code) == case.lead, seen
    if case.exit is not None:
        # The crash loop is folded into the verdict of its cause (or is the verdict).
        assert "keeps restarting" in lead["summary"], lead


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.bridge)
def test_helper_under_its_unit_answers_each_case(bed: Bed, case: Case) -> None:
    body = bed.ask("check", case.bridge)
    assert body["ok"] is True
    _check_case(body["result"], case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.bridge)
def test_cli_on_the_host_answers_each_case(bed: Bed, case: Case) -> None:
    code, report = bed.cli("check", case.bridge)
    _check_case(report, case)
    assert code == (0 if not case.lead else 1)


def test_unknown_fatal_line_is_shown_scrubbed(bed: Bed) -> None:
    report = bed.ask("check", "twitter")["result"]
    lead = report["findings"][0]
    assert "matches nothing bridgedoctor knows" in lead["summary"]
    assert "FTL Something nobody has seen before password=<redacted>" in lead["summary"]
    assert "exit status 1" in lead["summary"]


def test_logs_through_the_socket_and_the_cli(bed: Bed) -> None:
    body = bed.ask("logs", "slack")
    assert body["ok"] is True
    answer = body["result"]
    assert answer["status"] == "errors" and answer["unit"] == "matrix-mautrix-slack.service"
    assert any(
        "FTL Homeserver -> appservice connection is not working" in x for x in answer["lines"]
    )
    assert not any(ESC in x for x in answer["lines"])  # pretty-colored lines come out as text
    code, cli = bed.cli("logs", "bluesky")
    assert code == 1 and cli["run"] == "current run"
    assert any("access_token=<redacted>" in x for x in cli["lines"])
    assert LEAKY not in json.dumps(cli)
    code, healthy = bed.cli("logs", "gvoice")
    assert code == 0 and healthy["lines"] == [] and healthy["state"].startswith("active (running)")


def test_a_bridge_that_crashed_earlier_and_runs_fine_now_is_healthy(bed: Bed) -> None:
    m = bed.machine
    unit = "matrix-mautrix-googlechat.service"
    m.standin("matrix-mautrix-googlechat", ["[2026-08-22 10:00:00,123] [WARNING@mau.init] fine"])
    # stop, then start: a start of its own (a restart can merge into a pending auto-restart).
    m.systemctl("stop", unit)
    m.systemctl("start", unit)
    m.wait_for(lambda: m.show(unit, "SubState") == "running", what="googlechat running")
    time.sleep(1)
    assert m.show(unit, "NRestarts") == "0"
    # The old runs' CRITICAL lines are still in the journal; only this run counts.
    assert "as_token was not accepted" in m.journal(unit)
    report = bed.ask("check", "googlechat")["result"]
    assert report["status"] == "ok", report
    assert not {"as_token_rejected", "service_crash_loop"} & set(_codes(report))
