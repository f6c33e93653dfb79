"""The hosts the bench measures: MDAD-shaped configs and units over real crypto stores.

- `pg`: all 13 bridges MDAD knows, in PostgreSQL; whatsapp's store holds `rows` inbound Megolm
  sessions and `rows / 10` Olm sessions.
- `mid`: whatsapp alone with a tenth of that (the 100k point of the memory figures).
- `empty`: whatsapp alone with a store holding the account and one session of each kind.
- `sqlite`: the 11 bridges MDAD can run on SQLite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import bulk, floors
from bridgedoctor.diagnose import Options
from tests.fixtures import mdad
from tests.support.fleet import DB_PASSWORD, Host, flavour, mdad_default_key
from tests.support.pg import PgServer
from tests.support.store import StoreSpec

BIG = "whatsapp"


def key_of(bridge: str) -> str:
    # gmessages keeps its pre-bridgev2 key: one broken bridge, as on a real host.
    return "go.mau.fi/mautrix-gmessages" if bridge == "gmessages" else mdad_default_key(bridge)


@dataclass
class Fleet:
    host: Host
    db_host: str | None
    prefix: str = ""  # of the PostgreSQL database names

    @property
    def big_db(self) -> str:
        return self.prefix + mdad.db_name(BIG)

    @property
    def opts(self) -> Options:
        return Options(root=self.host.root, systemd_dir=self.host.systemd, db_host=self.db_host)

    def cli_args(self) -> list[str]:
        return self.host.args()

    def floor_bridges(self) -> list[floors.FloorBridge]:
        out = []
        for b in sorted(self.host.stores):
            base = self.host.root / f"mautrix-{b}"
            out.append(floors.FloorBridge(base / "config/config.yaml", base / "data", key_of(b)))
        return out


def build_pg(tmp: Path, server: PgServer, rows: int, prefix: str = "") -> Fleet:
    host = Host.at(tmp / "pg", server)
    for b in mdad.BRIDGES:
        host.add(b, StoreSpec(b, flavour=flavour(b), account_key=key_of(b)), db_prefix=prefix)
    fill(server, prefix + mdad.db_name(BIG), rows)
    return Fleet(host, f"{server.host}:{server.port}", prefix)


def build_one(tmp: Path, server: PgServer, name: str, rows: int, prefix: str) -> Fleet:
    host = Host.at(tmp / name, server)
    host.add(BIG, StoreSpec(BIG, account_key=key_of(BIG)), db_prefix=prefix)
    if rows:
        fill(server, prefix + mdad.db_name(BIG), rows)
    return Fleet(host, f"{server.host}:{server.port}", prefix)


def build_sqlite(tmp: Path) -> Fleet:
    host = Host.at(tmp / "sqlite")
    for b in mdad.BRIDGES:
        if mdad.sqlite_filename(b) is not None:
            spec = StoreSpec(b, flavour=flavour(b), account_key=key_of(b))
            host.add(b, spec, engine="sqlite")
    return Fleet(host, None)


def fill(server: PgServer, dbname: str, rows: int) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(
            host=server.host, port=server.port, user=dbname, password=DB_PASSWORD, database=dbname
        )
        try:
            await bulk.fill_pg(conn, rows, rows // 10, key_of(BIG))
        finally:
            await conn.close()

    asyncio.run(go())
