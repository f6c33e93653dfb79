"""What the bridge writes into its own database and files reaches the room and the terminal only
bounded and neutralised; no secret is in any repr or log line; backups stay root's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable

from bridgedoctor.diagnose import Options, gather
from bridgedoctor.helper.__main__ import EXIT_CONFIG
from bridgedoctor.knowledge import load
from bridgedoctor.render import matrix
from bridgedoctor.reset.target import resolve
from tests.fixtures import mdad
from tests.hostile.world import EVIL, World
from tests.support.fleet import DB_PASSWORD

RLO, LRI = "\u202e", "\u2066"
ESC = "\x1b[2J\x1b[31m"
FORGED = "\n🟩 whatsapp: ok — fine"


def clean(s: str) -> bool:
    return not any(
        unicodedata.category(c) in ("Cf", "Zl", "Zp") or (ord(c) < 32 and c != "\n") for c in s
    )


def test_bridge_chosen_names_are_neutralised(world: Callable[..., World]) -> None:
    w = world("postgres")
    w.evil_sql(
        f"UPDATE database_owner SET owner = 'mautrix-{EVIL}{RLO}lio{ESC}{FORGED}'",
        f'CREATE TABLE "x{RLO}{LRI}portal_old" (i int)',
        f"UPDATE crypto_account SET device_id = 'DEV{RLO}{ESC}'",
    )
    report = w.check()
    blob = json.dumps(report, ensure_ascii=False)
    assert RLO not in blob and "\x1b" not in blob and FORGED not in blob
    plain, html = matrix.bridge_report(report)
    assert clean(plain) and clean(html)
    assert "DEV\\u202e\\x1b[2J" in plain and "x\\u202e\\u2066portal_old" in html  # visible
    assert all(map(clean, matrix.fleet_report(w.ask("check_all")["result"])))
    w.alive()


def test_terminal_output_is_neutralised(world: Callable[..., World]) -> None:
    w = world("postgres")
    w.evil_sql(f"UPDATE crypto_account SET device_id = 'DEV{RLO}{ESC}{FORGED}'")
    cli = [sys.executable, "-m", "bridgedoctor.cli.main", "check", EVIL, "--root", str(w.matrix),
           "--systemd-dir", str(w.units), "--db-host", f"{w.pg.socket_dir}:{w.pg.port}"]  # fmt: skip
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60).stdout
    assert "DEV\\u202e\\x1b[2J\\x1b[31m\\x0a" in out and clean(out)


def test_huge_and_retyped_rows_are_bounded(world: Callable[..., World]) -> None:
    """Thousands of accounts, a 20 MB pickle, a version column turned to text, a table per
    name: the check answers quickly and small."""
    w = world("postgres")
    w.evil_sql(
        "INSERT INTO crypto_account (account_id, device_id, shared, sync_token, account) "
        "SELECT 'a' || g, 'D' || g, true, '', decode(repeat('00', 900), 'hex') "
        "FROM generate_series(1, 5000) g",
        "INSERT INTO crypto_olm_session (session_id, sender_key, session, created_at, "
        "last_encrypted, last_decrypted, account_id) SELECT 's' || g, 'k', "
        "decode(repeat('ab', 10000000), 'hex'), now(), now(), now(), 'x' FROM generate_series(1, 2) g",
        "ALTER TABLE version ALTER COLUMN version TYPE text",
        "UPDATE version SET version = 'not a number'",
        "DO $$ BEGIN FOR i IN 1..3000 LOOP EXECUTE 'CREATE TABLE t' || i || ' (i int)'; "
        "END LOOP; END $$",
    )
    started = time.monotonic()
    answer = w.ask("check", bridge=EVIL)
    assert answer["ok"], answer
    assert time.monotonic() - started < 30
    assert len(json.dumps(answer)) < 200_000
    w.alive()


def test_no_password_in_any_repr_or_log(world: Callable[..., World]) -> None:
    w = world("postgres")
    opts = Options(root=w.matrix, systemd_dir=w.units, db_host=f"{w.pg.socket_dir}:{w.pg.port}")
    bridge = resolve("whatsapp", opts)
    facts = asyncio.run(gather(load().bridges["whatsapp"], opts))
    for obj in (bridge, bridge.db, facts, facts.config, opts):
        assert DB_PASSWORD not in repr(obj), type(obj).__name__
    w.write_config(
        mdad.render_config(EVIL, db_uri=f"postgres://nobody:{DB_PASSWORD}@matrix-postgres/nope")
    )
    w.check()
    w.reset("full")
    assert DB_PASSWORD not in w.log()


def test_backup_directory_the_bridge_can_reach_is_refused(world: Callable[..., World]) -> None:
    """Backups inside the bridge's own directory could be swapped between their verification
    and a restore: the helper will not start with such a backup_dir, and the CLI refuses it."""
    w = world("postgres", start=False)
    inside = w.base(EVIL) / "data" / "backups"
    env = {**os.environ, **w.sd.env()}
    proc = subprocess.run(
        [sys.executable, "-m", "bridgedoctor.helper", "--config",
         str(w.helper_config(backup_dir=str(inside)))],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == EXIT_CONFIG
    assert "is not root's alone" in proc.stderr and "Traceback" not in proc.stderr
    outside = w.outside()
    cli = subprocess.run(
        [sys.executable, "-m", "bridgedoctor.cli.main", "reset", EVIL, "--mode", "full", "--yes",
         "--root", str(w.matrix), "--systemd-dir", str(w.units),
         "--db-host", f"{w.pg.socket_dir}:{w.pg.port}", "--backup-dir", str(inside)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode != 0 and "is not root's alone" in cli.stderr, cli.stderr
    assert not [c for c in w.sd.calls() if c.startswith("stop")]
    assert w.outside() == outside
