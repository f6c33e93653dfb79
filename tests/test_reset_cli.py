"""The `reset`, `backups` and `restore` commands as the terminal sees them (reset/cli.py): their
arguments and defaults, the confirmation, the refusals, progress lines, notes, and the backup
listing. Real terminals (ptys), real PostgreSQL and SQLite stores, fake systemctl."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from bridgedoctor.apply.record import ApplyRecord
from bridgedoctor.cli.main import build_parser, main
from bridgedoctor.dbpin import DbPin
from bridgedoctor.reset import cli as reset_cli
from bridgedoctor.reset import lock
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.manifest import Manifest, all_for
from bridgedoctor.reset.plan import DEFAULT_BACKUP_ROOT
from tests.support.cli import choose_from, run
from tests.support.fleet import Host
from tests.support.reset_env import RESET_BRIDGE, RESET_UNIT, Systemd
from tests.test_reset import backup_args, deploy
from tests.test_reset_recovery import immutable, interrupted

BRIDGE, UNIT = RESET_BRIDGE, RESET_UNIT


# --- the arguments ------------------------------------------------------------------------------

COMMON = {
    "root": Path("/matrix"),
    "db_host": "auto",
    "systemd_dir": Path("/etc/systemd/system"),
    "backup_dir": DEFAULT_BACKUP_ROOT,
    "db_name": [],
}


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["reset", "signal"], {"command": "reset", "name": "signal", "mode": "crypto", "yes": False}),
        (["reset", "signal", "--mode", "crypto", "--yes"],
         {"command": "reset", "name": "signal", "mode": "crypto", "yes": True}),
        (["reset", "signal", "--mode", "full"],
         {"command": "reset", "name": "signal", "mode": "full", "yes": False}),
        (["backups", "signal"], {"command": "backups", "name": "signal", "json": False}),
        (["backups", "signal", "--json"], {"command": "backups", "name": "signal", "json": True}),
        (["restore", "signal", "20261201T020000Z-crypto"],
         {"command": "restore", "name": "signal", "id": "20261201T020000Z-crypto", "yes": False}),
        (["restore", "signal", "X-apply", "--yes"],
         {"command": "restore", "name": "signal", "id": "X-apply", "yes": True}),
    ],
)  # fmt: skip
def test_each_command_parses_to_these_values(argv: list[str], parsed: dict[str, object]) -> None:
    assert vars(build_parser().parse_args(argv)) == {**COMMON, **parsed}


def test_the_common_options_parse_to_these_values() -> None:
    argv = ["backups", "signal", "--root", "/srv/matrix", "--db-host", "db:5433",
            "--systemd-dir", "/run/units", "--backup-dir", "/srv/backups",
            "--db-name", "signal=sig:sigrole", "--db-name", "whatsapp=wa"]  # fmt: skip
    args = vars(build_parser().parse_args(argv))
    pins = args.pop("db_name")
    assert args == {"command": "backups", "name": "signal", "json": False,
                    "root": Path("/srv/matrix"), "db_host": "db:5433",
                    "systemd_dir": Path("/run/units"), "backup_dir": Path("/srv/backups")}  # fmt: skip
    assert pins == [("signal", DbPin("sig", "sigrole")), ("whatsapp", DbPin("wa", "wa"))]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["reset", "signal", "--mode", "bogus"],
         f"argument --mode: invalid choice: 'bogus' (choose from {choose_from('crypto', 'full')})"),
        (["reset", "signal", "--db-name", "nonsense"],
         "argument --db-name: --db-name takes BRIDGE=DATABASE[:ROLE], not 'nonsense'"),
        (["backups", "signal", "--db-name", "a b=c"],
         "argument --db-name: --db-name: 'a b' is not a bridge name"),
        (["restore", "signal"], "the following arguments are required: id"),
        (["reset", "signal", "--yes", "now"], "unrecognized arguments: now"),
        (["backups", "signal", "--json", "yes"], "unrecognized arguments: yes"),
        (["restore", "signal", "ID", "--yes", "now"], "unrecognized arguments: now"),
    ],
)  # fmt: skip
def test_a_bad_argument_is_one_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, text = run(capsys, *argv, "--root", str(tmp_path))
    assert (code, text) == (2, f"bridgedoctor: {said}. See 'bridgedoctor --help'.\n")


OPTIONS = """\
options:
  -h, --help            show this help message and exit
  --root ROOT           MDAD base data path
  --db-host auto|HOST[:PORT]|DIR[:PORT]
                        as for check
  --systemd-dir SYSTEMD_DIR
  --backup-dir BACKUP_DIR
                        where backups go, one directory per bridge (default \
/var/lib/bridgedoctor/backups)
  --db-name BRIDGE=DATABASE[:ROLE]
                        a custom setup's database (and role) for BRIDGE, when not MDAD's \
