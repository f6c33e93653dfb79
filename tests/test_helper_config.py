"""bridgedoctor-helper's configuration and its console script, run as the admin would run it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bridgedoctor.dbpin import DbPin
from bridgedoctor.helper.config import (
    KEYS,
    MAX_SOCKET_PATH,
    MIN_TOKEN_CHARS,
    ConfigError,
    HelperConfig,
    load,
    parse,
    prepare_dirs,
)
from bridgedoctor.protocol import decode_response
from tests.support.disks import read_only, tmpfs

SCRIPT = Path(sys.executable).parent / "bridgedoctor-helper"
TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def site() -> Iterator[Path]:
    """A root, a token file and a socket dir; short path because of the 107-byte socket limit."""
    d = Path(tempfile.mkdtemp(prefix="bdc-", dir="/tmp"))
    (d / "matrix").mkdir()
    (d / "token").write_text(TOKEN + "\n")
    (d / "token").chmod(0o640)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write(site: Path, text: str) -> Path:
    """A config with site-local paths, plus `text` (whose keys win)."""
    base = {
        "root": site / "matrix",
        "token_file": site / "token",
        "socket": site / "run" / "h.sock",
        "backup_dir": site / "backups",
    }
    given = {line.split(":", 1)[0] for line in text.splitlines()}
    head = "".join(f"{k}: {v}\n" for k, v in base.items() if k not in given)
    path = site / "helper.yaml"
    path.write_text(head + text)
    return path


def run_script(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--config", str(config)], capture_output=True, text=True, timeout=30
    )


def test_defaults(site: Path) -> None:
    cfg = load(write(site, ""))
    assert cfg.systemd_dir == Path("/etc/systemd/system")
    assert (cfg.socket_mode, cfg.socket_gid, cfg.allowed_uids) == (0o660, None, None)
    assert (cfg.naming, cfg.max_concurrent, cfg.db_host) == ("auto", 4, "auto")
    assert (cfg.request_timeout, cfg.read_timeout, cfg.verify_seconds) == (60.0, 5.0, 30.0)
    assert cfg.token == TOKEN and TOKEN not in repr(cfg)


def test_all_keys(site: Path) -> None:
    cfg = load(
        write(
            site,
            "systemd_dir: /srv/units\ndb_host: /matrix/postgres/run\nsocket_group: 0\n"
            "socket_mode: 0o600\nallowed_uids: [991, 1000]\nnaming: legacy\nmax_concurrent: 2\n"
            "request_timeout: 30\nread_timeout: 1.5\n",
        )
    )
    assert cfg.db_host == "/matrix/postgres/run" and cfg.socket_gid == 0
    assert cfg.socket_mode == 0o600 and cfg.allowed_uids == frozenset({991, 1000})
    assert (cfg.naming, cfg.max_concurrent, cfg.read_timeout) == ("legacy", 2, 1.5)
    assert cfg.verify_seconds == 20.0  # by default, 10 s below request_timeout, at most 30
    assert load(write(site, "request_timeout: 30\nverify_seconds: 2.5\n")).verify_seconds == 2.5


def test_inventory(site: Path) -> None:
    assert load(write(site, "")).inventory is None
    (site / "inv").mkdir()
    assert load(write(site, f"inventory: {site / 'inv'}\n")).inventory == site / "inv"


@pytest.mark.parametrize("value", ["'0640'", "'640'", "0o640", "416"])
def test_socket_mode_spellings(site: Path, value: str) -> None:
    assert load(write(site, f"socket_mode: {value}\n")).socket_mode == 0o640


@pytest.mark.parametrize(
    "text,needle",
    [
        ("socket_mode: 0660\n", "socket_mode 660 is not a permission mode"),  # YAML 1.2: decimal
        ("bogus: 1\n", "unknown setting 'bogus'"),
        ("naming: newest\n", "naming must be one of"),
        ("max_concurrent: 0\n", "max_concurrent must be"),
        ("max_concurrent: true\n", "max_concurrent must be"),
        ("request_timeout: -1\n", "request_timeout must be"),
        ("read_timeout: soon\n", "read_timeout must be"),
        ("allowed_uids: [root]\n", "allowed_uids must be"),
        ("allowed_uids: 0\n", "allowed_uids must be"),
        ("socket_group: no-such-group-bd\n", "socket_group 'no-such-group-bd' does not exist"),
        ("db_host: 'evil host;x'\n", "db_host 'evil host;x' is not HOST[:PORT]"),
        ("db_host: 'pg:99999'\n", "db_host port 99999 is out of range"),
        ("systemd_dir: relative/dir\n", "systemd_dir must be an absolute path"),
        ("socket: /tmp/" + "s" * 120 + "\n", "longer than 107 bytes"),
        ("naming: auto\nnaming: legacy\n", "is not valid YAML at line 6"),  # duplicate key
        ("inventory: relative/inv\n", "inventory must be an absolute path"),
        ("inventory: /nonexistent/inv\n", "inventory /nonexistent/inv is not a directory"),
        ("verify_seconds: 55\n", "verify_seconds must be at least 10 seconds below"),
        ("verify_seconds: 0\n", "verify_seconds must be a number of seconds"),
    ],
)
def test_bad_values(site: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(site, text))
    assert needle in str(err.value)
    assert str(err.value).endswith(".") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "db_host", ["auto", "127.0.0.1", "matrix-postgres:5432", "/matrix/postgres/run"]
)
def test_db_host_forms(site: Path, db_host: str) -> None:
    assert load(write(site, f"db_host: {db_host}\n")).db_host == db_host


def test_token_file_is_required(site: Path) -> None:
    (site / "helper.yaml").write_text(f"root: {site / 'matrix'}\n")
    with pytest.raises(ConfigError, match="token_file is required"):
        load(site / "helper.yaml")


def test_short_token_is_refused(site: Path) -> None:
    (site / "token").write_text("short\n")
    with pytest.raises(ConfigError, match="openssl rand -hex 32"):
        load(write(site, ""))


def test_token_of_exactly_the_minimum_length_is_accepted(site: Path) -> None:
    (site / "token").write_text("a" * MIN_TOKEN_CHARS + "\n")
    assert load(write(site, "")).token == "a" * MIN_TOKEN_CHARS
    (site / "token").write_text("a" * (MIN_TOKEN_CHARS - 1) + "\n")
    with pytest.raises(ConfigError, match="at least 16 printable"):
        load(write(site, ""))


@pytest.mark.parametrize("token", [TOKEN[:8] + " " + TOKEN[8:], TOKEN + "\x07", TOKEN + "\u00a0x"])
def test_token_with_space_or_control_characters_is_refused(site: Path, token: str) -> None:
    # A token with a space in it is a pasted sentence, not a secret a client sends byte for byte.
    (site / "token").write_text(token + "\n")
    with pytest.raises(ConfigError, match="must hold one token of at least"):
        load(write(site, ""))


@pytest.mark.parametrize("mode", [0o604, 0o602, 0o644])
def test_token_readable_or_writable_by_all_is_refused(site: Path, mode: int) -> None:
    (site / "token").chmod(mode)
    with pytest.raises(ConfigError) as e:
        load(write(site, ""))
    assert str(e.value) == (
        f"token_file {site / 'token'} is accessible to all users (mode {mode:04o}); "
        "run chmod 0640 on it."
    )


def test_token_file_that_cannot_be_read_says_why(site: Path) -> None:
    (site / "token").unlink()
    with pytest.raises(ConfigError) as e:
        load(write(site, ""))
    assert str(e.value) == f"cannot read token_file {site / 'token'}: No such file or directory."
    (site / "token").mkdir()
    with pytest.raises(ConfigError) as e:
        load(write(site, ""))
    assert str(e.value) == f"token_file {site / 'token'} is not a regular file."
    (site / "token").rmdir()
    (site / "token").write_bytes(b"\xff" * 32)
    (site / "token").chmod(0o640)
    with pytest.raises(ConfigError) as e:
        load(write(site, ""))
    assert str(e.value) == f"cannot read token_file {site / 'token'}: UnicodeDecodeError."


def test_uid_zero_may_be_allowed(site: Path) -> None:
    assert load(write(site, "allowed_uids: [0]\n")).allowed_uids == frozenset({0})


def test_missing_root_is_refused(site: Path) -> None:
    (site / "matrix").rmdir()
    with pytest.raises(ConfigError, match="is not a directory"):
        load(write(site, ""))


# --- through the console script: one sentence on stderr, exit 78 (EX_CONFIG) ---------------------


def assert_one_sentence(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    # 78, not 2: the unit's RestartPreventExitStatus=78 stops systemd retrying a bad config.
    assert proc.returncode == 78, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bridgedoctor-helper: "), proc.stderr
    assert needle in lines[0] and lines[0].endswith(".")
    assert "Traceback" not in proc.stderr and TOKEN not in proc.stderr


def test_script_bad_yaml(site: Path) -> None:
    path = write(site, "naming: [unclosed\n")
    assert_one_sentence(run_script(path), "is not valid YAML at line")


def test_script_world_readable_token(site: Path) -> None:
    (site / "token").chmod(0o644)
    assert_one_sentence(run_script(write(site, "")), "is accessible to all users (mode 0644)")


def test_script_unknown_key(site: Path) -> None:
    assert_one_sentence(run_script(write(site, "reveal_keys: true\n")), "unknown setting")


def test_script_missing_config(site: Path) -> None:
    assert_one_sentence(run_script(site / "nope.yaml"), "cannot read the config file")


def test_script_not_a_mapping(site: Path) -> None:
    (site / "helper.yaml").write_text("- a\n- b\n")
    assert_one_sentence(run_script(site / "helper.yaml"), "must be a mapping")


def test_script_socket_path_is_a_file(site: Path) -> None:
    (site / "run").mkdir()
    (site / "run" / "h.sock").write_text("keep me")
    assert_one_sentence(run_script(write(site, "")), "exists and is not a socket")
    assert (site / "run" / "h.sock").read_text() == "keep me"


def test_script_serves_and_stops_cleanly_on_sigterm(site: Path) -> None:
    config = write(site, f"systemd_dir: {site / 'units'}\n")
    sock = site / "run" / "h.sock"
    proc = subprocess.Popen(
        [str(SCRIPT), "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():  # waiting for readiness, not asserting on time
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the helper did not create its socket"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            # The socket is bound (and given its mode) before listen(): until then, connecting
            # is refused. Wait for the listen, on a loaded machine too.
            while s.connect_ex(str(sock)) != 0:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the helper did not listen on its socket"
                time.sleep(0.05)
            s.sendall(json.dumps({"v": 1, "token": TOKEN, "op": "list"}).encode() + b"\n")
            line = s.makefile("rb").readline()
        assert decode_response(line) == {"bridges": []}
        assert (site / "backups").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert f"request op=list bridge=- uid={os.getuid()}" in err and "result=ok" in err
    assert TOKEN not in err
    assert not sock.exists()


def test_example_config_is_valid(site: Path) -> None:
    """deploy/helper.example.yaml names every key with a valid value (host paths swapped)."""
    example = Path(__file__).parent.parent / "deploy" / "helper.example.yaml"
    raw = YAML(typ="safe").load(example.read_text())
    assert set(raw) == KEYS
    raw.update(root=str(site / "matrix"), token_file=str(site / "token"), socket_group=0)
    cfg = parse(raw, example)
    assert cfg.socket_mode == 0o660 and cfg.db_host == "/matrix/postgres/run"


def test_every_default_is_the_documented_one(site: Path) -> None:
    """The whole config, not field by field: a setting read from the wrong key or given the
    wrong default shows here."""
    assert load(write(site, "")) == HelperConfig(
        token=TOKEN,
        token_file=site / "token",
        root=site / "matrix",
        socket=site / "run" / "h.sock",
        backup_dir=site / "backups",
    )
    assert HelperConfig(token="t", token_file=Path("/t")) == HelperConfig(
        token="t",
        token_file=Path("/t"),
        root=Path("/matrix"),
        systemd_dir=Path("/etc/systemd/system"),
        db_host="auto",
        socket=Path("/run/bridgedoctor/helper.sock"),
        socket_gid=None,
        socket_mode=0o660,
        allowed_uids=None,
        backup_dir=Path("/var/lib/bridgedoctor/backups"),
        allow_reset=False,
        naming="auto",
        inventory=None,
        max_concurrent=4,
        request_timeout=60.0,
        deep_timeout=900.0,
        read_timeout=5.0,
        databases={},
        verify_seconds=30.0,
    )


def test_every_setting_is_read_from_its_own_key(site: Path) -> None:
    (site / "inv").mkdir()
    cfg = load(
        write(
            site,
            f"systemd_dir: /srv/units\ndb_host: 'db.example:5433'\nsocket: {site}/s/x.sock\n"
            f"socket_group: 0\nsocket_mode: 0o600\nallowed_uids: [991, 1000]\n"
            f"backup_dir: {site}/bk\nallow_reset: true\nnaming: current\ninventory: {site}/inv\n"
            "max_concurrent: 256\nrequest_timeout: 3600\ndeep_timeout: 901\nread_timeout: 0.5\n"
            "databases: {gmessages: 'gm_db:gm_role'}\nverify_seconds: 3590\n",
        )
    )
    assert cfg == HelperConfig(
        token=TOKEN,
        token_file=site / "token",
        root=site / "matrix",
        systemd_dir=Path("/srv/units"),
        db_host="db.example:5433",
        socket=site / "s" / "x.sock",
        socket_gid=0,
        socket_mode=0o600,
        allowed_uids=frozenset({991, 1000}),
        backup_dir=site / "bk",
        allow_reset=True,
        naming="current",
        inventory=site / "inv",
        max_concurrent=256,
        request_timeout=3600.0,
        deep_timeout=901.0,
        read_timeout=0.5,
        databases={"gmessages": DbPin(database="gm_db", user="gm_role")},
        verify_seconds=3590.0,
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("max_concurrent: 257\n", "max_concurrent must be a whole number from 1 to 256."),
        ("deep_timeout: 3600.5\n", "deep_timeout must be a number of seconds above 0 and at most 3600."),
        ("request_timeout: 0\n", "request_timeout must be a number of seconds above 0 and at most 3600."),
        ("socket_mode: 0o1000\n", "socket_mode 512 is not a permission mode; write it as 0o660 or '0660'."),
        ("socket_mode: '0O600'\n",
         "socket_mode 0O600 is not a permission mode; write it as 0o660 or '0660'."),
        ("socket_mode: '" + "7" * 30 + "'\n",
         f"socket_mode {'7' * 20} is not a permission mode; write it as 0o660 or '0660'."),
        ("db_host: 'pg:0'\n", "db_host port 0 is out of range."),
        ("db_host: 'pg:65536'\n", "db_host port 65536 is out of range."),
        ("db_host: '/run/pg:0'\n", "db_host port 0 is out of range."),
        ("db_host: ''\n", "db_host must be auto, HOST[:PORT], a socket directory, or null."),
        ("db_host: 5432\n", "db_host must be auto, HOST[:PORT], a socket directory, or null."),
        ("db_host: \"/run/p\\0g\"\n", "db_host must be auto, HOST[:PORT], a socket directory, or null."),
        ("db_host: '" + "h;" * 40 + "'\n",
         f"db_host '{'h;' * 30}' is not HOST[:PORT] or a socket directory."),
        ("backup_dir: \"/var/b\\0k\"\n", "backup_dir must be an absolute path."),
        ("socket_group: " + "g" * 50 + "\n", f"socket_group '{'g' * 40}' does not exist on this host."),
        ("socket_group: ''\n", "socket_group must be a group name, a numeric gid, or null."),
        ("socket_group: -1\n", "socket_group must be a group name, a numeric gid, or null."),
        ("allowed_uids: []\n",
         "allowed_uids is an empty list, so no one could use the helper; list the uids that may "
         "connect (id -u matrix) or remove the setting."),
        ("allow_reset: 'yes'\n", "allow_reset must be true or false."),
        ("databases: 5\n", "databases must map bridge names to their database."),
        ("databases: {'../x': db}\n", "databases: '../x' is not a bridge name."),
        ("databases: [gmessages]\n", "databases takes BRIDGE=DATABASE[:ROLE], not 'gmessages'."),
        ("verify_seconds: 50.5\n",
         "verify_seconds must be at least 10 seconds below request_timeout."),
        ("x" * 50 + ": 1\n", None),
    ],
)  # fmt: skip
def test_each_refusal_is_its_own_sentence(site: Path, text: str, said: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(site, text))
    if said is None:
        said = f"unknown setting '{'x' * 40}' in {site / 'helper.yaml'}; known settings: "
        assert str(err.value).startswith(said)
        return
    assert str(err.value) == said


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("db_host: '/run/pg:5432'\n", "/run/pg:5432"),
        ("db_host: '/run/a:b'\n", "/run/a:b"),  # a socket directory with a colon in its name
        ("db_host: 'pg:1'\n", "pg:1"),
        ("db_host: 'pg:65535'\n", "pg:65535"),
        ("db_host: null\n", None),
    ],
)
def test_db_host_bounds_and_socket_directories(site: Path, text: str, value: str | None) -> None:
    assert load(write(site, text)).db_host == value


def test_the_bounds_themselves_are_accepted(site: Path) -> None:
    cfg = load(write(site, "max_concurrent: 1\nsocket_mode: 0\nrequest_timeout: 11\n"))
    assert (cfg.max_concurrent, cfg.socket_mode) == (1, 0)
    assert cfg.verify_seconds == 1.0  # 10 s below request_timeout, at least 1
    assert load(write(site, "socket_mode: 0o777\n")).socket_mode == 0o777
    assert load(write(site, "request_timeout: 40\nverify_seconds: 30\n")).verify_seconds == 30.0
    assert load(write(site, "verify_seconds: 50\n")).verify_seconds == 50.0  # 60 - 10
    assert load(write(site, "request_timeout: 45\n")).verify_seconds == 30.0  # at most 30
    # A socket path of exactly the limit is accepted; one byte more is not.
    name = site / "run" / ("s" * (MAX_SOCKET_PATH - len(str(site / "run")) - 1))
    assert len(str(name)) == MAX_SOCKET_PATH
    assert load(write(site, f"socket: {name}\n")).socket == name
    with pytest.raises(ConfigError, match="longer than 107 bytes"):
        load(write(site, f"socket: {name}s\n"))


def test_what_the_config_file_itself_gets_wrong_is_one_sentence(site: Path) -> None:
    path = site / "helper.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"token_file is required in {path}."
    path.write_text("- root\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"the config file {path} must be a mapping of settings."
    path.write_text("root: /m\x07\n")  # a character YAML does not allow: no line to point at
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"the config file {path} is not valid YAML."
    path.write_bytes(b"root: /m\xe4trix\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"cannot read the config file {path}: UnicodeDecodeError."


def test_paths_left_out_are_mdads(site: Path) -> None:
    """Only token_file given: root, socket and backup_dir are MDAD's and the helper's own."""
    path = site / "helper.yaml"
    path.write_text(f"token_file: {site / 'token'}\n")
    if Path("/matrix").is_dir():  # an MDAD host: its root is the default
        cfg = load(path)
        assert cfg.root == Path("/matrix")
    else:
        with pytest.raises(ConfigError) as err:
            load(path)
        assert str(err.value) == "root /matrix is not a directory."
    path.write_text(f"token_file: {site / 'token'}\nroot: {site / 'matrix'}\n")
    cfg = load(path)
    assert cfg.socket == Path("/run/bridgedoctor/helper.sock")
    assert cfg.backup_dir == Path("/var/lib/bridgedoctor/backups")


def test_a_socket_directory_s_port_is_after_its_last_colon(site: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(site, "db_host: '/run/a:b:99999'\n"))
    assert str(err.value) == "db_host port 99999 is out of range."


@pytest.mark.skipif(os.geteuid() != 0, reason="the backup directory must be root's")
def test_the_helper_makes_its_socket_and_backup_directories(site: Path) -> None:
    cfg = load(write(site, f"socket: {site}/run/deep/h.sock\nbackup_dir: {site}/var/b/backups\n"))
    with_umask(0o022, lambda: prepare_dirs(cfg))
    assert stat.S_IMODE((site / "run" / "deep").stat().st_mode) == 0o755
    assert stat.S_IMODE((site / "var" / "b" / "backups").stat().st_mode) == 0o700
    prepare_dirs(cfg)  # again: they are there, nothing to do
    (site / "var" / "b" / "backups").rmdir()
    (site / "var" / "b" / "backups").write_text("a file")
    with pytest.raises(ConfigError) as err:
        prepare_dirs(cfg)
    assert str(err.value) == f"cannot create {site}/var/b/backups: File exists."
    (site / "var" / "b" / "backups").unlink()
    (site / "var" / "b").rmdir()
    (site / "var" / "b").write_text("a file on the way")
    with pytest.raises(ConfigError) as err:
        prepare_dirs(cfg)
    assert str(err.value) == f"cannot create {site}/var/b/backups: Not a directory."
    (site / "var" / "b").unlink()
    (site / "var" / "b").mkdir(mode=0o777)
    (site / "var" / "b").chmod(0o777)  # anyone may swap what is in it
    with pytest.raises(ConfigError) as err:
        prepare_dirs(cfg)
    assert str(err.value) == (
        f"the backup directory {site}/var/b/backups is not root's alone ({site}/var/b is owned "
        "by uid 0, mode 0777); keep backups in a directory only root can change, such as "
        "/var/lib/bridgedoctor/backups."
    )


def with_umask(mask: int, fn: Callable[[], object]) -> None:
    old = os.umask(mask)
    try:
        fn()
    finally:
        os.umask(old)


def test_a_backup_directory_on_a_read_only_disk_is_refused_at_start(site: Path) -> None:
    """Root may write anywhere but on a read-only file system (an ext4 that remounted itself
    read-only after errors): the helper says so at start, not at the first reset."""
    with tmpfs(site / "disk", "1M") as disk:
        (disk / "backups").mkdir(mode=0o700)
        cfg = load(write(site, f"backup_dir: {disk / 'backups'}\n"))
        read_only(disk)
        with pytest.raises(ConfigError) as err:
            prepare_dirs(cfg)
        assert str(err.value) == f"backup_dir {disk / 'backups'} is not writable."
