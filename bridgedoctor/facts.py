"""Facts gathered by the probes. Plain data: no I/O, no judgement."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .knowledge import BridgeSpec
from .proof import Candidate

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
    homeserver_domain: str | None = None  # homeserver.domain: MDAD's matrix_domain


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


VarsKind = Literal["literal", "template", "vault", "other", "unparsable"]


@dataclass(frozen=True)
class VarsValue:
    """One value of the admin's vars.yml, as far as it can be judged without Ansible."""

    # template: holds {{ }} or {% %}; vault: !vault-encrypted; other: not a string;
    # unparsable: an extension YAML that is not YAML as written (Jinja around it, most likely)
    kind: VarsKind
    text: str = field(repr=False)  # a literal may be a secret key: never print it
    line: int = 0  # 1-based line in the file


@dataclass(frozen=True)
class VarsFile:
    path: Path
    domain: VarsValue | None  # matrix_domain
    # The pickle key each variable that can set one sets: *_bridge_encryption_pickle_key itself,
    # or encryption.pickle_key inside *_configuration_extension_yaml (absent if it sets none).
    # Nothing else of the file is kept: it holds the server's secrets.
    values: dict[str, VarsValue]
    # Which MDAD naming the file's bridge variables use: "current" (matrix_bridge_mautrix_*)
    # and/or "legacy" (matrix_mautrix_*).
    eras: frozenset[str]


@dataclass(frozen=True)
class InventoryFacts:
    path: Path
    files: tuple[VarsFile, ...]


@dataclass(frozen=True)
class TableScan:
    """Every pickled row of one table, checked (`check --deep`). Counts per candidate key index."""

    table: str
    kind: str  # olm_session, megolm_inbound, megolm_outbound, secret
    rows: int
    opened: dict[int, int]  # MAC and content valid under candidate i
    bad_plaintext: dict[int, int]  # MAC valid under candidate i, content not a valid object
    unknown: int  # no candidate's MAC matches
    corrupt: int  # not a libolm pickle at all


@dataclass(frozen=True)
class StoreScan:
    candidates: tuple[Candidate, ...]  # the keys tried, in the order the indexes refer to
    tables: tuple[TableScan, ...]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


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
    scan: StoreScan | ProbeError | None = None  # only with --deep