matrix_mautrix_<bridge>; resets touch no other database (repeatable)
"""
USAGE = (
    "[-h] [--root ROOT] [--db-host auto|HOST[:PORT]|DIR[:PORT]] [--systemd-dir SYSTEMD_DIR] "
    "[--backup-dir BACKUP_DIR] [--db-name BRIDGE=DATABASE[:ROLE]]"
)
HELP = {
    "reset": f"""\
usage: bridgedoctor reset {USAGE} [--mode {{crypto,full}}]
                          [--yes]
                          name

Stop the bridge, back up and verify, reset, start. Undo with 'restore'.

positional arguments:
  name                  bridge role name

{OPTIONS}\
  --mode {{crypto,full}}
  --yes                 do not ask for confirmation
""",
    "backups": f"""\
usage: bridgedoctor backups {USAGE} [--json] name

positional arguments:
  name                  bridge role name

{OPTIONS}\
  --json                machine-readable output
""",
    "restore": f"""\
usage: bridgedoctor restore {USAGE} [--yes] name id

positional arguments:
  name                  bridge role name
  id                    backup id, as 'bridgedoctor backups NAME' lists it

{OPTIONS}\
  --yes                 do not ask for confirmation
""",
}


@pytest.mark.parametrize("command", list(HELP))
def test_each_command_explains_itself(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert run(capsys, command, "--help") == (0, HELP[command])


def test_the_commands_are_listed_with_what_they_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, text = run(capsys, "--help")
    assert code == 0
    assert "\n    reset               back up, then reset a bridge's crypto store (or everything)\n" \
        "    backups             list a bridge's reset backups\n" \
        "    restore             put a reset backup back exactly\n" in text  # fmt: skip


# --- the confirmation, on a real terminal -------------------------------------------------------


@contextlib.contextmanager
def terminal() -> Iterator[tuple[int, IO[str]]]:
    """A pty: the side a person types into, and the terminal the program reads."""
    typed, tty = os.openpty()
    reader = open(tty, encoding="utf-8")  # noqa: SIM115
    try:
        yield typed, reader
    finally:
        reader.close()
        os.close(typed)


@pytest.mark.parametrize(
    ("typed", "confirmed"),
    [(b"yes\n", True), (b"  yes \n", True), (b"y\n", False), (b"YES\n", False),
     (b"yes please\n", False), (b"\x04", False)],
    ids=["yes", "yes-spaced", "y", "YES", "yes-please", "end-of-file"],
)  # fmt: skip
def test_only_the_word_yes_typed_on_a_terminal_confirms(
    typed: bytes,
    confirmed: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with terminal() as (keys, tty):
        monkeypatch.setattr("sys.stdin", tty)
        os.write(keys, typed)
        assert reset_cli.ask("The plan:\n  1. stop\x1b[2J", False) is confirmed
    out, err = capsys.readouterr()
    assert (out, err) == ("The plan:\n  1. stop\\x1b[2J\nType 'yes' to continue: ", "")


def test_without_a_terminal_the_plan_is_shown_and_nothing_confirmed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "typed").write_text("yes\n")
    with (tmp_path / "typed").open() as f:
        monkeypatch.setattr("sys.stdin", f)
        assert reset_cli.ask("The plan\x07", False) is False
    assert capsys.readouterr() == (
        "The plan\\x07\n",
        "bridgedoctor: not a terminal; re-run with --yes to confirm.\n",
    )


def test_yes_confirms_without_a_word_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with terminal() as (keys, tty):
        monkeypatch.setattr("sys.stdin", tty)
        os.write(keys, b"no\n")
        assert reset_cli.ask("The plan", True) is True
    assert capsys.readouterr() == ("", "")


# --- refusals, notes and progress lines --------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "said"),
    [
        (ResetError("no such backup:\nx\x1b[2J", usage=True), 2, "no such backup:\\x0ax\\x1b[2J"),
        (ResetError("the unit did not stop.", touched=True), 1, "the unit did not stop."),
        (ResetError("refused"), 1, "refused"),
    ],
)
def test_a_refusal_is_one_neutral_line_and_its_exit_code(
    capsys: pytest.CaptureFixture[str], error: ResetError, code: int, said: str
) -> None:
    assert reset_cli.refused(error) == code
    assert capsys.readouterr() == ("", f"bridgedoctor: {said}\n")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", ""),
        ("kept what it wrote:\nmedia/\x1b[2Jx", "Note: Kept what it wrote:\\x0amedia/\\x1b[2Jx.\n"),
        ("é", "Note: É.\n"),
    ],
)  # fmt: skip
def test_a_note_is_one_neutral_sentence_and_nothing_is_no_note(
    capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    reset_cli._note(text)
    assert capsys.readouterr() == (said, "")


def test_progress_lines_go_to_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = argparse.Namespace(name="signal")
    assert reset_cli._terminal("reset", args) is None  # pytest's capture: not a terminal
    with terminal() as (screen, tty):
        with open(os.dup(tty.fileno()), "w", encoding="utf-8") as err:
            monkeypatch.setattr("sys.stderr", err)
            show = reset_cli._terminal("restore", args)
            assert show is not None
            show({"step": "stop", "index": 1, "steps": 5, "doing": "stopping the bridge"})
            err.flush()
        monkeypatch.undo()
        seen = os.read(screen, 4096)
    # The terminal turns each \n into \r\n.
    assert seen == "⏳ Restore of signal, step 1 of 5: stopping the bridge\r\n".encode()


# --- the commands on a host ---------------------------------------------------------------------


@pytest.fixture
def sqlite_host(tmp_path: Path) -> Host:
    return deploy(tmp_path, None, "sqlite")


def steps_shown(screen: int) -> list[str]:
    """What reached the terminal, line by line."""
    seen = b""
    while True:
        try:
            chunk = os.read(screen, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        seen += chunk
    return seen.decode("utf-8").split("\r\n")


@contextlib.contextmanager
def watched_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """stderr is a terminal a person watches; yields the screen's side (read it at the end)."""
    screen, tty = os.openpty()
    os.set_blocking(screen, False)
    err = open(tty, "w", encoding="utf-8")  # noqa: SIM115
    try:
        with monkeypatch.context() as m:
            m.setattr("sys.stderr", err)
            yield screen
            err.flush()
    finally:
        err.close()
        os.close(screen)


