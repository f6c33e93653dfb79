"""Where a bridge lives: its unit, data directory and database target, read as `check` does,
then pinned: the database must be the bridge's own (dbpin.py) and the data directory and SQLite
store real, inside the bridge directory, and the same after the stop (paths.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .. import dbpin
from ..diagnose import Options, lookup
from ..facts import ConfigFacts, ProbeError
from ..findings import Finding
from ..knowledge import BridgeSpec, load
from ..probes import database, host
from ..probes.config import read_config
from . import paths
from .errors import ResetError


@dataclass(frozen=True)
class Bridge:
    spec: BridgeSpec
    unit: str
    base_dir: Path
    data_dir: Path
    config_dir: Path
    db: database.PgTarget | database.SqliteTarget
    data_pin: paths.Pin | None = None
    store_pin: paths.Pin | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def after_stop(self, whole_tree: bool, was_active: bool) -> None:
        """The unit is stopped: refuse (and start it again) if a path moved meanwhile."""
        if self.data_pin is not None:
            paths.after_stop(
                self.base_dir, self.data_pin, self.store_pin, whole_tree, self.unit, was_active
            )


def resolve(name: str, opts: Options) -> Bridge:
    kb = load()
    spec = lookup(name, kb)
    if isinstance(spec, Finding):
        raise ResetError(spec.summary, usage=True)
    base = opts.root / spec.dirname
    unit = host.read_unit(opts.systemd_dir / f"{spec.service}.service", opts.root)
    config_dir = unit.config_dir if unit and unit.config_dir else base / "config"
    data_dir = unit.data_dir if unit and unit.data_dir else base / "data"
    cfg = read_config(config_dir / "config.yaml", base)
    if isinstance(cfg, ProbeError):
        raise ResetError(cfg.message, usage=True)
    assert isinstance(cfg, ConfigFacts)
    target = database.target_for(
        cfg.db_uri, data_dir=data_dir, config_dir=config_dir, base_dir=base, db_host=opts.db_host
    )
    if isinstance(target, ProbeError):
        raise ResetError(target.message, usage=True)
    store = None
    if isinstance(target, database.PgTarget):
        target = _own_database(spec, target, opts)
    else:
        store = paths.pin_file(base, target.path)
    return Bridge(
        spec,
        f"{spec.service}.service",
        base,
        data_dir,
        config_dir,
        target,
        data_pin=paths.pin_dir(base, data_dir),
        store_pin=store,
    )


def _own_database(spec: BridgeSpec, t: database.PgTarget, opts: Options) -> database.PgTarget:
    """Resets, restores and backups touch only the bridge's own database, as its own role."""
    j = dbpin.judge(spec, t.database, t.user, load(), opts.db_pins)
    if j.pin is None:
        raise ResetError(j.refusal(spec.name, t.database, t.user) + "; nothing was changed.")
    if not dbpin.host_allowed(t.host, j.pin, opts.db_host):
        raise ResetError(
            f"{spec.name}'s config.yaml names the server {dbpin.short(t.host)}, not MDAD's "
            f"{dbpin.MDAD_HOST}; set db_host (--db-host) to where PostgreSQL is, or name the "
            "host in the database entry; nothing was changed."
        )
    return replace(t, pin=j.pin)
