"""A host with one compromised bridge, for the hostile-bridge suite.

The world is MDAD's shape: bridges under <root>/matrix with MDAD-rendered configs and units, their
stores in a real PostgreSQL reached through its socket directory with trust authentication (as
MDAD's postgres image sets up local connections) under MDAD's exact database and role names, or
in real SQLite files; the real helper (`python -m bridgedoctor.helper`) as a root subprocess on
its socket, resets allowed, with the fake systemctl first on its PATH.

The attacker is the gmessages bridge's container: a process with an unprivileged uid of its own
(ATTACKER), whose only files are gmessages' config/ and data/ (and its own database). Every move
it makes runs as that uid through setpriv, so it physically cannot touch another bridge's files:
the victims' directories belong to another uid and are closed to it. `on_stop` makes a move
happen inside `systemctl stop`, exactly when the container's SIGTERM handler would run.

`outside()` is everything the attacker must not be able to change through the helper: every file
of the other bridges, root's own files and the unit files (content, type, mode, owner, link
target), and every table of every other database in the cluster (row count and sha256 over its
rows in a fixed order) plus the roles. Tests compare it before and after each attack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.fixtures import mdad
from tests.support.fleet import DB_PASSWORD, mdad_default_key
from tests.support.pg import PgServer
from tests.support.reset_env import Systemd, fake_systemd
from tests.support.store import StoreSpec, write_postgres, write_sqlite

ATTACKER = 64_991  # the compromised container's uid (MDAD's matrix user is a system uid too)
VICTIM = 64_992  # owns the other bridges' directories, so the attacker cannot reach them
EVIL = "gmessages"
TOKEN = "hostile-" + "ab" * 24
ADMIN = "@admin:example.com"
SECRET = "root-only-S3CR3T-7d1f"  # in root-only files; must never reach an answer or a log
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
UNIT = f"matrix-mautrix-{EVIL}.service"


def supported() -> str | None:
    if os.geteuid() != 0:
        return "the hostile suite plays two uids: it needs root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing"
    return None


@dataclass
class World:
    root: Path
    pg: PgServer
    engine: str  # the attacker's store: postgres or sqlite
    sd: Systemd = field(init=False)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = self.root / "matrix"
        self.units = self.root / "systemd"
        self.secrets = self.root / "root-only"
        self.run_dir = self.root / "run"
        self.backups = self.root / "backups"
        self.log_path = self.run_dir / "helper.log"
        for d in (self.matrix, self.units, self.run_dir):
            d.mkdir(parents=True, mode=0o711)
        self.secrets.mkdir(mode=0o700)
        (self.secrets / "authorized_keys").write_text(f"ssh-ed25519 AAAA{SECRET} admin@host\n")
        (self.secrets / "service.yaml").write_text(
            f"database:\n  uri: postgres://bdadmin:{SECRET}@matrix-postgres/{SECRET}\n"
            f"encryption:\n  pickle_key: {SECRET}\n"
        )
        for p in self.secrets.iterdir():
            p.chmod(0o600)
        self.sd = fake_systemd(self.run_dir)
        for b in ("whatsapp", "signal", EVIL):
            self.sd.set(f"matrix-mautrix-{b}.service", "active")

    # --- building ------------------------------------------------------------------------------

    def deploy(self) -> None:
        asyncio.run(self._reset_cluster())
        self._bridge("whatsapp", "postgres", VICTIM)
        self._bridge("signal", "sqlite", VICTIM)
        self._bridge(EVIL, self.engine, ATTACKER)
        data = self.base(EVIL) / "data"
        (data / "media").mkdir(exist_ok=True)
        (data / "media" / "blob.bin").write_bytes(bytes(range(256)) * 8)
        for p in [self.base(EVIL), *self.base(EVIL).rglob("*")]:
            os.lchown(p, ATTACKER, ATTACKER)

    def _bridge(self, bridge: str, engine: str, owner: int) -> None:
        uri = mdad.mdad_db_uri(bridge, engine=engine, password=DB_PASSWORD)
        config = mdad.render_config(bridge, db_uri=uri)
        unit = mdad.render_unit(
            bridge,
            image_tag=mdad.PINNED_TAGS[bridge],
            root="/matrix",
            postgres=engine == "postgres",
        )
        base = mdad.write_host(self.matrix, self.units, bridge, config_text=config, unit_text=unit)
        spec = StoreSpec(bridge, account_key=mdad_default_key(bridge), recovery_key=True)
        if engine == "sqlite":
            write_sqlite(base / "data" / (mdad.sqlite_filename(bridge) or "x.db"), spec)
        else:
            name = mdad.db_name(bridge)
            asyncio.run(write_postgres(self.pg, name, name, DB_PASSWORD, spec))
        for p in [base, *base.rglob("*")]:
            os.lchown(p, owner, owner)
        base.chmod(0o700 if owner == VICTIM else 0o750)

    async def _reset_cluster(self) -> None:
        admin = await asyncpg.connect(self.pg.dsn())
        try:
            for (name,) in await admin.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'matrix_%'"
            ):
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.execute("DROP DATABASE IF EXISTS bystander WITH (FORCE)")
            await admin.execute("CREATE DATABASE bystander")
        finally:
            await admin.close()
        c = await asyncpg.connect(self.pg.dsn("bystander"))
        try:
            await c.execute("CREATE TABLE precious (id int PRIMARY KEY, v text)")
            await c.execute(
                "INSERT INTO precious SELECT g, md5(g::text) FROM generate_series(1, 50) g"
            )
        finally:
            await c.close()

    def base(self, bridge: str) -> Path:
        return self.matrix / f"mautrix-{bridge}"

    def config(self, bridge: str = EVIL) -> Path:
        return self.base(bridge) / "config" / "config.yaml"

    def store(self, bridge: str = EVIL) -> Path:
        return self.base(bridge) / "data" / (mdad.sqlite_filename(bridge) or "x.db")

    # --- the attacker --------------------------------------------------------------------------

    def _argv(self, code: str) -> list[str]:
        return [
            "setpriv", f"--reuid={ATTACKER}", f"--regid={ATTACKER}", "--clear-groups",
            "--no-new-privs", "--", PYTHON, "-c", textwrap.dedent(code),
        ]  # fmt: skip

    def attack(self, code: str, timeout: float = 60, stdin: bytes = b"") -> str:
        """Run Python as the attacker's uid in its bridge directory; its stdout."""
        r = subprocess.run(
            self._argv(code), cwd=self.base(EVIL), input=stdin, capture_output=True,
            timeout=timeout,
        )  # fmt: skip
        assert r.returncode == 0, f"the attacker's move failed: {r.stderr.decode()}"
        return r.stdout.decode()

    def attack_in_background(self, code: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._argv(code), cwd=self.base(EVIL), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def on_stop(self, code: str) -> None:
        """The attacker's move, made while `systemctl stop` of its unit runs."""
        hook = self.sd.state / f"{UNIT}.on-stop"
        script = (
            "#!/bin/sh\ncd "
            + str(self.base(EVIL))
            + "\nexec "
            + " ".join(_sh(a) for a in self._argv(code))
        )
        hook.write_text(script + "\n")
        hook.chmod(0o755)

    def write_config(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.attack(
            """
            import os, sys
            p = 'config/config.yaml'
            if os.path.lexists(p):
                os.unlink(p)
            open(p, 'wb').write(sys.stdin.buffer.read())
            """,
            stdin=data,
        )

    def evil_sql(self, *sqls: str) -> None:
        """Statements the attacker runs in its own database, as its own role (it has the
        password: it is in its config)."""

        async def go() -> None:
            c = await asyncpg.connect(
                host=self.pg.socket_dir, port=self.pg.port, user=mdad.db_name(EVIL),
                database=mdad.db_name(EVIL),
            )  # fmt: skip
            try:
                for sql in sqls:
                    await c.execute(sql)
            finally:
                await c.close()

        asyncio.run(go())

    # --- the helper ----------------------------------------------------------------------------

    @property
    def sock(self) -> Path:
        return self.run_dir / "h.sock"

    def helper_config(self, **overrides: Any) -> Path:
        token = self.run_dir / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        cfg = {
            "root": str(self.matrix),
            "systemd_dir": str(self.units),
            "db_host": f"{self.pg.socket_dir}:{self.pg.port}",
            "socket": str(self.sock),
            "token_file": str(token),
            "backup_dir": str(self.backups),
            "allow_reset": True,
            "request_timeout": 60,
            **overrides,
        }
        path = self.run_dir / "helper.yaml"
        path.write_text(json.dumps(cfg))  # JSON is YAML
        return path

    def start(self, **overrides: Any) -> None:
        env = {**os.environ, **self.sd.env()}
        cmd = [sys.executable, "-m", "bridgedoctor.helper", "--config"]
        cmd.append(str(self.helper_config(**overrides)))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd="/")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"helper exited: {self.log()}"
            try:
                if self.ask("list")["ok"]:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"helper did not come up: {self.log()}")

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ask(self, op: str, timeout: float = 120, **fields: Any) -> dict[str, Any]:
        line = json.dumps({"v": 1, "token": TOKEN, "op": op, **fields}).encode() + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.sock))
            s.sendall(line)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def check(self, bridge: str = EVIL) -> dict[str, Any]:
        answer = self.ask("check", bridge=bridge)
        assert answer["ok"], answer
        return answer["result"]

    def reset(self, mode: str = "full") -> dict[str, Any]:
        """Plan, then confirm as the admin would: the answer of whichever refused, or the run's."""
        plan = self.ask("reset_plan", bridge=EVIL, mode=mode)
        if not plan["ok"]:
            return plan
        p = plan["result"]
        return self.ask(
            "reset", bridge=EVIL, mode=mode, plan=p["id"], digest=p["digest"], requested_by=ADMIN
        )

    def restore(self, ident: str) -> dict[str, Any]:
        plan = self.ask("restore_plan", bridge=EVIL, backup=ident)
        if not plan["ok"]:
            return plan
        return self.ask(
            "restore",
            bridge=EVIL,
            backup=ident,
            digest=plan["result"]["digest"],
            requested_by=ADMIN,
        )

    def alive(self) -> None:
        """The helper still runs and still answers for the bridges the attacker cannot reach."""
        assert self.proc is not None and self.proc.poll() is None, self.log()
        assert self.ask("list")["ok"]
        for victim in ("whatsapp", "signal"):
            report = self.check(victim)
            assert report["status"] == "ok", report
        assert SECRET not in self.log()

    # --- what must not change -------------------------------------------------------------------

    def outside(self) -> dict[str, Any]:
        files: dict[str, Any] = {}
        evil = str(self.base(EVIL))
        for top in (self.matrix, self.secrets, self.units):
            files[str(top)] = _entry(top)
            for d, dirs, names in os.walk(top):
                dirs[:] = sorted(x for x in dirs if os.path.join(d, x) != evil)
                for n in sorted(dirs + names):
                    files[os.path.join(d, n)] = _entry(Path(d, n))
        return {"files": files, "db": asyncio.run(self._databases())}

    async def _databases(self) -> dict[str, Any]:
        admin = await asyncpg.connect(self.pg.dsn())
        try:
            names = [
                r[0]
                for r in await admin.fetch(
                    "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"
                )
                if r[0] != mdad.db_name(EVIL)
            ]
            roles = [tuple(r) for r in await admin.fetch(
                "SELECT rolname, rolsuper, rolcanlogin, rolpassword FROM pg_authid ORDER BY 1"
            )]  # fmt: skip
        finally:
            await admin.close()
        out: dict[str, Any] = {"roles": roles}
        for name in names:
            out[name] = await _tables(self.pg.dsn(name))
        return out


async def _tables(dsn: str) -> dict[str, tuple[int, str]]:
    c = await asyncpg.connect(dsn)
    try:
        tables = await c.fetch(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        out = {}
        for schema, table in tables:
            q = f'"{schema}"."{table}"'
            h = hashlib.sha256()
            rows = await c.fetch(f"SELECT t::text AS r FROM {q} t ORDER BY 1")
            for r in rows:
                h.update(r["r"].encode() + b"\n")
            out[f"{schema}.{table}"] = (len(rows), h.hexdigest())
        return out
    finally:
        await c.close()


def _entry(p: Path) -> tuple[Any, ...]:
    st = os.lstat(p)
    kind = stat.S_IFMT(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        what = os.readlink(p)
    elif stat.S_ISREG(st.st_mode):
        what = hashlib.sha256(p.read_bytes()).hexdigest()
    else:
        what = ""
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)


def _sh(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="bd-hostile-", dir="/tmp"))
    root.chmod(0o711)
    return root