def test_a_reset_and_its_restore_show_their_steps_on_a_watched_terminal(
    sqlite_host: Host,
    systemd: Systemd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [*sqlite_host.args(), *backup_args(tmp_path)]
    with watched_stderr(monkeypatch) as screen:
        assert main(["reset", BRIDGE, "--yes", *argv]) == 0
        shown = steps_shown(screen)
    (m,) = all_for(tmp_path / "backups" / BRIDGE)
    assert shown == [
        f"⏳ Reset of {BRIDGE}, step 1 of 5: stopping the bridge",
        f"⏳ Reset of {BRIDGE}, step 2 of 5: backing up",
        f"⏳ Reset of {BRIDGE}, step 3 of 5: verifying the backup",
        f"⏳ Reset of {BRIDGE}, step 4 of 5: clearing the crypto store",
        f"⏳ Reset of {BRIDGE}, step 5 of 5: starting the bridge",
        "",
    ]
    assert capsys.readouterr().out == (
        f"Reset {BRIDGE} (crypto) done. Backup: {m.location}\n"
        f"Undo: bridgedoctor restore {BRIDGE} {m.id}\n"
    )
    with watched_stderr(monkeypatch) as screen:
        assert main(["restore", BRIDGE, m.id, "--yes", *argv]) == 0
        shown = steps_shown(screen)
    assert shown == [
        f"⏳ Restore of {BRIDGE}, step 1 of 3: stopping the bridge",
        f"⏳ Restore of {BRIDGE}, step 2 of 3: putting the rows back",
        f"⏳ Restore of {BRIDGE}, step 3 of 3: starting the bridge",
        "",
    ]
    assert capsys.readouterr().out == f"Restored {BRIDGE} from {m.id}.\n"


# --- backups: the listing, and what recovery found first ----------------------------------------


def reset_record(bridge_dir: Path, ident: str, kind: str, mode: str, state: str) -> Manifest:
    d = bridge_dir / ident
    d.mkdir(parents=True)
    m = Manifest(id=ident, kind=kind, bridge=BRIDGE, mode=mode,  # type: ignore[arg-type]
                 requested_by="@admin:example.com", created_at=f"at {ident}", location=str(d),
                 unit=UNIT, state=state, extra={"op_dir": str(d)})  # type: ignore[arg-type]  # fmt: skip
    m.save()
    return m


def apply_record(bridge_dir: Path, ident: str, state: str) -> ApplyRecord:
    d = bridge_dir / ident
    d.mkdir(parents=True)
    r = ApplyRecord(id=ident, bridge=BRIDGE, unit=UNIT, requested_by="cli",
                    created_at=f"at {ident}", location=str(d), config="/x/config.yaml", base="/x",
                    was_active=True, before_sha256="", after_sha256="", uid=0, gid=0,
                    file_mode=0o600, key_from="", key_to="", state=state)  # type: ignore[arg-type]  # fmt: skip
    r.save()
    return r


@pytest.fixture
def listed(tmp_path: Path) -> tuple[list[str], Path]:
    """Two resets, a restore of one and an apply older than both, each finished: the command
    line of their listing, and the bridge's backup directory."""
    bridge_dir = tmp_path / "backups" / BRIDGE
    reset_record(bridge_dir, "20261201T020000Z-crypto", "reset", "crypto", "done")
    reset_record(bridge_dir, "20261201T030000Z-full", "reset", "full", "rolled_back")
    reset_record(bridge_dir, "20261201T020000Z-crypto.restore-20261201T040000Z", "restore",
                 "crypto", "done")  # fmt: skip
    apply_record(bridge_dir, "20261130T120000Z-apply", "undone")
    (tmp_path / "root").mkdir()
    return [
        "backups",
        BRIDGE,
        "--root",
        str(tmp_path / "root"),
        *backup_args(tmp_path),
    ], bridge_dir


def test_backups_lists_every_reset_and_apply_by_id_and_no_restore(
    listed: tuple[list[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv, d = listed
    assert main(argv) == 0
    assert capsys.readouterr() == (
        f"20261130T120000Z-apply  apply   undone        cli  {d}/20261130T120000Z-apply\n"
        f"20261201T020000Z-crypto  crypto  done          @admin:example.com  "
        f"{d}/20261201T020000Z-crypto\n"
        f"20261201T030000Z-full  full    rolled_back   @admin:example.com  "
        f"{d}/20261201T030000Z-full\n",
        "",
    )
    assert main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith('[\n  {\n    "id": "20261130T120000Z-apply",\n    "mode"')
    assert out == json.dumps(json.loads(out), indent=2) + "\n"
    assert json.loads(out) == [
        {"id": "20261130T120000Z-apply", "mode": "apply", "state": "undone",
         "created_at": "at 20261130T120000Z-apply", "requested_by": "cli",
         "location": f"{d}/20261130T120000Z-apply"},
        {"id": "20261201T020000Z-crypto", "mode": "crypto", "state": "done",
         "created_at": "at 20261201T020000Z-crypto", "requested_by": "@admin:example.com",
         "location": f"{d}/20261201T020000Z-crypto"},
        {"id": "20261201T030000Z-full", "mode": "full", "state": "rolled_back",
         "created_at": "at 20261201T030000Z-full", "requested_by": "@admin:example.com",
         "location": f"{d}/20261201T030000Z-full"},
    ]  # fmt: skip


def test_backups_of_a_bridge_without_any_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["backups", BRIDGE, "--root", str(tmp_path), *backup_args(tmp_path)]
    assert main(argv) == 0
    assert capsys.readouterr() == (f"No backups of {BRIDGE} in {tmp_path}/backups/{BRIDGE}.\n", "")
    assert main([*argv, "--json"]) == 0
    assert capsys.readouterr() == ("[]\n", "")


def test_backups_of_an_unknown_bridge_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["backups", "nosuch", "--root", str(tmp_path), *backup_args(tmp_path)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("bridgedoctor: Unknown bridge 'nosuch'; known bridges: ")
    assert err.endswith(", whatsapp.\n") and err.count("\n") == 1
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_backups_while_a_reset_runs_says_so_and_recovers_nothing(
    tmp_path: Path, systemd: Systemd, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    m = interrupted(tmp_path, "reset", ["stop", "backup"])
    systemd.set(UNIT, "inactive")
    argv = ["backups", BRIDGE, "--root", str(tmp_path), *backup_args(tmp_path)]
    with lock.held(m.dir.parent):
        assert main(argv + ["--json"] * as_json) == 0
    out, err = capsys.readouterr()
    note = f"bridgedoctor: A reset or restore of {BRIDGE} is running now.\n"
    line = f"{m.id}  crypto  planned       @admin:example.com  {m.dir}\n"
    if as_json:
        assert (err, [x["state"] for x in json.loads(out)]) == (note, ["planned"])
    else:
        assert (out, err) == (note + line, "")
    assert Manifest.load(m.dir / "manifest.json").state == "planned"
    assert systemd.calls() == [] and systemd.get(UNIT) == "inactive"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_backups_says_what_recovery_did_first_and_fails_while_something_is_left(
    tmp_path: Path, systemd: Systemd, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    """Recovery's sentences come first (to stderr when the listing is JSON), neutralised on one
    line: the backup directory here has a newline and an escape in its name."""
    where = tmp_path / "x\ny\x1b"
    m = interrupted(where, "reset", ["stop", "backup"])
    systemd.set(UNIT, "inactive")
    (where / "root").mkdir()
    argv = [
        "backups",
        BRIDGE,
        "--root",
        str(where / "root"),
        "--backup-dir",
        str(where / "backups"),
    ]
    argv += ["--json"] * as_json
    shown = str(m.dir.parent).replace("\n", "\\x0a").replace("\x1b", "\\x1b")
    with immutable(m.dir.parent):  # no lock file can be made: nothing can be finished
        assert main(argv) == 1
    out, err = capsys.readouterr()
    said = (
        f"bridgedoctor: The interrupted reset {m.id} of {BRIDGE} cannot be finished now "
        f"(Operation not permitted ({shown}/.lock)); free the disk, then run "
        f"'bridgedoctor backups {BRIDGE}'.\n"
    )
    line = f"{m.id}  crypto  planned       @admin:example.com  {m.dir}\n"
    assert (
        (err, json.loads(out)[0]["state"]) == (said, "planned")
        if as_json
        else (out, err) == (said + line, "")
    )
    assert main(argv) == 0  # now it can: rolled back, and said so once
    out, err = capsys.readouterr()
    said = f"bridgedoctor: The interrupted reset {m.id} of {BRIDGE} was rolled back"
    assert (err if as_json else out).startswith(said)
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert said not in out + err
    assert Manifest.load(m.dir / "manifest.json").state == "rolled_back"


# --- a note with the result ----------------------------------------------------------------------


@contextlib.contextmanager
def records_frozen_at_start(systemd: Systemd, bridge_dir: Path) -> Iterator[None]:
    """When the unit is started again (the last step), nothing in the bridge's backup
    directories can be created or removed any more (chattr +i): a disk failing just then."""
    systemd.hang_start(UNIT)
    frozen: list[Path] = []
    started = systemd.calls().count(f"start {UNIT}")

    def freeze() -> None:
        deadline = time.monotonic() + 60
        while systemd.calls().count(f"start {UNIT}") == started and time.monotonic() < deadline:
            time.sleep(0.02)
        for d in sorted(bridge_dir.iterdir()):
            if d.is_dir() and subprocess.run(["chattr", "+i", str(d)]).returncode == 0:
                frozen.append(d)
        systemd.hang_start(UNIT, False)

    t = threading.Thread(target=freeze)
    t.start()
    try:
        yield
    finally:
        systemd.hang_start(UNIT, False)
        t.join()
        for d in frozen:
            subprocess.run(["chattr", "-i", str(d)], check=True)


def test_a_reset_and_a_restore_done_but_not_recorded_say_so_in_a_note(
    sqlite_host: Host, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*sqlite_host.args(), *backup_args(tmp_path)]
    bridge_dir = tmp_path / "backups" / BRIDGE
    bridge_dir.mkdir(parents=True, mode=0o700)
    if subprocess.run(["chattr", "+i", str(bridge_dir)], capture_output=True).returncode != 0:
        pytest.skip(f"chattr +i is not supported on {bridge_dir}'s file system")
    subprocess.run(["chattr", "-i", str(bridge_dir)], check=True)
    with records_frozen_at_start(systemd, bridge_dir):
        assert main(["reset", BRIDGE, "--yes", *argv]) == 0
    (m,) = all_for(bridge_dir)
    assert (m.state, systemd.get(UNIT)) == ("applied", "active")
    assert capsys.readouterr() == (
        f"Reset {BRIDGE} (crypto) done. Backup: {m.location}\n"
        f"Undo: bridgedoctor restore {BRIDGE} {m.id}\n"
        f"Note: Its record could not be updated (cannot write {m.dir}/manifest.json (Operation "
        "not permitted)); the next command does it.\n",
        "",
    )
    assert main(["backups", BRIDGE, *argv]) == 0  # it is recorded now
    assert capsys.readouterr().out.startswith(
        f"bridgedoctor: The interrupted reset {m.id} of {BRIDGE} was finished: done.\n"
    )
    with records_frozen_at_start(systemd, bridge_dir):
        assert main(["restore", BRIDGE, m.id, "--yes", *argv]) == 0
    (r,) = (x for x in all_for(bridge_dir) if x.kind == "restore")
    assert capsys.readouterr() == (
        f"Restored {BRIDGE} from {m.id}.\n"
        f"Note: Its record could not be updated (cannot write {r.dir}/manifest.json (Operation "
        "not permitted)); the next command does it.\n",
        "",
    )


# --- refusals and what is said without --yes ---------------------------------------------------


@pytest.mark.parametrize(
    ("ident", "said"),
    [
        # An id is DATE-MODE: only the part after the first '-' says whether it is an apply.
        ("20261201T020000Z-crypto-apply", "no backup {id} of {bridge} in {dir}."),
        ("20261201T020000Z-apply-crypto", "no apply {id} in {dir}."),
        ("20261201T020000Z-full", "no backup {id} of {bridge} in {dir}."),
        ("20261201T020000Z-apply", "no apply {id} in {dir}."),
    ],
)
def test_restoring_a_backup_that_is_not_there_is_a_usage_error(
    sqlite_host: Host,
    systemd: Systemd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ident: str,
    said: str,
) -> None:
    argv = ["restore", BRIDGE, ident, "--yes", *sqlite_host.args(), *backup_args(tmp_path)]
    assert main(argv) == 2
    d = tmp_path / "backups" / BRIDGE
    assert capsys.readouterr() == (
        "",
        "bridgedoctor: " + said.format(id=ident, bridge=BRIDGE, dir=d) + "\n",
    )
    assert systemd.calls() == []


def test_without_yes_and_without_a_terminal_the_plans_are_shown_and_nothing_is_done(
    sqlite_host: Host, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*sqlite_host.args(), *backup_args(tmp_path)]
    assert main(["reset", BRIDGE, "--mode", "full", *argv]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"Reset plan for {BRIDGE} (full):\n")
    assert err == (
        "bridgedoctor: not a terminal; re-run with --yes to confirm.\n"
        "bridgedoctor: not confirmed; nothing was changed.\n"
    )
    assert all_for(tmp_path / "backups" / BRIDGE) == []
    assert main(["reset", BRIDGE, "--mode", "full", "--yes", *argv]) == 0
    (m,) = all_for(tmp_path / "backups" / BRIDGE)
    assert capsys.readouterr() == (
        f"Reset {BRIDGE} (full) done. Backup: {m.location}\n"
        f"Undo: bridgedoctor restore {BRIDGE} {m.id}\n"
        "Now log in to the remote network again (the bridge's login command).\n",
        "",
    )
    calls = systemd.calls()
    assert main(["restore", BRIDGE, m.id, *argv]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"Restore {BRIDGE} from {m.id} (full): stop {UNIT}, put back the ")
    assert err == (
        "bridgedoctor: not a terminal; re-run with --yes to confirm.\n"
        "bridgedoctor: not confirmed; nothing was changed.\n"
    )
    assert [c for c in systemd.calls()[len(calls) :] if not c.startswith("show")] == []


def test_backups_of_one_bridge_finishes_only_that_bridge(
    tmp_path: Path, systemd: Systemd, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = interrupted(tmp_path, "reset", ["stop", "backup"])
    other = interrupted(tmp_path, "reset", ["stop", "backup"], bridge="whatsapp")
    systemd.set(UNIT, "inactive")
    argv = ["backups", BRIDGE, "--root", str(tmp_path), *backup_args(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"bridgedoctor: The interrupted reset {mine.id} of {BRIDGE} was ")
    assert "whatsapp" not in out
    assert Manifest.load(mine.dir / "manifest.json").state == "rolled_back"
    assert Manifest.load(other.dir / "manifest.json").state == "planned"
