"""Which `pg_dump` a full reset runs: the host's, or the one inside MDAD's `matrix-postgres`.

pg_dump refuses servers newer than itself. MDAD runs PostgreSQL 18 in the `matrix-postgres`
container, and Debian's and Ubuntu's own repositories have no client that new, so on a typical
host the only pg_dump of the right version is the container's own. MDAD's docs dump through it
(`docker exec ... matrix-postgres pg_dumpall`); we do the same for one database, connecting as
the bridge's own user (not MDAD's superuser env file: the dump needs no more than the bridge
has), to the host the bridge itself uses (`matrix-postgres` on its Docker network). The password
travels in the environment (`docker exec -e PGPASSWORD` copies it from ours), never in argv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..probes.database import PgTarget
from .errors import ResetError

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin/pg_dump"
MDAD_CONTAINER = "matrix-postgres"
DUMP_TIMEOUT = 600
_VERSION_RE = re.compile(r"\(PostgreSQL\) (\d+)")


@dataclass(frozen=True)
class Dumper:
    """How to run pg_dump: `argv` before the connection arguments, and where it runs."""

    argv: tuple[str, ...]
    where: str  # "host" or "container"

    @property
    def describe(self) -> str:
        if self.where == "container":
            return f"pg_dump inside the {MDAD_CONTAINER} container (docker exec)"
        return self.argv[0]


def host_pg_dump(server_major: int) -> str | None:
    """The newest host pg_dump whose own version is at least the server's, or None."""
    cands = [str(p) for p in Path("/").glob(PG_BIN_GLOB.lstrip("/"))]
    found = shutil.which("pg_dump")
    if found:
        cands.append(found)
    best: tuple[int, str] | None = None
    for exe in cands:
        major = _major(exe)
        if major is not None and major >= server_major and (best is None or major > best[0]):
            best = (major, exe)
    return best[1] if best else None


def _major(exe: str) -> int | None:
    # Asked, not guessed from the path: /usr/bin/pg_dump is Debian's wrapper, whose version is
    # that of the newest client installed, which may be older than the server.
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _VERSION_RE.search(r.stdout)
    return int(m.group(1)) if r.returncode == 0 and m else None


def major_of(server_version_num: int) -> int:
    """PostgreSQL's `server_version_num` (e.g. 180001 for 18.1, 90624 for 9.6.24) to its major."""
    return server_version_num // 10000


def choose(t: PgTarget, server_major: int) -> Dumper:
    """The host's pg_dump when it is new enough, else MDAD's container's; else a refusal."""
    exe = host_pg_dump(server_major)
    if exe is not None:
        return Dumper((exe,), "host")
    docker = shutil.which("docker")
    if docker is not None and t.uri_host == MDAD_CONTAINER:
        return Dumper(
            (docker, "exec", "-e", "PGPASSWORD", "-e", "PGSSLMODE", MDAD_CONTAINER), "container"
        )
    raise ResetError(
        f"no pg_dump for PostgreSQL {server_major} on this host (PATH, {PG_BIN_GLOB}) and the "
        f"database is not MDAD's {MDAD_CONTAINER} container to run one in; install "
        f"postgresql-client-{server_major}. Nothing was changed."
    )


def dump(d: Dumper, t: PgTarget, section: str, schema: str, out: Path) -> None:
    """One schema section of the bridge's database, written to `out` (not world-readable)."""
    env = {**os.environ, "PGPASSWORD": t.password, "PGSSLMODE": "require" if t.ssl else "prefer"}
    if d.where == "container":
        # Inside the container the bridge's own view of the server applies: matrix-postgres:5432.
        host, port, tool = t.uri_host, t.uri_port, ["pg_dump"]
    else:
        host, port, tool = t.host, t.port, []
    args = [*d.argv, *tool, "-h", host, "-p", str(port), "-U", t.user, "-d", t.database]
    args += ["--no-owner", "--no-privileges", f"--section={section}", "-n", schema]
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        try:
            r = subprocess.run(
                args, env=env, stdout=f, stderr=subprocess.PIPE, timeout=DUMP_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ResetError(
                f"pg_dump {section}: {type(e).__name__}; nothing was changed."
            ) from None
        f.flush()
        os.fsync(f.fileno())
    if r.returncode != 0:
        lines = r.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["failed"]
        raise ResetError(
            f"pg_dump {section} ({d.describe}): {lines[0][:200]}; nothing was changed."
        )
