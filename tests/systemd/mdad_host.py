"""An MDAD host under real systemd: what tests/systemd builds on tests/support/nspawn.py.

- The helper's venv is made from Debian's own /usr/bin/python3 with the commands docs/helper.md
  gives (once per session, `debian_venv`), and bound read-only at /opt/bridgedoctor.
- PostgreSQL stands where MDAD's container is: 127.0.0.N:5432, its socket directory mounted as
  /matrix/postgres/run (hosts from March 2026) or not at all (older hosts: the fake docker's
  `inspect matrix-postgres` gives its address).
- The host has no PostgreSQL client of its own (/usr/lib/postgresql is inaccessible inside): a
  full reset must dump through `docker exec matrix-postgres pg_dump`, which the fake docker runs
  with the real client bound at /opt/pgclient.
- gmessages on PostgreSQL and whatsapp on SQLite, with MDAD's exact units, owned by the matrix
  user (uid/gid 991) with MDAD's modes; stand-in bridges stay up until stopped.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures import mdad
from tests.support.fleet import Host, mdad_default_key
from tests.support.nspawn import Machine
from tests.support.pg import PgServer, TempCluster, bindir
from tests.support.reset_env import state
from tests.support.store import StoreSpec

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "helper.md"
UID = GID = mdad.DEFAULT_UID
VENV = "/opt/bridgedoctor"
SRC = "/src/bridgedoctor"
HELPER = f"{VENV}/bin/bridgedoctor-helper"
PG_BRIDGE, SQLITE_BRIDGE = "gmessages", "whatsapp"


def sh_blocks(heading: str, text: str | None = None) -> list[list[str]]:
    """The ```sh blocks under a docs/helper.md heading, as command lines (continuations joined)."""
    text = text if text is not None else DOCS.read_text()
    start = text.index(heading)
    nxt = re.search(r"^#{2,3} ", text[start + len(heading) :], re.M)
    section = text[start : start + len(heading) + (nxt.start() if nxt else len(text))]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    out = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", "", block)
        out.append(
            [
                ln.strip()
                for ln in joined.splitlines()
                if ln.strip() and not ln.strip().startswith("#")
            ]
        )
    return out


def install_commands() -> list[str]:
    """docs/helper.md's install: venv, pip install, `bridgedoctor-helper install`."""
    return [
        c.replace("/path/to/bridgedoctor", SRC) for c in sh_blocks("## Install on an MDAD host")[0]
    ]


def build_venv(make: Callable[..., Machine], workdir: Path) -> Path:
    """Run the docs' venv and pip lines with Debian's python3 inside a container; the result is
    a venv at /opt/bridgedoctor (host side: the returned directory)."""
    src, opt = workdir / "src", workdir / "opt-bridgedoctor"
    src.mkdir(parents=True)
    opt.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "bridgedoctor", src / "bridgedoctor", ignore=shutil.ignore_patterns("__pycache__")
    )
    m = make("venv", binds={VENV: opt, SRC: src})
    m.boot()
    try:
        for cmd in install_commands():
            if "bridgedoctor-helper install" in cmd:
                continue
            m.sh(cmd, timeout=900, env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        version = m.run(f"{VENV}/bin/python", "-c", "import sys; print(sys.version.split()[0])")
        (opt / ".python-version").write_text(version.stdout)
    finally:
        m.shutdown()
    return opt


def free_loopback_5432() -> str:
    """A 127.0.0.N where port 5432 is free: the test server stands at MDAD's container port."""
    start = random.randrange(2, 255)  # other suites running at once pick other addresses
    for n in [*range(start, 255), *range(2, start)]:
        host = f"127.0.0.{n}"
        with socket.socket() as s:
            try:
                s.bind((host, 5432))
            except OSError:
                continue
            return host
    raise RuntimeError("no 127.0.0.N with port 5432 free")


def start_pg() -> tuple[TempCluster, PgServer]:
    cluster = TempCluster(host=free_loopback_5432(), port=5432, own_socket_dir=True)
    return cluster, cluster.start()


@dataclass
class MdadHost:
    m: Machine
    host: Host
    pg: PgServer

    def state(self, bridge: str) -> dict[str, object]:
        """Every table's (rows, sha256) and the data directory digest, read from outside."""
        return state(self.host, bridge)

    def ask(self, op: str, **fields: str) -> dict:
        """One request over the helper's socket, as the matrix user (maubot's uid); a helper
        that cannot be reached (or dies mid-request) is {"ok": False, "code": "unreachable"}."""
        code = (
            "import asyncio, json, sys\n"
            "from bridgedoctor.protocol import ProtocolError, Request, call\n"
            "token = open('/etc/bridgedoctor/token').read().strip()\n"
            "req = Request(token, sys.argv[1], **json.loads(sys.argv[2]))\n"
            "sock = '/run/bridgedoctor/helper.sock'\n"
            "try:\n"
            "    result = asyncio.run(call(sock, req, 600))\n"
            "    print(json.dumps({'ok': True, 'result': result}))\n"
            "except ProtocolError as e:\n"
            "    print(json.dumps({'ok': False, 'code': e.code, 'message': e.message}))\n"
            "except OSError as e:\n"
            "    print(json.dumps({'ok': False, 'code': 'unreachable', 'message': repr(e)}))\n"
        )
        r = self.m.run(
            "runuser", "-u", "matrix", "--", f"{VENV}/bin/python", "-c", code, op,
            json.dumps(fields), timeout=700,
        )  # fmt: skip
        return json.loads(r.stdout)

    def wait_answering(self) -> None:
        self.m.wait_for(lambda: self.ask("list")["ok"], what="the helper answering")

    def reset(self, bridge: str, mode: str) -> dict:
        plan = self.ask("reset_plan", bridge=bridge, mode=mode)
        assert plan["ok"], plan
        p = plan["result"]
        done = self.ask(
            "reset", bridge=bridge, mode=mode, plan=p["id"], digest=p["digest"],
            requested_by="@admin:example.com",
        )  # fmt: skip
        assert done["ok"], done
        return {"plan": p, **done["result"]}

    def restore(self, bridge: str, backup: str) -> dict:
        plan = self.ask("restore_plan", bridge=bridge, backup=backup)
        assert plan["ok"], plan
        done = self.ask(
            "restore", bridge=bridge, backup=backup, digest=plan["result"]["digest"],
            requested_by="@admin:example.com",
        )  # fmt: skip
        assert done["ok"], done
        return done["result"]

    def start_calls(self, container: str) -> int:
        """How many times the unit's ExecStart ran the bridge (fake docker's own log)."""
        return sum(c[:3] == ["start", "--attach", container] for c in self.m.docker_calls())


def make_host(
    make: Callable[..., Machine],
    tmp: Path,
    venv: Path,
    pg: PgServer,
    *,
    socket_dir: bool = True,
    tag: str = "mdad",
    gmessages_key: str = "mautrix.bridge.e2ee",
    binds: dict[str, Path] | None = None,
) -> MdadHost:
    """`gmessages_key`: the key its store is pickled with (MDAD's default: it runs); `binds`:
    more host directories inside (e.g. /run/bridgedoctor, for a client outside)."""
    root = tmp / "matrix"
    host = Host(root=root, systemd=tmp / "units", pg=pg)
    host.add(
        PG_BRIDGE, StoreSpec(PG_BRIDGE, account_key=gmessages_key, recovery_key=True), unit=False
    )
    host.add(
        SQLITE_BRIDGE,
        StoreSpec(SQLITE_BRIDGE, account_key=mdad_default_key(SQLITE_BRIDGE), recovery_key=True),
        engine="sqlite",
        unit=False,
    )
    for bridge in (PG_BRIDGE, SQLITE_BRIDGE):
        media = root / f"mautrix-{bridge}" / "data" / "media"
        media.mkdir(parents=True, exist_ok=True)
        (media / "blob.bin").write_bytes(bytes(range(256)) * 8)
        _own_like_mdad(root / f"mautrix-{bridge}")
    binds = {"/matrix": root, **(binds or {})}
    if socket_dir:
        (root / "postgres" / "run").mkdir(parents=True)
        binds["/matrix/postgres/run"] = Path(pg.socket_dir or "")
    m = make(
        tag,
        binds=binds,
        ro_binds={VENV: venv, "/opt/pgclient": bindir().parent},
        persist=["/var/lib/bridgedoctor"],
        inaccessible=["/usr/lib/postgresql"],
    )
    m.fake_postgres(
        bindir="/opt/pgclient/bin", host=pg.host, socket_dir="/matrix/postgres/run", ip=pg.host
    )
    units = [
        m.bridge_unit(PG_BRIDGE, postgres=True),
        m.bridge_unit(SQLITE_BRIDGE, postgres=False),
    ]
    for bridge in (PG_BRIDGE, SQLITE_BRIDGE):
        m.standin(f"matrix-mautrix-{bridge}", [f"INF {bridge} stand-in bridge started"])
    m.boot()
    m.add_user("matrix", UID, GID)
    m.systemctl("enable", "--now", *units)
    return MdadHost(m, host, pg)


def _own_like_mdad(base: Path) -> None:
    """The matrix user's files: directories 0700, files 0600 (MDAD's bridge containers)."""
    for p in [base, *base.rglob("*")]:
        shutil.chown(p, UID, GID)
        p.chmod(0o700 if p.is_dir() else 0o600)
