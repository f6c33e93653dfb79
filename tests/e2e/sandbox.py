"""End-to-end sandbox: a real Synapse and a real maubot server on 127.0.0.1.

Process lifecycle (start/stop) is synchronous so that session-scoped pytest fixtures work with
any test event loop; everything that talks HTTP during a test is async and opens its own
short-lived aiohttp session, so no object here is bound to an event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import hmac
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = Path(os.environ.get("BRIDGEDOCTOR_SYNAPSE_VENV", REPO_ROOT / ".venv-synapse"))
SERVER_NAME = "localhost"

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class SandboxError(RuntimeError):
    pass


@dataclass(frozen=True)
class Account:
    user_id: str
    access_token: str
    device_id: str
    password: str


def unique(prefix: str) -> str:
    """A fresh Matrix-localpart-safe name, so tests sharing one server never collide."""
    return f"{prefix}{secrets.token_hex(4)}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w") as f:
        yaml.dump(dict(data), f)


def _die_with_parent() -> None:
    # If pytest itself is killed, fixture teardown never runs; don't leave servers behind.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Service:
    """A subprocess whose stdout+stderr go to a log file in its work dir."""

    name = "service"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=self.workdir,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, path: str, timeout: float) -> None:
        assert self.proc is not None
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise SandboxError(
                    f"{self.name} exited with code {self.proc.returncode} during startup; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as resp:
                    if resp.status == 200:
                        self.startup_seconds = time.monotonic() - started
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SandboxError(
                    f"{self.name} not ready after {timeout:.0f}s; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


class Synapse(_Service):
    name = "synapse"

    def __init__(self, workdir: Path, venv: Path = SYNAPSE_VENV) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir)
        self.python = venv / "bin" / "python"
        self.shared_secret = secrets.token_hex(16)
        self.config_path = workdir / "homeserver.yaml"

    def _env(self) -> dict[str, str]:
        # The test process may carry PYTHONPATH for the project venv; Synapse has its own venv.
        return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def write_config(self) -> None:
        many = {"per_second": 10000, "burst_count": 100000}
        log_config = self.workdir / "log.yaml"
        _write_yaml(
            log_config,
            {
                "version": 1,
                "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
                "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f"}},
                "root": {"level": "INFO", "handlers": ["console"]},
                "disable_existing_loggers": False,
            },
        )
        _write_yaml(
            self.config_path,
            {
                "server_name": SERVER_NAME,
                "public_baseurl": self.url + "/",
                "pid_file": str(self.workdir / "homeserver.pid"),
                "listeners": [
                    {
                        "port": self.port,
                        "bind_addresses": ["127.0.0.1"],
                        "type": "http",
                        "tls": False,
                        "x_forwarded": False,
                        "resources": [{"names": ["client"], "compress": False}],
                    }
                ],
                "database": {
                    "name": "sqlite3",
                    "args": {"database": str(self.workdir / "homeserver.db")},
                },
                "log_config": str(log_config),
                "media_store_path": str(self.workdir / "media_store"),
                "signing_key_path": str(self.workdir / "signing.key"),
                "macaroon_secret_key": secrets.token_hex(32),
                "form_secret": secrets.token_hex(32),
                "registration_shared_secret": self.shared_secret,
                "enable_registration": False,
                "report_stats": False,
                "trusted_key_servers": [],
                "suppress_key_server_warning": True,
                "presence": {"enabled": False},
                "rc_message": many,
                "rc_registration": many,
                "rc_login": {"address": many, "account": many, "failed_attempts": many},
                "rc_joins": {"local": many, "remote": many},
                "rc_joins_per_room": many,
                "rc_invites": {"per_room": many, "per_user": many, "per_issuer": many},
                "rc_room_creation": many,
                "rc_admin_redaction": many,
                "rc_3pid_validation": many,
                "rc_third_party_invite": many,
                "rc_media_create": many,
                "rc_delayed_event_mgmt": many,
                "rc_reports": many,
                "rc_key_requests": many,
                "rc_profile": many,
            },
        )

    def start(self, timeout: float = 60) -> None:
        if not self.python.exists():
            raise SandboxError(f"{self.python} missing: run scripts/setup-synapse-venv.sh")
        self.write_config()
        hs = [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)]
        gen = subprocess.run(
            [*hs, "--generate-keys"],
            cwd=self.workdir,
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if gen.returncode != 0:
            raise SandboxError(f"synapse --generate-keys failed:\n{gen.stdout}{gen.stderr}")
        self._spawn(hs, env=self._env())
        self._wait_ready("/_matrix/client/versions", timeout)

    async def register(self, username: str, password: str, admin: bool = False) -> Account:
        """Register via the shared-secret admin API (no login round trip needed)."""
        endpoint = self.url + "/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as http:
            async with http.get(endpoint) as resp:
                nonce = (await _json_or_raise(resp))["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            role = b"admin" if admin else b"notadmin"
            mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(), role]))
            body = {
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            async with http.post(endpoint, json=body) as resp:
                data = await _json_or_raise(resp)
        return Account(data["user_id"], data["access_token"], data["device_id"], password)


class Maubot(_Service):
    """A maubot server (`python -m maubot`) driven through its management API."""

    name = "maubot"
    api_prefix = "/_matrix/maubot/v1"

    def __init__(self, workdir: Path, synapse: Synapse, python: str = sys.executable) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir)
        self.synapse = synapse
        self.python = python
        self.admin_user = "admin"
        # maubot replaces the literal password "password" with a random one, so never use it.
        self.admin_password = secrets.token_hex(12)
        self.config_path = workdir / "config.yaml"
        self.db_path = workdir / "maubot.db"
        self._token: str | None = None

    def write_config(self) -> None:
        dirs = {name: self.workdir / name for name in ("plugins", "trash", "dbs")}
        for d in dirs.values():
            d.mkdir(exist_ok=True)
        _write_yaml(
            self.config_path,
            {
                "database": f"sqlite:{self.db_path}",
                "plugin_directories": {
                    "upload": str(dirs["plugins"]),
                    "load": [str(dirs["plugins"])],
                    "trash": str(dirs["trash"]),
                },
                "plugin_databases": {"sqlite": str(dirs["dbs"]), "postgres": None},
                "server": {
                    "hostname": "127.0.0.1",
                    "port": self.port,
                    "public_url": self.url,
                    "unshared_secret": secrets.token_hex(32),
                },
                "homeservers": {
                    SERVER_NAME: {"url": self.synapse.url, "secret": self.synapse.shared_secret}
                },
                "admins": {"root": "", self.admin_user: self.admin_password},
                "logging": {
                    "version": 1,
                    "formatters": {
                        "f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
                    },
                    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f"}},
                    "loggers": {
                        "maubot": {"level": "DEBUG"},
                        "mau": {"level": "DEBUG"},
                        "aiohttp": {"level": "INFO"},
                    },
                    "root": {"level": "INFO", "handlers": ["console"]},
                },
            },
        )

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        self._run(timeout)

    def restart(self, timeout: float = 60) -> None:
        """SIGTERM (plugins are stopped) and start again on the same config and databases."""
        self.stop()
        self._run(timeout)

    def _run(self, timeout: float) -> None:
        self._spawn([self.python, "-m", "maubot", "-c", str(self.config_path)])
        # The HTTP server is the last thing maubot starts; /features needs no auth.
        self._wait_ready(self.api_prefix + "/features", timeout)

    async def _api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        if self._token is None and path != "/auth/login":
            await self.login()
        hdrs = dict(headers or {})
        if self._token is not None:
            hdrs["Authorization"] = f"Bearer {self._token}"
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, self.url + self.api_prefix + path, json=json, data=data, headers=hdrs
            ) as resp,
        ):
            return await _json_or_raise(resp, f"maubot {method} {path}")

    async def login(self) -> str:
        data = await self._api(
            "POST",
            "/auth/login",
            json={"username": self.admin_user, "password": self.admin_password},
        )
        self._token = str(data["token"])
        return self._token

    async def upload_plugin(self, mbp: Path) -> dict[str, Any]:
        """Upload (or hot-replace) a plugin; running instances of it are restarted."""
        result: dict[str, Any] = await self._api(
            "POST",
            "/plugins/upload?allow_override=true",
            data=mbp.read_bytes(),
            headers={"Content-Type": "application/zip"},
        )
        return result

    async def put_client(
        self, account: Account, *, autojoin: bool = True, wait_synced: float = 30
    ) -> dict[str, Any]:
        """Create (or update) the maubot client for a bot account, then wait for its first sync."""
        result: dict[str, Any] = await self._api(
            "PUT",
            "/client/" + quote(account.user_id, safe=""),
            json={
                "homeserver": self.synapse.url,
                "access_token": account.access_token,
                "device_id": account.device_id,
                "enabled": True,
                "started": True,
                "sync": True,
                "autojoin": autojoin,
                "online": True,
                "displayname": "disable",
                "avatar_url": "disable",
            },
        )
        if wait_synced:
            await self.wait_client_synced(account.user_id, wait_synced)
        return result

    async def wait_client_synced(self, user_id: str, timeout: float = 30) -> None:
        """Wait until the client has completed its first /sync.

        maubot clients skip everything in their first sync (ignore_first_sync), including
        invites, so an invite sent too early is never auto-joined. The management API does not
        expose sync progress; the stored next_batch token in maubot's database does.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1) as db:
                    row = db.execute(
                        "SELECT next_batch FROM client WHERE id=?", (user_id,)
                    ).fetchone()
                if row and row[0]:
                    return
            except sqlite3.OperationalError:
                pass  # locked or not created yet
            if time.monotonic() > deadline:
                raise SandboxError(f"maubot client {user_id} did not sync within {timeout}s")
            await asyncio.sleep(0.1)

    async def put_instance(
        self,
        instance_id: str,
        *,
        plugin_id: str,
        primary_user: str,
        config: str = "",
        enabled: bool = True,
        started: bool = True,
    ) -> dict[str, Any]:
        """Create or update a plugin instance; `config` is the instance config as YAML text."""
        result: dict[str, Any] = await self._api(
            "PUT",
            "/instance/" + quote(instance_id, safe=""),
            json={
                "type": plugin_id,
                "primary_user": primary_user,
                "enabled": enabled,
                "started": started,
                "config": config,
            },
        )
        return result

    async def delete_instance(self, instance_id: str) -> None:
        await self._api("DELETE", "/instance/" + quote(instance_id, safe=""))


