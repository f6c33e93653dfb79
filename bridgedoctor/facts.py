"""Facts gathered by the probes. Plain data: no I/O, no judgement."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .knowledge import BridgeSpec

Layout = Literal["bridgev2", "legacy-go", "python"]


@dataclass(frozen=True)
class UnitFacts:
    path: Path
    image: str | None = None
    tag: str | None = None
    config_dir: Path | None = None  # host side of the dst=/config mount, re-rooted
    data_dir: Path | None = None
    config_read_only: bool = False
    no_update: bool = False


@dataclass(frozen=True)
class ConfigFacts:
    path: Path
    layout: Layout
    encryption_allow: bool
    pickle_key: str | None  # the configured value; None where the layout has no such field
    db_type: str | None
    db_uri: str = field(repr=False)  # holds the DB password: never print it
    env_config_prefix: str | None = None


@dataclass(frozen=True)
class StoredAccount:
    account_id: str
    device_id: str
    pickle: bytes = field(repr=False)


@dataclass(frozen=True)
class DbFacts:
    kind: Literal["postgres", "sqlite"]
    location: str  # printable: host/db or file path, never credentials
    tables: frozenset[str]
    versions: dict[str, int]
    owner: str | None
    accounts: tuple[StoredAccount, ...]
    # pickled rows sampled per kind: olm_session, megolm_inbound, megolm_outbound, secret
    samples: dict[str, tuple[bytes, ...]]

    @property
    def was_migrated(self) -> bool:
        return "database_was_migrated" in self.tables

    @property
    def old_tables(self) -> list[str]:
        return sorted(t for t in self.tables if t.endswith("_old"))

    @property
    def has_crypto_store(self) -> bool:
        return "crypto_account" in self.tables


@dataclass(frozen=True)
class ProbeError:
    code: str  # config_unreadable, config_missing, db_unreachable, db_unsupported, ...
    message: str


@dataclass(frozen=True)
class BridgeFacts:
    spec: BridgeSpec
    base_dir: Path
    unit: UnitFacts | None
    config: ConfigFacts | ProbeError
    db: DbFacts | ProbeError | None  # None: not probed (config unreadable)
