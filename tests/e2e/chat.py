"""The chat sandbox: a sample MDAD fleet in PostgreSQL, the real bridgedoctor-helper over it, and
the plugin running in a real maubot server on a real Synapse. Shared by tests/e2e/test_chat.py
and scripts/demo-chat (`python -m tests.e2e.chat`, which runs the demo conversation).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from ruamel.yaml import YAML

from bridgedoctor import protocol
from tests.support.fleet import Host
from tests.support.pg import PgServer, TempCluster
from tests.support.reset_env import Systemd, fake_systemd
from tests.support.store import StoreSpec

from .sandbox import (
    REPO_ROOT,
    Account,
    Event,
    MatrixUser,
    Maubot,
    SandboxError,
    Synapse,
    _Service,
    is_notice,
    replies_to,
    unique,
)

PLUGIN_ID = "dev.bridgedoctor.plugin"
REFUSAL = "Sorry, I only answer bridgedoctor admins, in the rooms set up for it."


def sample_fleet(workdir: Path, pg: PgServer, prefix: str, *, broken_extra: bool = False) -> Host:
    """gmessages pickled with its old compiled-in key (broken under MDAD's current default),
    whatsapp healthy; optionally slack with a lost random key. Unit files use PINNED_TAGS."""
    host = Host.at(workdir, pg)
    host.add_broken_gmessages_healthy_whatsapp(prefix)
    if broken_extra:
        lost = secrets.token_urlsafe(48)[:64]
        host.add("slack", StoreSpec("slack", account_key=lost), db_prefix=prefix)
    return host


def build_plugin(out_dir: Path) -> Path:
    """The .mbp, built by the same script admins use."""
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-mbp.sh"), str(out_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SandboxError(f"build-mbp.sh failed:\n{proc.stdout}{proc.stderr}")
    return Path(proc.stdout.strip())


class Helper(_Service):
    """The real privileged helper, `bridgedoctor-helper --config FILE`, as a subprocess."""

    name = "helper"

    def __init__(
        self, workdir: Path, host: Host, token: str | None = None, systemd: Systemd | None = None
    ) -> None:
        """`systemd`: a fake systemctl put first on the helper's PATH (resets need one)."""
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir)
        self.env = {**os.environ, **(systemd.env() if systemd else {})}
        self.token = token or secrets.token_hex(32)
        self.socket_path = workdir / "helper.sock"
        if len(os.fsencode(self.socket_path)) > 107:
            raise SandboxError(f"socket path {self.socket_path} is too long for a Unix socket")
        self.config_path = workdir / "helper.yaml"
        token_file = workdir / "token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o640)  # the helper refuses a world-readable token file
        assert host.pg is not None
        config = {
            "root": str(host.root),
            "systemd_dir": str(host.systemd),
            "db_host": f"127.0.0.1:{host.pg.port}",
            "socket": str(self.socket_path),
            "socket_mode": "0660",
            "token_file": str(token_file),
            "backup_dir": str(workdir / "backups"),
            "allow_reset": systemd is not None,
            "request_timeout": 60,
            "databases": dict(host.databases),
        }
        with self.config_path.open("w") as f:
            YAML(typ="safe").dump(config, f)

    def _argv(self) -> list[str]:
        script = Path(sys.executable).parent / "bridgedoctor-helper"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "bridgedoctor.helper"]
        return [*cmd, "--config", str(self.config_path)]

    def start(self, timeout: float = 30) -> Helper:
        self._spawn(self._argv(), env=self.env)
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while not self._answers_list():
            if self.proc.poll() is not None:
                raise SandboxError(
                    f"helper exited with code {self.proc.returncode}; log:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SandboxError(f"helper not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - started
        return self

    def _answers_list(self) -> bool:
        """Ready means a real `list` request succeeds (bound is not enough: listen comes after)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(self.socket_path))
                s.sendall(protocol.encode_request(protocol.Request(self.token, "list")))
                line = s.makefile("rb").readline()
            protocol.decode_response(line)
            return True
        except (OSError, protocol.ProtocolError):
            return False


@dataclass(frozen=True)
class Chat:
    """Who is in the admin room, and where."""

    synapse: Synapse
    bot: Account
    admin: Account
    stranger: Account
    room_id: str
    instance_id: str


async def _join(synapse: Synapse, account: Account, room_id: str) -> None:
    url = f"{synapse.url}/_matrix/client/v3/rooms/{quote(room_id)}/join"
    headers = {"Authorization": f"Bearer {account.access_token}"}
    async with aiohttp.ClientSession() as http, http.post(url, json={}, headers=headers) as resp:
        if resp.status != 200:
            raise SandboxError(f"{account.user_id} could not join {room_id}: {await resp.text()}")


def instance_config(
    socket_path: Path,
    token: str,
    admin: str,
    room_id: str,
    working_after: float = 3,
    watch: dict[str, Any] | None = None,
) -> str:
    config: dict[str, Any] = {
        "socket_path": str(socket_path),
        "token": token,
        "admins": [admin],
        "allowed_rooms": [room_id],
        "timeouts": {"check": 90, "working_after": working_after},
    }
    if watch is not None:
        config["watch"] = {**watch, "room": room_id}
    out = io.StringIO()
    YAML(typ="safe").dump(config, out)
    return out.getvalue()


async def deploy(
    synapse: Synapse,
    maubot: Maubot,
    mbp: Path,
    helper: Helper,
    working_after: float = 3,
    watch: dict[str, Any] | None = None,
) -> Chat:
    """Upload the plugin, make a bot client and an admin room (admin, bot, a non-admin member),
    then create the instance configured for that room (`watch`: the watch settings, posting to
    that room)."""
    uploaded = await maubot.upload_plugin(mbp)
    if uploaded.get("id") != PLUGIN_ID:
        raise SandboxError(f"unexpected plugin upload answer: {uploaded}")
    bot = await synapse.register(unique("bdbot"), unique("pw"))
    admin = await synapse.register(unique("admin"), unique("pw"))
    stranger = await synapse.register(unique("guest"), unique("pw"))
    await maubot.put_client(bot, autojoin=True)
    async with MatrixUser(synapse.url, admin) as user:
        room = await user.create_room(invite=[bot.user_id, stranger.user_id], name="Bridge ops")
        await user.wait_joined(room, bot.user_id)
    await _join(synapse, stranger, room)
    instance_id = unique("bridgedoctor")
    config = instance_config(
        helper.socket_path, helper.token, admin.user_id, room, working_after, watch
    )
    instance = await maubot.put_instance(
        instance_id, plugin_id=PLUGIN_ID, primary_user=bot.user_id, config=config
    )
    if not instance.get("started"):
        raise SandboxError(f"plugin instance did not start: {instance}\n{maubot.log_tail()}")
    return Chat(synapse, bot, admin, stranger, room, instance_id)


async def ask(chat: Chat, who: Account, text: str, timeout: float = 60) -> tuple[str, Event]:
    """Send a command as `who`; return its event id and the bot's notice replying to it."""
    async with MatrixUser(chat.synapse.url, who) as user:
        command = await user.send_text(chat.room_id, text)
        reply = await user.wait_for_reply(
            chat.room_id,
            lambda e: is_notice(e) and replies_to(command)(e),
            sender=chat.bot.user_id,
            timeout=timeout,
        )
    return command, reply


# --- the demo -------------------------------------------------------------------------------

# "{code}" is filled in from the bot's last plan (its `!bridge confirm <code>` line).
DEMO: Sequence[tuple[str, str]] = (
    ("admin", "!bridge list"),
    ("admin", "!bridge check all"),
    ("admin", "!bridge check gmessages"),
    ("guest", "!bridge check gmessages"),
    ("admin", "!bridge check slack"),
    ("admin", "!bridge reset slack"),
    ("admin", "!bridge confirm {code}"),
    ("admin", "!bridge check slack"),
)
CODE_RE = re.compile(r"!bridge confirm ([a-z0-9]{6})\.")


def _print_exchange(who: str, text: str, reply: Event) -> None:
    print(f"\n{who}> {text}")
    for line in str(reply["content"].get("body", "")).splitlines():
        print(f"  bot| {line}")


async def _conversation(chat: Chat) -> None:
    people = {"admin": chat.admin, "guest": chat.stranger}
    code = ""
    for who, template in DEMO:
        text = template.format(code=code)
        _, reply = await ask(chat, people[who], text)
        _print_exchange(who, text, reply)
        found = CODE_RE.search(str(reply["content"].get("body", "")))
        code = found.group(1) if found else code


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def demo() -> int:
    """Boot everything in a temp dir, run the conversation, print it, tear everything down."""
    _stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="bd-chat-"))
    services: list[_Service] = []
    cluster: TempCluster | None = None
    try:
        print("Starting PostgreSQL, Synapse, maubot and bridgedoctor-helper ...", flush=True)
        cluster = TempCluster()
        pg = cluster.start()
        host = sample_fleet(workdir / "host", pg, "demo_", broken_extra=True)
        (workdir / "systemd").mkdir()
        systemd = fake_systemd(workdir / "systemd")  # systemd cannot run here
        for unit in ("gmessages", "whatsapp", "slack"):
            systemd.set(f"matrix-mautrix-{unit}.service", "active")
        helper = Helper(workdir / "helper", host, systemd=systemd)
        services.append(helper)
        helper.start()
        synapse = Synapse(workdir / "synapse")
        services.append(synapse)
        synapse.start()
        maubot = Maubot(workdir / "maubot", synapse)
        services.append(maubot)
        maubot.start()
        mbp = build_plugin(workdir / "dist")
        chat = asyncio.run(deploy(synapse, maubot, mbp, helper))
        print(f"Room {chat.room_id}: admin {chat.admin.user_id}, guest {chat.stranger.user_id}")
        asyncio.run(_conversation(chat))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; shutting down", file=sys.stderr)
        return 130
    except SandboxError as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):
            service.stop()
        if cluster is not None:
            cluster.stop()
        if os.environ.get("BRIDGEDOCTOR_E2E_KEEP"):
            print(f"kept work dir: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(demo())
