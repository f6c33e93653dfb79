"""A throwaway PostgreSQL cluster for tests, started by the tests themselves.

Set BRIDGEDOCTOR_TEST_PG to a superuser DSN (postgres://user:pw@host:port/db) to use an existing
server instead. As root, the cluster runs as an unprivileged system user (initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    socket_dir: str | None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgres://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def as_superuser(self, database: str, *sqls: str) -> None:
        """Run `sqls` in `database` as the cluster's superuser: what a test sets up that only a
        superuser may (an event trigger, a row policy on a bridge's own table)."""
        import asyncio

        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(self.dsn(database))
            try:
                for sql in sqls:
                    await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())


def bindir() -> Path:
    """The newest PostgreSQL server/client binaries on this machine."""
    for cand in [os.environ.get("PG_BINDIR", "")] + sorted(
        (str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True
    ):
        if cand and (Path(cand) / "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb) not found: install postgresql "
        "or set BRIDGEDOCTOR_TEST_PG to an existing server's superuser DSN."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class TempCluster:
    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, own_socket_dir: bool = False
    ) -> None:
        """`host`/`port`: e.g. 127.0.0.N:5432, to stand where MDAD's container is (tests/systemd);
        `own_socket_dir`: the socket alone in <tmp>/run (to mount as MDAD's /matrix/postgres/run)."""
        self.bindir = bindir()
        self.tmp = Path(tempfile.mkdtemp(prefix="bd-pg-"))
        self.data = self.tmp / "data"
        self.socket_dir = self.tmp / "run" if own_socket_dir else self.tmp
        self.host = host
        self.port = port or _free_port()
        self.password = secrets.token_hex(12)
        self.runas: str | None = None
        if os.geteuid() == 0:
            self.runas = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
            if self.runas is None:
                raise RuntimeError("running as root but no 'postgres' or 'nobody' user exists")
            pw = pwd.getpwnam(self.runas)
            os.chmod(self.tmp, 0o755)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        if own_socket_dir:
            self.socket_dir.mkdir(mode=0o755)
            if self.runas:
                os.chown(self.socket_dir, pw.pw_uid, pw.pw_gid)

    def start(self) -> PgServer:
        pwfile = self.tmp / "pw"
        pwfile.write_text(self.password)
        if self.runas:
            pw = pwd.getpwnam(self.runas)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        _run_as(
            self.runas,
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "bdadmin",
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )
        opts = (
            f"-c listen_addresses={self.host} -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} -c fsync=off -c max_connections=200"
        )
        _run_as(
            self.runas,
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.tmp / "log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    break
            time.sleep(0.1)
        return PgServer(self.host, self.port, "bdadmin", self.password, str(self.socket_dir))

    def stop(self) -> None:
        try:
            _run_as(
                self.runas,
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            )
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def from_env() -> PgServer | None:
    """BRIDGEDOCTOR_TEST_PG, and BRIDGEDOCTOR_TEST_PG_SOCKET when that server's socket directory
    is known (scripts/mutation sets both: the tests that connect over the socket then run too)."""
    dsn = os.environ.get("BRIDGEDOCTOR_TEST_PG")
    if not dsn:
        return None
    p = urlsplit(dsn)
    return PgServer(
        p.hostname or "127.0.0.1",
        p.port or 5432,
        p.username or "postgres",
        p.password or "",
        os.environ.get("BRIDGEDOCTOR_TEST_PG_SOCKET") or None,
    )
