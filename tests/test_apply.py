"""`bridgedoctor apply` and its undo against MDAD-shaped hosts (real PostgreSQL and SQLite stores,
configs rendered as MDAD does), fake systemctl; crashes at every step, then recovery."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridgedoctor.apply.edit import replace_pickle_key
from bridgedoctor.apply.errors import ApplyError
from tests.fixtures import mdad
from tests.support.cli import run, run_json
from tests.support.fleet import Host
from tests.support.pg import PgServer
from tests.support.reset_env import Systemd
from tests.support.store import StoreSpec

OLD = "go.mau.fi/mautrix-gmessages"  # what the store opens with
MDAD = "mautrix.bridge.e2ee"  # what MDAD renders today
UNIT = "matrix-mautrix-gmessages.service"
_counter = itertools.count()


def broken_gmessages(tmp: Path, pg: PgServer | None, engine: str = "postgres") -> Host:
    host = Host.at(tmp, pg if engine == "postgres" else None)
    prefix = f"ap{next(_counter)}_" if engine == "postgres" else ""
    host.add("gmessages", StoreSpec("gmessages", account_key=OLD), engine=engine, db_prefix=prefix)
    base = host.root / "mautrix-gmessages"
    for path in [base, *base.rglob("*")]:  # the matrix user's, as MDAD leaves them
        os.chown(path, 991, 991)
    config_path(host).chmod(0o640)
    return host


def config_path(host: Host) -> Path:
    return host.root / "mautrix-gmessages" / "config" / "config.yaml"


def args(host: Host, tmp: Path, *extra: str) -> list[str]:
    # No --follow: following a unit needs a real systemd (tests/systemd/test_apply.py).
    return [*host.args(), "--backup-dir", str(tmp / "backups"), *extra]


def apply_args(host: Host, tmp: Path) -> list[str]:
    return args(host, tmp, "--yes", "--follow", "0")


def changed_lines(before: bytes, after: bytes) -> list[tuple[bytes, bytes]]:
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def test_apply_changes_one_value_then_undo_restores_every_byte(
    tmp_path: Path, pg: PgServer, systemd: Systemd, capsys, engine: str
) -> None:
    host = broken_gmessages(tmp_path, pg, engine)
    config = config_path(host)
    before, st = config.read_bytes(), config.stat()
    code, report = run_json(capsys, "check", "gmessages", *host.args())
    assert report["status"] == "broken"

    code, text = run(capsys, "apply", "gmessages", *apply_args(host, tmp_path))
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0] == f'{config} now holds the proven key "{OLD}"; {UNIT} restarted.'
    assert lines[1:3] == [
        "Make it last: the next playbook run renders config.yaml again. Pin the key:",
        f'    matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "{OLD}"',
    ]
    after = config.read_bytes()
    assert changed_lines(before, after) == [
        (f"  pickle_key: {MDAD}\n".encode(), f"  pickle_key: {OLD}\n".encode())
    ]
    now = config.stat()
    assert (now.st_uid, now.st_gid, now.st_mode) == (st.st_uid, st.st_gid, st.st_mode)
    assert now.st_ino != st.st_ino  # replaced by a rename, never written in place
    assert [c for c in systemd.calls() if "gmessages" in c][-2:] == [
        "reset-failed matrix-mautrix-gmessages.service",
        "restart matrix-mautrix-gmessages.service",
    ]
    ident = next(w for w in text.split() if w.endswith("-apply"))
    backup = tmp_path / "backups" / "gmessages" / ident
    assert (backup / "config.yaml").read_bytes() == before
    assert oct((backup / "config.yaml").stat().st_mode & 0o777) == "0o600"
    record = json.loads((backup / "apply.json").read_text())
    assert record["state"] == "done" and record["key_to"] == f'"{OLD}"'  # a public key: shown

    code, report = run_json(capsys, "check", "gmessages", *host.args())
    assert report["status"] == "warning"  # it works; the pin is still to be made
    assert sorted(f["code"] for f in report["findings"]) == [
        "pickle_key_ok",
        "pickle_key_unpinned",
    ]

    code, listing = run(capsys, "backups", "gmessages", *args(host, tmp_path))
    assert f"{ident}  apply   done" in listing
    code, text = run(capsys, "restore", "gmessages", ident, *args(host, tmp_path, "--yes"))
    assert code == 0, text
    assert config.read_bytes() == before  # byte for byte
    assert (config.stat().st_uid, config.stat().st_mode) == (st.st_uid, st.st_mode)
    assert json.loads((backup / "apply.json").read_text())["state"] == "undone"
    code, text = run(capsys, "restore", "gmessages", ident, *args(host, tmp_path, "--yes"))
    assert code == 1 and "was undone already" in text


def test_nothing_to_apply_is_said_plainly(
    tmp_path: Path, pg: PgServer, systemd: Systemd, capsys
) -> None:
    host = Host.at(tmp_path, pg)
    p = f"ap{next(_counter)}_"
    host.add("gmessages", StoreSpec("gmessages", account_key=MDAD), db_prefix=p)
    host.add(
        "discord", StoreSpec("discord", account_key="maunium.net/go/mautrix-whatsapp"), db_prefix=p
    )
    host.add("slack", StoreSpec("slack", account_key="a-lost-random-key"), db_prefix=p)
    host.add("twitter", StoreSpec("twitter", account_key=None), db_prefix=p)
    cases = {
        "gmessages": "config.yaml already has the key that opens the gmessages store",
        "discord": "The pickle key of discord is compiled into the bridge",
        "slack": "No known key opens the slack crypto account",
        "twitter": "The twitter crypto store has no account yet",
    }
    for bridge, sentence in cases.items():
        before = (host.root / f"mautrix-{bridge}" / "config" / "config.yaml").read_bytes()
        code, text = run(capsys, "apply", bridge, *apply_args(host, tmp_path))
        assert code == 1 and text.startswith(f"bridgedoctor: {sentence}"), text
        assert len(text.strip().splitlines()) == 1
        assert (host.root / f"mautrix-{bridge}" / "config" / "config.yaml").read_bytes() == before
    assert not [c for c in systemd.calls() if c.startswith("restart")]


def test_a_symlinked_config_is_refused_and_its_target_untouched(
    tmp_path: Path, pg: PgServer, systemd: Systemd, capsys
) -> None:
    host = broken_gmessages(tmp_path, pg)
    config = config_path(host)
    elsewhere = tmp_path / "root-owned.yaml"
    elsewhere.write_bytes(config.read_bytes())
    config.unlink()
    config.symlink_to(elsewhere)  # what a compromised bridge container could leave
    code, text = run(capsys, "apply", "gmessages", *apply_args(host, tmp_path))
    assert code == 2 and "symbolic link" in text, text
    assert elsewhere.read_bytes() == config.read_bytes()
    assert config.is_symlink()


def test_a_config_changed_after_the_plan_is_left_alone(
    tmp_path: Path, pg: PgServer, systemd: Systemd, capsys
) -> None:
    host = broken_gmessages(tmp_path, pg)
    config = config_path(host)

    def edit_meanwhile(plan_text: str) -> None:
        config.write_bytes(config.read_bytes() + b"# a playbook run\n")

    import bridgedoctor.apply.cli as apply_cli

    real_ask = apply_cli.ask

    def ask(text: str, yes: bool) -> bool:
        edit_meanwhile(text)
        return real_ask(text, yes)

    apply_cli.ask = ask  # type: ignore[assignment]
    try:
        code, text = run(capsys, "apply", "gmessages", *apply_args(host, tmp_path))
    finally:
        apply_cli.ask = real_ask  # type: ignore[assignment]
    assert code == 1 and "changed since the plan; nothing was changed" in text
    assert config.read_bytes().endswith(b"# a playbook run\n")
    assert f"pickle_key: {MDAD}".encode() in config.read_bytes()


# --- crashes ----------------------------------------------------------------------------------


def run_cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridgedoctor.cli.main", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "step,config_after,state",
    [("apply_backup", "before", "rolled_back"), ("apply_write", "after", "done")],
)
def test_a_crash_is_finished_or_rolled_back_by_the_next_run(
    tmp_path: Path, pg: PgServer, systemd: Systemd, step: str, config_after: str, state: str
) -> None:
    host = broken_gmessages(tmp_path, pg)
    config = config_path(host)
    before = config.read_bytes()
    env = {**systemd.env(), "BRIDGEDOCTOR_CRASH_AT": step}
    r = run_cli("apply", "gmessages", *apply_args(host, tmp_path), env=env)
    assert r.returncode == 137, r.stderr
    after = config.read_bytes()
    assert (after == before) == (config_after == "before")
    restarts = len([c for c in systemd.calls() if c.startswith("restart")])
    assert restarts == 0  # the crash came before the restart
    # The next apply (or the helper at its start) recovers first, under the bridge's lock.
    r = run_cli("apply", "gmessages", *apply_args(host, tmp_path), env=systemd.env())
    records = sorted(
        (json.loads(p.read_text()) for p in (tmp_path / "backups/gmessages").glob("*/apply.json")),
        key=lambda x: x["created_at"],
    )
    assert records[0]["state"] == state
    if config_after == "after":
        assert "restart matrix-mautrix-gmessages.service" in systemd.calls()
        assert "already has the key that opens" in r.stderr  # nothing left to apply
    else:
        assert r.returncode == 0  # rolled back, then applied anew
        assert [x["state"] for x in records] == ["rolled_back", "done"]


def test_a_crash_during_undo_is_finished(
    tmp_path: Path, pg: PgServer, systemd: Systemd, capsys
) -> None:
    host = broken_gmessages(tmp_path, pg)
    config = config_path(host)
    before = config.read_bytes()
    code, text = run(capsys, "apply", "gmessages", *apply_args(host, tmp_path))
    ident = next(w for w in text.split() if w.endswith("-apply"))
    env = {**systemd.env(), "BRIDGEDOCTOR_CRASH_AT": "apply_put_back"}
    r = run_cli("restore", "gmessages", ident, *args(host, tmp_path, "--yes"), env=env)
    assert r.returncode == 137 and config.read_bytes() == before
    import asyncio

    from bridgedoctor.apply import run as apply_run

    (done,) = asyncio.run(apply_run.recover(tmp_path / "backups"))
    assert done.state == "undone" and done.id == ident
    assert systemd.calls()[-1] == "restart matrix-mautrix-gmessages.service"


def test_recovery_leaves_links_and_directories_with_nothing_unfinished_alone(
    tmp_path: Path, pg: PgServer, systemd: Systemd
) -> None:
    """The backup root on a disk of its own holds lost+found; a link there may lead anywhere.
    Recovery takes no lock and writes nothing where no apply of ours is unfinished, and does
    not follow a link to one that is."""
    import asyncio

    from bridgedoctor.apply import run as apply_run

    host = broken_gmessages(tmp_path, pg)
    env = {**systemd.env(), "BRIDGEDOCTOR_CRASH_AT": "apply_write"}
    r = run_cli("apply", "gmessages", *apply_args(host, tmp_path), env=env)
    assert r.returncode == 137, r.stderr
    root = tmp_path / "backups"
    elsewhere = tmp_path / "elsewhere"
    (root / "gmessages").rename(elsewhere)
    (root / "linked").symlink_to(elsewhere)
    (root / "lost+found").mkdir(mode=0o700)
    (crashed,) = elsewhere.glob("*/apply.json")
    finished = root / "slack" / crashed.parent.name
    finished.mkdir(parents=True)
    (finished / "apply.json").write_text(
        json.dumps({**json.loads(crashed.read_text()), "state": "done"})
    )
    (root / "a-file").write_text("")
    listed = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    calls = len(systemd.calls())

    assert asyncio.run(apply_run.recover(root)) == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listed
    assert json.loads(crashed.read_text())["state"] not in ("done", "rolled_back", "failed")
    assert systemd.calls()[calls:] == []


# --- the edit itself --------------------------------------------------------------------------

MDAD_CONFIG = mdad.render_config("gmessages", db_uri=mdad.mdad_db_uri("gmessages"))


@pytest.mark.parametrize(
    "text,new,expected",
    [
        (MDAD_CONFIG, OLD, MDAD_CONFIG.replace(f"pickle_key: {MDAD}", f"pickle_key: {OLD}")),
        (
            "# kept\nencryption:\n    allow: true   # kept too\n    pickle_key: 'x'  # and this\n",
            "it's",
            "# kept\nencryption:\n    allow: true   # kept too\n    pickle_key: 'it''s'  # and this\n",
        ),
        (
            'encryption: {allow: true, pickle_key: "x"}\r\nz: é\r\n',
            "y: #z",
            'encryption: {allow: true, pickle_key: "y: #z"}\r\nz: é\r\n',
        ),
        (
            "é: ü\nencryption:\n  pickle_key: generate\n",
            "yes",
            'é: ü\nencryption:\n  pickle_key: "yes"\n',
        ),
    ],
    ids=["mdad", "comments-single-quotes", "flow-crlf", "unicode-before"],
)
def test_edit_replaces_the_value_and_nothing_else(text: str, new: str, expected: str) -> None:
    assert replace_pickle_key(text, new).text == expected


@pytest.mark.parametrize(
    "text,why",
    [
        ("encryption:\n  allow: true\n", "config.yaml has no encryption.pickle_key"),
        ("encryption:\n  pickle_key: a\n  pickle_key: b\n", "sets encryption.pickle_key 2 times"),
        ("encryption:\n  pickle_key: |\n    abc\n", "a block scalar"),
        ("k: &a x\nencryption:\n  pickle_key: *a\n", "an alias"),
        ("encryption:\n  pickle_key: &a x\nother: *a\n", "an anchor"),
        ("encryption:\n  pickle_key: !!str x\n", "a tag"),
        ("encryption: [\n", "not valid YAML"),
    ],
)
def test_edit_refuses_what_it_cannot_change_alone(text: str, why: str) -> None:
    with pytest.raises(ApplyError) as err:
        replace_pickle_key(text, OLD)
    assert why in str(err.value) and "nothing was changed" in str(err.value)
