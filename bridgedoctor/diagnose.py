"""Wire probes to rules: the one entry point the CLI, the helper and tests use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import dbpin
from .dbpin import DbPin
from .facts import (
    BridgeFacts,
    ConfigFacts,
    DbFacts,
    HomeserverFacts,
    InventoryFacts,
    JournalFacts,
    ProbeError,
    RegistrationFacts,
    ServiceFacts,
    StoreScan,
    UnitFacts,
)
from .findings import BridgeReport, Finding, FleetReport
from .knowledge import NAME_RE, BridgeSpec, Knowledge, load
from .naming import Preference, decide
from .pin import fleet_pin
from .probes import database, host, journal, service, sqlite_read
from .probes.config import read_config
from .probes.registration import SYNAPSE_UNIT, read_homeserver, read_registration
from .proof import candidates
from .rules import RuleContext, evaluate
from .rules.prevention import select_files

Inventory = InventoryFacts | ProbeError | None
# A check_all answers for every bridge even when one hangs: each is cut off after this long.
BRIDGE_TIMEOUT = 25.0
log = logging.getLogger("bridgedoctor.diagnose")


@dataclass(frozen=True)
class Options:
    root: Path = Path("/matrix")
    systemd_dir: Path = Path("/etc/systemd/system")
    db_host: str | None = "auto"
    naming: Preference = "auto"
    try_keys: tuple[str, ...] = field(default=(), repr=False)
    reveal_keys: bool = False
    inventory: Path | None = None  # the admin's MDAD inventory directory, if on this host
    # Custom setups: bridge -> its own database and role (dbpin.py); MDAD's names otherwise.
    db_pins: Mapping[str, DbPin] = field(default_factory=dict)
    bridge_timeout: float = BRIDGE_TIMEOUT
    deep: bool = False  # verify every pickled row of the crypto store, not a sample


def lookup(name: str, kb: Knowledge) -> BridgeSpec | Finding:
    """The spec for a user-supplied bridge name, or the finding that explains why there is none."""
    known = ", ".join(sorted(kb.bridges))
    if not NAME_RE.fullmatch(name):
        return Finding(
            "bridge_unknown",
            "unknown",
            f"'{name[:40]}' is not a bridge name; use one of: {known}.",
        )
    if name in kb.not_bridges:
        return Finding("bridge_unknown", "unknown", kb.not_bridges[name])
    spec = kb.get(name) or kb.get(name.removeprefix("mautrix-"))
    if spec is None:
        return Finding(
            "bridge_unknown", "unknown", f"Unknown bridge '{name}'; known bridges: {known}."
        )
    return spec


@dataclass
class _FleetAsked:
    """What a fleet check asks once for every bridge: the units' states (one `systemctl
    show`) and the homeserver, the same for all of them."""

    states: asyncio.Future[dict[str, ServiceFacts | ProbeError]]
    homeserver: asyncio.Future[HomeserverFacts | ProbeError | None]

    @classmethod
    def start(cls, opts: Options, specs: list[BridgeSpec]) -> _FleetAsked:
        units = [
            f"{s.service}.service"
            for s in specs
            if (opts.systemd_dir / f"{s.service}.service").exists()
        ]
        if (opts.systemd_dir / SYNAPSE_UNIT).exists():
            units.append(SYNAPSE_UNIT)
        states = asyncio.ensure_future(service.show_many(units))
        return cls(states, asyncio.ensure_future(_homeserver(opts, states)))

    async def close(self) -> None:
        for f in (self.states, self.homeserver):
            f.cancel()
        await asyncio.gather(self.states, self.homeserver, return_exceptions=True)


async def _state(
    name: str, states: asyncio.Future[dict[str, ServiceFacts | ProbeError]] | None
) -> ServiceFacts | ProbeError:
    # shield: a bridge stopped at its deadline must not cancel what the others share.
    shown = await asyncio.shield(states) if states is not None else {}
    state = shown.get(name)
    return state if state is not None else await service.show(name)


async def unit_state(
    unit: UnitFacts | None,
    name: str,
    secrets: tuple[str, ...] = (),
    states: asyncio.Future[dict[str, ServiceFacts | ProbeError]] | None = None,
) -> tuple[ServiceFacts | ProbeError | None, JournalFacts | ProbeError | None]:
    """The unit's state (from `states` when a fleet check asked already) and its current
    run's lines; (None, None) when there is no unit."""
    if unit is None:
        return None, None
    state = await _state(name, states)
    if not isinstance(state, ServiceFacts):
        return state, None
    return state, await journal.read(state, known_secrets=secrets)


async def _homeserver(
    opts: Options, states: asyncio.Future[dict[str, ServiceFacts | ProbeError]] | None = None
) -> HomeserverFacts | ProbeError | None:
    if not (opts.systemd_dir / SYNAPSE_UNIT).exists():
        return await asyncio.to_thread(read_homeserver, opts.root, opts.systemd_dir)
    state = await _state(SYNAPSE_UNIT, states)
    return await asyncio.to_thread(read_homeserver, opts.root, opts.systemd_dir, state)


Scan = StoreScan | ProbeError | None


async def gather(
    spec: BridgeSpec, opts: Options, kb: Knowledge | None = None, asked: _FleetAsked | None = None
) -> BridgeFacts:
    base = opts.root / spec.dirname
    unit = host.read_unit(opts.systemd_dir / f"{spec.service}.service", opts.root)
    config_dir = unit.config_dir if unit and unit.config_dir else base / "config"
    data_dir = unit.data_dir if unit and unit.data_dir else base / "data"
    # Parsed here, on the loop: a config is small and capped, and while one bridge's database
    # connects the next one's config is parsed. Database work on SQLite goes to a thread.
    cfg = read_config(config_dir / "config.yaml", base)
    secrets = cfg.secret_values if isinstance(cfg, ConfigFacts) else ()
    target: database.PgTarget | database.SqliteTarget | ProbeError | None = None
    if isinstance(cfg, ConfigFacts):
        target = database.target_for(
            cfg.db_uri,
            data_dir=data_dir,
            config_dir=config_dir,
            base_dir=base,
            db_host=opts.db_host,
        )
        if isinstance(target, database.PgTarget):
            target = _pinned(spec, target, kb or load(), opts)
    # A SQLite store goes to its reader now (the first read starts the reader's fork server):
    # it is read while this check, and a fleet's other bridges, parse their files.
    started = (
        await sqlite_read.start(target.path, base)
        if isinstance(target, database.SqliteTarget)
        else None
    )

    async def db_probe() -> tuple[DbFacts | ProbeError | None, Scan]:
        if target is None or isinstance(target, ProbeError):
            return target, None
        assert isinstance(cfg, ConfigFacts)
        db = await (started.result() if started is not None else database.probe(target, base))
        scan: Scan = None
        if opts.deep and isinstance(db, DbFacts) and db.has_crypto_store:
            from .probes import store_scan  # --deep only: its worker and verifier load here

            keys = candidates(spec, cfg.pickle_key, list(opts.try_keys), kb or load())
            scan = await store_scan.scan(target, keys, base)
        return db, scan

    async def registration() -> RegistrationFacts | ProbeError:
        # On the loop like the config (small, capped): by the time this runs, the database
        # probe has sent its first packet. A thread per bridge cost more than the parse.
        return read_registration(config_dir / "registration.yaml", base)

    # The unit, its journal and the registration files are read while the database answers.
    try:
        (db, scan), (state, lines), reg, hs = await asyncio.gather(
            db_probe(),
            unit_state(unit, f"{spec.service}.service", secrets, asked.states if asked else None),
            registration(),
            asyncio.shield(asked.homeserver) if asked else _homeserver(opts),
        )
    finally:
        if started is not None:
            started.close()  # a check stopped at its deadline gives its read up, and its slot
    return BridgeFacts(
        spec=spec,
        base_dir=base,
        unit=unit,
        config=cfg,
        db=db,
        scan=scan,
        service=state,
        journal=lines,
        registration=reg,
        homeserver=hs,
    )


def _pinned(
    spec: BridgeSpec, target: database.PgTarget, kb: Knowledge, opts: Options
) -> database.PgTarget | ProbeError:
    """A check never connects to another bridge's database or role; on the bridge's own, the
    server must agree who we are (dbpin.verify). Other names (a custom setup) are read, with
    the role's powers checked."""
    j = dbpin.judge(spec, target.database, target.user, kb, opts.db_pins)
    if j.verdict == "foreign":
        return ProbeError("db_foreign", j.named(target.database, target.user))
    return replace(target, pin=j.pin)


async def inventory(opts: Options) -> Inventory:
    if opts.inventory is None:
        return None
    from .probes.inventory import read_inventory  # only with --inventory

    return await asyncio.to_thread(read_inventory, opts.inventory)


def _eras(inv: Inventory, cfg: ConfigFacts | ProbeError) -> frozenset[str]:
    if not isinstance(inv, InventoryFacts):
        return frozenset()
    domain = cfg.homeserver_domain if isinstance(cfg, ConfigFacts) else None
    files, _ = select_files(inv, domain)
    return frozenset().union(*(f.eras for f in files))


async def check(
    name: str, opts: Options, kb: Knowledge | None = None, inv: Inventory | bool = True
) -> BridgeReport:
    """`inv`: the inventory already read (check_all reads it once), or True to read it here."""
    kb = kb or load()
    spec = lookup(name, kb)
    if isinstance(spec, Finding):
        return BridgeReport(bridge=name[:40], findings=[spec])
    if spec.name not in host.discover(opts.root, opts.systemd_dir, kb):
        return BridgeReport(
            bridge=spec.name,
            findings=[
                Finding(
                    "bridge_not_found",
                    "unknown",
                    f"{spec.name} is not deployed under {opts.root}: neither "
                    f"{opts.root / spec.dirname / 'config' / 'config.yaml'} nor "
                    f"{opts.systemd_dir / (spec.service + '.service')} exists.",
                )
            ],
        )
    if inv is True:
        inv = await inventory(opts)
    assert not isinstance(inv, bool)
    return await _check_deployed(spec, opts, kb, inv)


async def _check_deployed(
    spec: BridgeSpec,
    opts: Options,
    kb: Knowledge,
    inv: Inventory,
    asked: _FleetAsked | None = None,
) -> BridgeReport:
    facts = await gather(spec, opts, kb, asked)
    ctx = RuleContext(
        kb=kb,
        naming=decide(spec, facts.unit, opts.naming, _eras(inv, facts.config)),
        try_keys=opts.try_keys,
        reveal_keys=opts.reveal_keys,
        inventory=inv,
    )
    return evaluate(facts, ctx)


async def check_all(opts: Options, kb: Knowledge | None = None) -> FleetReport:
    kb = kb or load()
    # Discovered once for the fleet: the names come from the table, so no lookup is needed.
    names = host.discover(opts.root, opts.systemd_dir, kb)
    inv = await inventory(opts)
    specs = [kb.bridges[n] for n in names]
    # Asked once for all: the units' states, the homeserver. (SQLite stores are read in
    # children forked from one fork server, not one interpreter each: probes/sqlite_read.py.)
    asked = _FleetAsked.start(opts, specs)
    try:
        reports = await asyncio.gather(*(_isolated(s, opts, kb, inv, asked) for s in specs))
    finally:
        await asked.close()
    return FleetReport(reports=list(reports), pin=fleet_pin(list(reports)))


async def _isolated(
    spec: BridgeSpec, opts: Options, kb: Knowledge, inv: Inventory, asked: _FleetAsked
) -> BridgeReport:
    """One bridge's check, which can neither fail nor stall the others' (a bridge's files and
    database are its container's to write)."""
    name = spec.name
    try:
        return await asyncio.wait_for(
            _check_deployed(spec, opts, kb, inv, asked), opts.bridge_timeout
        )
    except asyncio.TimeoutError:  # not yet the builtin on Python 3.10
        summary = (
            f"Checking {name} took longer than {opts.bridge_timeout:.0f} s and was stopped; "
            "the other bridges were checked."
        )
        return BridgeReport(bridge=name, findings=[Finding("check_timeout", "unknown", summary)])
    except Exception as e:  # noqa: BLE001 - one bridge's oddity must not hide the others
        log.exception("checking %s failed", name)
        summary = (
            f"Checking {name} failed unexpectedly ({type(e).__name__}); the other bridges were "
            "checked. The details are in the log."
        )
        return BridgeReport(bridge=name, findings=[Finding("check_failed", "unknown", summary)])
