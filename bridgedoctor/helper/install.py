"""`bridgedoctor-helper install` / `uninstall`: the helper set up on an MDAD host in one command.

install (as root, from the venv the helper lives in) finds MDAD's root, its `matrix` user and its
PostgreSQL, writes the token, the config, the unit (the packaged one, with this venv's path), the
reset drop-in with `--allow-reset`, and /etc/tmpfiles.d/bridgedoctor.conf (so /run/bridgedoctor
exists at boot, before maubot's container needs it); then enables and (re)starts the unit, checks
that it answers the matrix user, and prints the vars.yml lines for maubot and the plugin settings.

Idempotent: a file is written only when it is missing, or when it is one this command wrote and
nobody changed since (install.json records what it wrote, by sha256); a file the admin changed is
kept and named. The unit is restarted only when something it reads changed. `uninstall` stops and
disables the unit and removes what install added and nobody changed; backups are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..probes import postgres

UNIT_NAME = "bridgedoctor-helper.service"
SYSTEMD_DIR = Path("/etc/systemd/system")
UNIT = SYSTEMD_DIR / UNIT_NAME
DROPIN_DIR = SYSTEMD_DIR / f"{UNIT_NAME}.d"
DROPIN = DROPIN_DIR / "reset.conf"
# The unit allows no IP address; where MDAD's Postgres is only on its Docker network, that
# network is allowed here (and only it).
DROPIN_TCP = DROPIN_DIR / "postgres-tcp.conf"
TCP_DROPIN_TEXT = """\
# Written by bridgedoctor-helper install: MDAD's PostgreSQL has no socket directory on this host,
# so the helper reaches the matrix-postgres container on its Docker network, and only there (the
# unit allows no IP address otherwise: docs/SECURITY.md). Re-run install if the network changes.
[Service]
IPAddressAllow={network}
"""
TMPFILES = Path("/etc/tmpfiles.d/bridgedoctor.conf")
ETC = Path("/etc/bridgedoctor")
TOKEN = ETC / "token"
CONFIG = ETC / "helper.yaml"
STATE = Path("/var/lib/bridgedoctor/install.json")
SOCKET = Path("/run/bridgedoctor/helper.sock")
PACKAGED_PREFIX = "/opt/bridgedoctor/"
MATRIX_USER = "matrix"
MAUBOT_MOUNT = "--mount type=bind,src=/run/bridgedoctor,dst=/run/bridgedoctor,readonly"
ANSWER_TIMEOUT = 20.0
# The unit hides these from the helper (ProtectHome=yes, PrivateTmp=yes): a venv there cannot run.
HIDDEN_PREFIXES = ("/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/")


class InstallError(Exception):
    """Cannot install here; str() is one sentence for the admin."""


@dataclass(frozen=True)
class Host:
    root: Path
    uid: int
    gid: int
    db_host: str
    db_note: str
    prefix: Path  # the venv
    network: str | None = None  # the Docker network to allow, when Postgres is reached there


@dataclass
class Report:
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def note(self, what: str, changed: bool) -> None:
        (self.changed if changed else self.kept).append(what)


def packaged(name: str) -> str:
    return resources.files("bridgedoctor.helper").joinpath("deploy", name).read_text("utf-8")


def unit_text(prefix: Path) -> str:
    """The packaged unit, with this venv instead of /opt/bridgedoctor; nothing else differs."""
    return packaged("bridgedoctor-helper.service").replace(PACKAGED_PREFIX, f"{prefix}/")


def detect(root: Path, user_name: str = MATRIX_USER, prefix: Path | None = None) -> Host:
    """What install needs to know about this host; `prefix` is the venv (this one's, sys.prefix)."""
    if os.geteuid() != 0:
        raise InstallError("run install as root (it writes /etc and starts a system service).")
    if not root.is_dir():
        raise InstallError(f"{root} does not exist: is this an MDAD host? Pass --root DIR.")
    try:
        user = pwd.getpwnam(user_name)
    except KeyError:
        raise InstallError(
            f"there is no '{user_name}' user: MDAD creates it and runs maubot as it."
        ) from None
    prefix = Path(sys.prefix) if prefix is None else prefix
    if str(prefix).startswith(HIDDEN_PREFIXES) or str(prefix) == "/root":
        raise InstallError(
            f"the venv {prefix} is under a directory the unit hides from the helper; install "
            "bridgedoctor into a venv under /opt (python3 -m venv /opt/bridgedoctor)."
        )
    if not (prefix / "bin" / "bridgedoctor-helper").exists():
        raise InstallError(f"run install with the venv's own bridgedoctor-helper ({prefix}/bin).")
    sock = postgres.socket_dir(root)
    network = None
    if sock is not None:
        db_host, note = str(sock), f"the socket directory {sock}"
    elif (addr := postgres.container_address()) is not None:
        db_host = postgres.AUTO
        network = postgres.container_network()
        note = (
            f"no socket directory here (MDAD before March 2026); the {postgres.MDAD_HOST} "
            f"container (now at {addr}) is looked up for each request, and its network "
            f"{network} is the one the unit lets the helper reach"
        )
    else:
        db_host = postgres.AUTO
        note = (
            "none found now (no socket directory, no running container); looked up per request. "
            "Re-run install once it runs: the unit allows no IP address until then"
        )
    return Host(root, user.pw_uid, user.pw_gid, db_host, note, prefix, network)


def config_text(h: Host, allow_reset: bool) -> str:
    return f"""\
# /etc/bridgedoctor/helper.yaml, written by `bridgedoctor-helper install` from what it found.
# Every setting: docs/helper.md. Edit freely: install never overwrites a file you changed.
root: {h.root}
# MDAD's PostgreSQL: {h.db_note}.
db_host: {h.db_host}
token_file: {TOKEN}
socket: {SOCKET}
# maubot runs as MDAD's {MATRIX_USER} user (uid {h.uid}, gid {h.gid}): only it may connect.
socket_group: {h.gid}
socket_mode: 0o660
allowed_uids: [{h.uid}]
# Resets from the room (!bridge reset): `bridgedoctor-helper install --allow-reset` turns them
# on together with the unit drop-in they need.
allow_reset: {"true" if allow_reset else "false"}
"""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Files:
    """Writes only missing files or files this command wrote that nobody changed since."""

    def __init__(self, report: Report, state_file: Path = STATE) -> None:
        self.report = report
        self.state_file = state_file
        try:
            self.state: dict[str, str] = json.loads(state_file.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            self.state = {}

    def ours(self, path: Path) -> bool:
        """Written by install and unchanged since."""
        try:
            return self.state.get(str(path)) == _sha(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError):
            return False

    def put(self, path: Path, text: str, mode: int = 0o644, gid: int = 0) -> bool:
        """True when the file was written."""
        if path.exists():
            current = path.read_text("utf-8", errors="replace")
            if current == text:
                self.report.note(f"{path} (unchanged)", False)
                return False
            if not self.ours(path):
                self.report.note(
                    f"{path} (kept: changed by you, or not written by install)", False
                )
                return False
        self.mkdir(path.parent)
        tmp = path.with_name(f".{path.name}.bd-new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chown(tmp, 0, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        self.state[str(path)] = _sha(text)
        self.report.note(f"{path}", True)
        return True

    def mkdir(self, path: Path, mode: int = 0o755, gid: int = 0) -> None:
        if path.is_dir():
            return
        self.mkdir(path.parent)
        path.mkdir(mode=mode)
        os.chown(path, 0, gid)
        os.chmod(path, mode)
        self.state[str(path)] = "dir"

    def save(self) -> None:
        self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps({"files": self.state}, indent=2, sort_keys=True) + "\n"
        )


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise InstallError(f"systemctl {' '.join(args)} failed: {r.stderr.strip()[:200]}")
    return r


@contextlib.contextmanager
def _whole() -> Iterator[None]:
    """Ctrl-C waits until the block's changes are all made: a unit written but not loaded, or a
    record removed before the daemon-reload, would leave a second run nothing to redo. Held
    twice: the mask for the commands started meanwhile (systemctl inherits it), the handler for
    this process (a signal the kernel gives another thread still reaches ours)."""
    held: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda signum, _: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one that came is handled now: held
        signal.signal(signal.SIGINT, handler)
    if held and handler is not signal.SIG_IGN:  # ignored before (a background job): still is
        raise KeyboardInterrupt


def install(root: Path, allow_reset: bool | None) -> int:
    h = detect(root)
    report = Report()
    with _whole():
        allow_reset = _install(h, report, allow_reset)
    _print_report(h, report)
    bridges = _answers(h)
    if bridges is None:
        print(
            f"\nThe helper does not answer on {SOCKET}. Its journal:\n"
            + subprocess.run(
                ["journalctl", "-u", UNIT_NAME, "-n", "15", "--no-pager", "-o", "cat"],
                capture_output=True,
                text=True,
            ).stdout
        )
        return 1
    print(
        f"\nThe helper answers the {MATRIX_USER} user; bridges found: {', '.join(bridges) or 'none'}."
    )
    _print_next_steps(allow_reset)
    return 0


def _install(h: Host, report: Report, allow_reset: bool | None) -> bool:
    """Write what is missing or ours, load it and (re)start the helper; the choice of resets."""
    files = Files(report)
    if allow_reset is None:  # keep what an earlier install chose
        allow_reset = DROPIN.exists()
    files.mkdir(ETC, 0o750, h.gid)
    if not TOKEN.exists():
        files.put(TOKEN, secrets.token_hex(32) + "\n", 0o640, h.gid)
    else:
        report.note(f"{TOKEN} (kept)", False)
    config_changed = files.put(CONFIG, config_text(h, allow_reset), 0o640, h.gid)
    unit_changed = files.put(UNIT, unit_text(h.prefix))
    if allow_reset:
        unit_changed |= files.put(DROPIN, packaged("reset.conf"))
    elif DROPIN.exists() and files.ours(DROPIN):
        DROPIN.unlink()
        files.state.pop(str(DROPIN), None)
        unit_changed = True
        report.note(f"{DROPIN} (removed: resets off)", True)
    elif DROPIN.exists():
        report.note(
            f"{DROPIN} (kept: changed by you; the unit still lets resets write until you "
            "remove it)",
            False,
        )
    if h.network is not None:
        unit_changed |= files.put(DROPIN_TCP, TCP_DROPIN_TEXT.format(network=h.network))
    elif DROPIN_TCP.exists() and files.ours(DROPIN_TCP):
        DROPIN_TCP.unlink()
        files.state.pop(str(DROPIN_TCP), None)
        unit_changed = True
        report.note(f"{DROPIN_TCP} (removed: PostgreSQL has a socket directory now)", True)
    files.put(TMPFILES, packaged("tmpfiles.conf"))
    files.save()
    subprocess.run(["systemd-tmpfiles", "--create", str(TMPFILES)], check=False, timeout=60)
    if unit_changed:
        systemctl("daemon-reload")
    if systemctl("is-enabled", UNIT_NAME, check=False).stdout.strip() != "enabled":
        systemctl("enable", UNIT_NAME)
        report.note(f"enabled {UNIT_NAME}", True)
    active = systemctl("is-active", UNIT_NAME, check=False).stdout.strip() == "active"
    if not active or unit_changed or config_changed:
        systemctl("restart" if active else "start", UNIT_NAME, check=False)
        report.note(f"{'restarted' if active else 'started'} {UNIT_NAME}", True)
    return allow_reset


def _print_report(h: Host, report: Report) -> None:
    print(f"MDAD root: {h.root}; {MATRIX_USER} user: uid {h.uid}, gid {h.gid}")
    print(f"PostgreSQL: {h.db_note}")
    if report.changed:
        print("Changed:\n" + "\n".join(f"  {c}" for c in report.changed))
    else:
        print("Nothing changed: everything was already in place.")
    kept = [k for k in report.kept if "kept:" in k]
    if kept:
        print("Left alone:\n" + "\n".join(f"  {k}" for k in kept))


def _answers(h: Host) -> list[str] | None:
    """`list` over the socket, as the matrix user maubot runs as (its uid is the allowed one)."""
    probe = (
        "import asyncio, json, sys\n"
        "from bridgedoctor.protocol import Request, call\n"
        f"token = open({str(TOKEN)!r}).read().strip()\n"
        f"r = asyncio.run(call({str(SOCKET)!r}, Request(token, 'list'), timeout=10))\n"
        "print(json.dumps(r['bridges']))\n"
    )
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while time.monotonic() < deadline:
        r = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=30,
            user=h.uid,
            group=h.gid,
            extra_groups=[],
            cwd="/",
        )
        if r.returncode == 0:
            return list(json.loads(r.stdout))
        time.sleep(0.5)
    return None


def _print_next_steps(allow_reset: bool) -> None:
    token = TOKEN.read_text().strip()
    print(
        f"""
1. Give maubot the socket: add to inventory/host_vars/<your server>/vars.yml

matrix_bot_maubot_container_extra_arguments:
  - '{MAUBOT_MOUNT}'

   then run: just run-tags install-bot-maubot,start

2. In maubot's web UI, set the bridgedoctor instance's config to:

socket_path: {SOCKET}
token: "{token}"

Resets from the room are {"on" if allow_reset else "off (install --allow-reset turns them on)"}."""
    )


def uninstall() -> int:
    if os.geteuid() != 0:
        raise InstallError("run uninstall as root.")
    report = Report()
    files = Files(report)
    if not files.state:
        print(f"Nothing to remove: {STATE} does not list anything install wrote.")
        return 0
    with _whole():
        systemctl("disable", "--now", UNIT_NAME, check=False)
        for path_s, sha in sorted(files.state.items(), key=lambda kv: len(kv[0]), reverse=True):
            path = Path(path_s)
            if sha == "dir":
                try:
                    path.rmdir()
                    report.note(f"{path}/", True)
                except OSError:
                    report.note(f"{path}/ (kept: not empty)", False)
            elif not path.exists():
                continue
            elif files.ours(path):
                path.unlink()
                report.note(str(path), True)
            else:
                report.note(f"{path} (kept: changed since install)", False)
        STATE.unlink(missing_ok=True)
        systemctl("daemon-reload", check=False)
        shutil.rmtree("/run/bridgedoctor", ignore_errors=True)
    print("Removed:\n" + "\n".join(f"  {c}" for c in report.changed))
    if report.kept:
        print("Kept:\n" + "\n".join(f"  {k}" for k in report.kept))
    print(
        "Reset backups in /var/lib/bridgedoctor/backups are kept. Remove the maubot mount from "
        f"vars.yml ('{MAUBOT_MOUNT}') and run: just run-tags install-bot-maubot,start. The venv "
        f"{sys.prefix} itself stays (rm -rf it if you like)."
    )
    return 0


def run(command: str, root: Path, allow_reset: bool | None) -> int:
    try:
        return install(root, allow_reset) if command == "install" else uninstall()
    except InstallError as e:
        sys.stderr.write(f"bridgedoctor-helper {command}: {e}\n")
        return 2
    except KeyboardInterrupt:
        # Changes wait for Ctrl-C (_whole): what it cuts short is the look at the host or the
        # wait for the helper's answer, both of which a second run does again.
        sys.stderr.write(f"bridgedoctor-helper {command}: interrupted; run it again to finish.\n")
        return 130
