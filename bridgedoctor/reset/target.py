"""Where a bridge lives: its unit, data directory and database target, read as `check` does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..diagnose import Options, lookup
from ..facts import ConfigFacts, ProbeError
from ..findings import Finding
from ..knowledge import BridgeSpec, load
from ..probes import database, host
from ..probes.config import read_config
from .errors import ResetError


@dataclass(frozen=True)
class Bridge:
    spec: BridgeSpec
    unit: str
    base_dir: Path
    data_dir: Path
    config_dir: Path
    db: database.PgTarget | database.SqliteTarget

    @property
    def name(self) -> str:
        return self.spec.name


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
    return Bridge(spec, f"{spec.service}.service", base, data_dir, config_dir, target)
