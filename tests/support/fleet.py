"""Sample MDAD hosts: rendered configs and units plus real crypto stores, for tests and the demo."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridgedoctor.dbpin import DbPin
from tests.fixtures import mdad

from .pg import PgServer
from .store import BuiltStore, StoreSpec, write_postgres, write_sqlite

# Fake but realistic secrets: tests assert none of them ever reaches the output.
DB_PASSWORD = "Db-Pa55word-7f3c9e1d"
SECRETS = (DB_PASSWORD, mdad.FAKE_AS_TOKEN, mdad.FAKE_HS_TOKEN, mdad.FAKE_DOUBLE_PUPPET_AS_TOKEN)


@dataclass
class Host:
    root: Path
    systemd: Path
    pg: PgServer | None = None
    stores: dict[str, BuiltStore] = field(default_factory=dict)
    # Prefixed database names (one PostgreSQL serves many tests): each bridge's own, as a
    # custom setup would allow it (--db-name, helper.yaml databases:).
    databases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def at(cls, tmp: Path, pg: PgServer | None = None) -> Host:
        return cls(root=tmp / "matrix", systemd=tmp / "systemd", pg=pg)

    def args(self, *extra: str) -> list[str]:
        """Common CLI arguments for this host."""
        out = ["--root", str(self.root), "--systemd-dir", str(self.systemd)]
        if self.pg is not None:
            out += ["--db-host", f"{self.pg.host}:{self.pg.port}"]
        for bridge, name in self.databases.items():
            out += ["--db-name", f"{bridge}={name}"]
        return out + list(extra)

    def pins(self) -> dict[str, DbPin]:
        return {b: DbPin(n, n) for b, n in self.databases.items()}

    def add(
        self,
        bridge: str,
        store: StoreSpec | None,
        *,
        engine: Literal["postgres", "sqlite"] = "postgres",
        pickle_key: str | None = None,
        encryption_allow: bool = True,
        image_tag: str | None = None,
        unit: bool = True,
        config_text: str | None = None,
        db_prefix: str = "",
    ) -> BuiltStore | None:
        """Deploy one bridge as MDAD would and give it the store described by `store`."""
        uri = mdad.mdad_db_uri(bridge, engine=engine, password=DB_PASSWORD)
        if engine == "postgres" and db_prefix:
            uri = uri.replace(f"/{mdad.db_name(bridge)}", f"/{db_prefix}{mdad.db_name(bridge)}")
        text = config_text or mdad.render_config(
            bridge, db_uri=uri, pickle_key=pickle_key, encryption_allow=encryption_allow
        )
        unit_text = (
            mdad.render_unit(
                bridge,
                image_tag=image_tag or mdad.PINNED_TAGS[bridge],
                root="/matrix",
                postgres=engine == "postgres",
            )
            if unit
            else None
        )
        base = mdad.write_host(
            self.root, self.systemd, bridge, config_text=text, unit_text=unit_text
        )
        if store is None:
            return None
        if engine == "sqlite":
            built = write_sqlite(base / "data" / (mdad.sqlite_filename(bridge) or "x.db"), store)
        else:
            assert self.pg is not None, "a postgres-backed bridge needs the pg fixture"
            name = db_prefix + mdad.db_name(bridge)
            built = asyncio.run(write_postgres(self.pg, name, name, DB_PASSWORD, store))
            if db_prefix:
                self.databases[bridge] = name
        self.stores[bridge] = built
        return built

    def add_broken_gmessages_healthy_whatsapp(self, db_prefix: str) -> None:
        """The classic pair: gmessages pickled with its pre-bridgev2 key (broken under MDAD's
        default today) and a whatsapp whose key is MDAD's default."""
        self.add(
            "gmessages",
            StoreSpec("gmessages", account_key="go.mau.fi/mautrix-gmessages"),
            db_prefix=db_prefix,
        )
        self.add(
            "whatsapp",
            StoreSpec("whatsapp", account_key=mdad_default_key("whatsapp")),
            db_prefix=db_prefix,
        )


def mdad_default_key(bridge: str) -> str:
    """The key MDAD renders (or the bridge compiles in) for a bridge today."""
    from bridgedoctor.knowledge import load

    spec = load().bridges[bridge]
    return spec.default_key or spec.compiled_key or ""


def sqlite_store(path: Path) -> Path:
    """A whatsapp store under MDAD's default key, written at `path` (its directories made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sqlite(path, StoreSpec("whatsapp", account_key=mdad_default_key("whatsapp")))
    return path


def flavour(bridge: str) -> Literal["go", "python"]:
    return "python" if bridge == "googlechat" else "go"
