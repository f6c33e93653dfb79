"""Bad input: one plain sentence, the right exit code, no traceback, nothing changed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridgedoctor.probes.config import read_config
from tests.fixtures import mdad
from tests.support.cli import run, run_json
from tests.support.fleet import DB_PASSWORD, Host
from tests.support.pg import PgServer
from tests.support.store import StoreSpec


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def sqlite_host(tmp_path: Path) -> Host:
    host = Host.at(tmp_path)
    host.add("whatsapp", StoreSpec("whatsapp"), engine="sqlite")
    return host


def config_of(host: Host, bridge: str) -> Path:
    return host.root / f"mautrix-{bridge}" / "config" / "config.yaml"


def test_malformed_yaml(sqlite_host: Host, capsys) -> None:
    config_of(sqlite_host, "whatsapp").write_text("database:\n  uri: [unclosed\n  type: x\n")
    before = tree_digest(sqlite_host.root)
    code, report = run_json(capsys, "check", "whatsapp", *sqlite_host.args())
    assert (code, report["status"]) == (2, "unknown")
    f = report["findings"][-1]
    assert f["code"] == "config_unreadable" and "is not valid YAML at line" in f["summary"]
    assert "just install-service mautrix-whatsapp" in f["fix"]["steps"][0]
    assert tree_digest(sqlite_host.root) == before


@pytest.mark.parametrize(
    "text,needle",
    [
        ("- just\n- a list\n", "does not hold a YAML mapping"),
        ("homeserver: {}\n", "no database URI"),
    ],
)
def test_config_without_the_expected_shape(
    sqlite_host: Host, capsys, text: str, needle: str
) -> None:
    config_of(sqlite_host, "whatsapp").write_text(text)
    code, out = run(capsys, "check", "whatsapp", *sqlite_host.args())
    assert code == 2 and needle in out


def test_config_missing_but_unit_present(sqlite_host: Host, capsys) -> None:
    config_of(sqlite_host, "whatsapp").unlink()
    code, report = run_json(capsys, "check", "whatsapp", *sqlite_host.args())
    assert code == 2 and report["findings"][-1]["code"] == "config_missing"


def test_sqlite_file_missing(sqlite_host: Host, capsys) -> None:
    (sqlite_host.root / "mautrix-whatsapp/data/mautrix-whatsapp.db").unlink()
    code, out = run(capsys, "check", "whatsapp", *sqlite_host.args())
    assert code == 2 and "does not exist" in out


def test_sqlite_file_is_not_a_database(sqlite_host: Host, capsys) -> None:
    db = sqlite_host.root / "mautrix-whatsapp/data/mautrix-whatsapp.db"
    db.write_bytes(b"not a database at all" * 100)
    before = db.read_bytes()
    code, report = run_json(capsys, "check", "whatsapp", *sqlite_host.args())
    assert code == 2 and report["findings"][-1]["code"] == "db_unreachable"
    assert db.read_bytes() == before


def test_sqlite_path_outside_the_bridge_is_refused(tmp_path: Path, capsys) -> None:
    host = Host.at(tmp_path)
    outside = tmp_path / "elsewhere.db"
    outside.write_bytes(b"")
    text = mdad.render_config("whatsapp", db_uri="/data/../../../elsewhere.db")
    host.add("whatsapp", None, engine="sqlite", config_text=text)
    code, report = run_json(capsys, "check", "whatsapp", *host.args())
    assert code == 2
    assert report["findings"][-1]["code"] == "db_unsupported"
    assert "leaves the bridge directory" in report["findings"][-1]["summary"]


def test_matrix_postgres_unresolvable_explains_db_host(tmp_path: Path, capsys) -> None:
    host = Host.at(tmp_path)
    host.add("gmessages", None)  # URI points at matrix-postgres, which only Docker resolves
    code, out = run(
        capsys, "check", "gmessages", "--root", str(host.root), "--systemd-dir", str(host.systemd)
    )
    assert code == 2
    assert "matrix-postgres only resolves inside Docker" in out and "--db-host" in out
    assert "neither its socket directory" in out


def test_wrong_database_password(host_pg: Host, capsys, pg: PgServer) -> None:
    cfg = config_of(host_pg, "slack")
    cfg.write_text(cfg.read_text().replace(DB_PASSWORD, "not-the-password"))
    code, out = run(capsys, "check", "slack", *host_pg.args())
    assert code == 2 and "refused the password" in out
    assert "not-the-password" not in out


def test_database_that_does_not_exist(host_pg: Host, capsys) -> None:
    cfg = config_of(host_pg, "slack")
    cfg.write_text(cfg.read_text().replace(":5432/bi_matrix_mautrix_slack", ":5432/no_such_db"))
    code, out = run(capsys, "check", "slack", *host_pg.args())
    assert code == 2 and "has no database named no_such_db" in out


def test_nothing_listens_on_db_host(host_pg: Host, capsys) -> None:
    args = [a if not a.startswith("127.0.0.1:") else "127.0.0.1:1" for a in host_pg.args()]
    code, out = run(capsys, "check", "slack", *args)
    assert code == 2 and "cannot reach PostgreSQL at 127.0.0.1:1" in out


def test_empty_database_is_not_an_alarm(tmp_path: Path, pg: PgServer, capsys) -> None:
    host = Host.at(tmp_path, pg)
    host.add("twitter", StoreSpec("twitter", empty=True), db_prefix="be_")
    code, report = run_json(capsys, "check", "twitter", *host.args())
    assert (code, report["status"]) == (0, "ok")
    assert [f["code"] for f in report["findings"]] == ["db_empty"]


@pytest.fixture
def host_pg(tmp_path: Path, pg: PgServer) -> Host:
    host = Host.at(tmp_path, pg)
    host.add(
        "slack", StoreSpec("slack", account_key="maunium.net/go/mautrix-whatsapp"), db_prefix="bi_"
    )
    return host


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["check", "../../etc"], "is not a bridge name"),
        (["check", "facebook"], "Unknown bridge 'facebook'"),
        (["check", "wsproxy"], "is not a bridge"),
        (["check", "all"], "No mautrix bridges found"),
        (["check"], "the following arguments are required"),
        (["check", "slack", "--naming", "sideways"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors(tmp_path: Path, capsys, argv: list[str], needle: str) -> None:
    extra = ["--root", str(tmp_path)] if argv[:1] == ["check"] and len(argv) > 1 else []
    code, out = run(capsys, *argv, *extra)
    assert code == 2 and needle in out


def test_root_that_is_not_a_directory(tmp_path: Path, capsys) -> None:
    code, out = run(capsys, "check", "all", "--root", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=400))
def test_property_any_config_text_yields_facts_or_one_sentence(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    result = read_config(path)
    message = getattr(result, "message", None)
    if message is not None:
        assert message.endswith(".") and "\n" not in message and "Traceback" not in message


def test_console_script_is_installed_and_quiet_on_errors(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("bridgedoctor")
    assert exe.exists(), "pip install . must install the bridgedoctor console script"
    proc = subprocess.run(
        [str(exe), "check", "gmessages", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not deployed" in proc.stdout
    helped = subprocess.run([str(exe), "check", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--db-host" in helped.stdout and "--try-key" in helped.stdout