def build_mbp(plugin_dir: Path, out_path: Path, python: str = sys.executable) -> Path:
    """Build a plugin with `mbc build`, working around its quirks (see knowledge/maubot.md)."""
    out_path = out_path.resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.unlink(missing_ok=True)  # an existing file makes mbc prompt, then abort
    proc = subprocess.run(
        [python, "-m", "maubot.cli", "build", "-o", str(out_path), str(plugin_dir.resolve())],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    # mbc exits 0 on some failures (e.g. missing maubot.yaml): trust the file, not the code.
    if proc.returncode != 0 or not out_path.is_file():
        raise SandboxError(f"mbc build failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return out_path


async def _json_or_raise(resp: aiohttp.ClientResponse, what: str = "") -> Any:
    text = await resp.text()
    if resp.status >= 300:
        raise SandboxError(f"{what or resp.method + ' ' + str(resp.url)} -> {resp.status}: {text}")
    return await resp.json(content_type=None) if text else {}


# --- predicates on raw event dicts --------------------------------------------------------


def is_notice(evt: Event) -> bool:
    return evt.get("type") == "m.room.message" and evt["content"].get("msgtype") == "m.notice"


def replies_to(event_id: str) -> Predicate:
    def pred(evt: Event) -> bool:
        rel = evt.get("content", {}).get("m.relates_to", {})
        return bool(rel.get("m.in_reply_to", {}).get("event_id") == event_id)

    return pred


def reaction_to(event_id: str, key: str | None = None) -> Predicate:
    def pred(evt: Event) -> bool:
        rel = evt.get("content", {}).get("m.relates_to", {})
        return (
            evt.get("type") == "m.reaction"
            and rel.get("event_id") == event_id
            and (key is None or rel.get("key") == key)
        )

    return pred


def edit_of(event_id: str) -> Predicate:
    def pred(evt: Event) -> bool:
        rel = evt.get("content", {}).get("m.relates_to", {})
        return bool(rel.get("rel_type") == "m.replace" and rel.get("event_id") == event_id)

    return pred


class MatrixUser:
    """Minimal client-server API client for a test user; use as `async with`."""

    def __init__(self, homeserver_url: str, account: Account) -> None:
        self.base = homeserver_url + "/_matrix/client/v3"
        self.account = account
        self.user_id = account.user_id
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MatrixUser:
        self._http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.account.access_token}"}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _req(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._http is None:
            raise SandboxError("MatrixUser used outside 'async with'")
        async with self._http.request(method, self.base + path, **kwargs) as resp:
            return await _json_or_raise(resp, f"{self.user_id} {method} {path}")

    async def create_room(self, invite: Sequence[str] = (), name: str | None = None) -> str:
        body: dict[str, Any] = {"preset": "private_chat", "invite": list(invite)}
        if name:
            body["name"] = name
        return str((await self._req("POST", "/createRoom", json=body))["room_id"])

    async def joined_members(self, room_id: str) -> set[str]:
        data = await self._req("GET", f"/rooms/{quote(room_id)}/joined_members")
        return set(data.get("joined", {}))

    async def wait_joined(self, room_id: str, user_id: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while user_id not in await self.joined_members(room_id):
            if time.monotonic() > deadline:
                raise SandboxError(f"{user_id} did not join {room_id} within {timeout}s")
            await asyncio.sleep(0.1)

    async def send(self, room_id: str, event_type: str, content: Mapping[str, Any]) -> str:
        path = f"/rooms/{quote(room_id)}/send/{event_type}/{secrets.token_hex(8)}"
        return str((await self._req("PUT", path, json=dict(content)))["event_id"])

    async def send_text(self, room_id: str, body: str, msgtype: str = "m.text") -> str:
        return await self.send(room_id, "m.room.message", {"msgtype": msgtype, "body": body})

    async def send_edit(self, room_id: str, event_id: str, new_body: str) -> str:
        """Element-style edit: fallback body with '* ' prefix plus m.new_content."""
        return await self.send(
            room_id,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": f"* {new_body}",
                "m.new_content": {"msgtype": "m.text", "body": new_body},
                "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
            },
        )

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send(room_id, "m.reaction", content)

    async def recent_events(self, room_id: str, limit: int = 100) -> list[Event]:
        """The latest `limit` timeline events, oldest first."""
        data = await self._req(
            "GET", f"/rooms/{quote(room_id)}/messages", params={"dir": "b", "limit": str(limit)}
        )
        return list(reversed(data.get("chunk", [])))

    async def wait_for_reply(
        self, room_id: str, predicate: Predicate, *, sender: str, timeout: float = 20
    ) -> Event:
        """Poll until an event from `sender` (the bot) matches `predicate`; return the first."""
        deadline = time.monotonic() + timeout
        while True:
            events = [e for e in await self.recent_events(room_id) if e.get("sender") == sender]
            for evt in events:
                if predicate(evt):
                    return evt
            if time.monotonic() > deadline:
                seen = "\n".join(f"  {e.get('type')} {e.get('content')}" for e in events)
                raise SandboxError(
                    f"no matching event from {sender} in {room_id} within {timeout}s; "
                    f"events from it:\n{seen or '  (none)'}"
                )
            await asyncio.sleep(0.2)
