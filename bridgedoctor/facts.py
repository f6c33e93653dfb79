"""Facts gathered by the probes. Plain data: no I/O, no judgement."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: the SQLite reader's child imports this, and starts fast
    from .knowledge import BridgeSpec
    from .proof import Candidate

Layout = Literal["bridgev2", "legacy-go", "python"]


@dataclass(frozen=True)
class UnitFacts:
    path: Path
    image: str | None = None  # the name: registry (with its port) and path
    tag: str | None = None
    digest: str | None = None  # "sha256:<64 hex>" for an image pinned by content
    config_dir: Path | None = None  # host side of the dst=/config mount, re-rooted
    data_dir: Path | None = None
    config_read_only: bool = False
    no_update: bool = False
    # every bind mount: container path -> host path (re-rooted)
    mounts: tuple[tuple[str, Path], ...] = ()


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
    appservice: AppserviceFacts | None = None
    homeserver_address: str | None = None
    msc4190: bool | None = None  # encryption.msc4190; None where the layout has no such field
    self_sign: bool | None = None
    # double_puppet.secrets (bridgev2): server -> form of the value, never the value itself
    double_puppet: tuple[tuple[str, DoublePuppetForm], ...] = ()
    # Every secret value found (tokens, shared secrets, the DB password): only so that the
    # journal probe can scrub them from log lines. Never printed, never compared.
    secret_values: tuple[str, ...] = field(default=(), repr=False, compare=False)


DoublePuppetForm = Literal["as_token", "shared_secret", "empty"]


@dataclass(frozen=True)
class AppserviceFacts:
    """What must agree between config.yaml, registration.yaml and the homeserver. Tokens are
    kept only as digests (token_digest), so equality can be checked without holding them."""

    id: str | None
    address: str | None
    as_token: str | None  # a digest
    hs_token: str | None  # a digest


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
class RegistrationFacts:
    path: Path
    appservice: AppserviceFacts  # address is the registration's `url`
    msc4190: bool | None  # io.element.msc4190
    mtime: float  # seconds since the epoch: compared with the homeserver's start


@dataclass(frozen=True)
class HomeserverFacts:
    """The Synapse MDAD runs: which registrations it loads, from where, since when."""

    config: Path
    app_service_files: tuple[str, ...]  # container paths, e.g. /matrix-mautrix-x-registration.yaml
    mounts: dict[str, Path]  # container path -> host path (re-rooted), from its unit
    started_at: float | None = None  # seconds since the epoch, when its current run began


@dataclass(frozen=True)
class ServiceFacts:
    """`systemctl show` of a unit, as plain values."""

    unit: str
    load_state: str  # loaded, not-found, ...
    active_state: str  # active, activating, deactivating, inactive, failed
    sub_state: str  # running, auto-restart, start-pre, dead, failed, exited, ...
    result: str  # success, exit-code, signal, core-dump, timeout, start-limit-hit, ...
    exit_code: str  # ExecMainCode: exited, killed, dumped, or "" before any run
    exit_status: int | None  # ExecMainStatus: exit status or signal number
    restarts: int  # NRestarts: automatic restarts since the last manual start
    main_start_mono: int  # ExecMainStartTimestampMonotonic (µs); 0 if never started this boot
    active_enter_mono: int  # ActiveEnterTimestampMonotonic (µs)
    age: float | None  # seconds since the current run's main process started, None if none
    invocation: str = ""  # InvocationID

    @property
    def running(self) -> bool:
        return self.active_state == "active" and self.sub_state == "running"

    @property
    def exit_text(self) -> str:
        """'exit status 16', 'killed by signal 9', or '' when nothing has ended yet."""
        if self.exit_status is None or not self.exit_code:
            return ""
        return exit_text(self.exit_code, self.exit_status)


def exit_text(code: str, status: int) -> str:
    return f"exit status {status}" if code == "exited" else f"killed by signal {status}"


Level = Literal["panic", "fatal", "error", "warning", "info", "debug", "trace", "none"]


@dataclass(frozen=True)
class LogLine:
    """One line a bridge logged, already scrubbed of secrets and ANSI escapes."""

    level: Level
    text: str  # the whole line as shown to the admin (message and fields)
    message: str  # the message part alone, for matching
    mono: int = 0  # journal monotonic timestamp (µs)
    detail: tuple[str, ...] = ()  # continuation lines (a Python traceback)
    at: float = 0.0  # wall-clock time the journal received it (seconds since the epoch)


@dataclass(frozen=True)
class JournalFacts:
    """The bridge's own lines since its main process last started, oldest first (bounded).
    `previous`: the run before, for when the current one is too young to have said anything."""

    unit: str
    lines: tuple[LogLine, ...]
    previous: tuple[LogLine, ...] = ()
    read_mono: int = 0  # when it was read (µs, monotonic): how fresh each line is
    # How the newest run ended, from systemd's own journal message: ("exited", 16), ("killed",
    # 9). systemctl show forgets it once the next start begins (ExecStartPre running).
    last_exit: tuple[str, int] | None = None
    truncated: bool = False  # the run has more lines than were read; these are the last ones


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
    # None below: not probed (no unit, not on this host, or an older caller)
    service: ServiceFacts | ProbeError | None = None
    journal: JournalFacts | ProbeError | None = None
    registration: RegistrationFacts | ProbeError | None = None
    homeserver: HomeserverFacts | ProbeError | None = None
