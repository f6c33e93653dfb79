"""Typed view of the bridge knowledge table (data/bridges.yaml).

All bridge facts live in that one data file; this module only loads it and derives the names
MDAD builds from a role name (service, paths, variable prefixes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from .probes.bridgefile import parse_yaml

# Our package's own files (not importlib.resources: its import costs the CLI's start more than
# this whole table takes to read).
_DATA = Path(__file__).resolve().parent / "data"

Framework = Literal["bridgev2", "legacy-go", "python"]
KeySetting = Literal["variable", "extension", "none"]

# A role name as MDAD spells it; anything else is rejected before it reaches a path or a query.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


@dataclass(frozen=True)
class BridgeSpec:
    name: str
    framework: Framework
    image: str
    key_setting: KeySetting
    default_key: str | None
    legacy_keys: tuple[str, ...]
    rename_tag: str | None
    source: str
    compiled_key: str | None = None
    variable_since: str | None = None
    extension_since: str | None = None
    has_legacy_prefix: bool = True
    sqlite_file: str = ""
    generate_era: tuple[str, str] | None = None
    # Names MDAD gives the bridge's PostgreSQL database (and its role, the same name); more than
    # one where a role variable picks among them (meta-messenger's meta_mode).
    databases: tuple[str, ...] = ()
    program: str = ""

    @property
    def service(self) -> str:
        return f"matrix-mautrix-{self.name}"

    @property
    def dirname(self) -> str:
        return f"mautrix-{self.name}"

    @property
    def var_token(self) -> str:
        return self.name.replace("-", "_")

    @property
    def prefix_current(self) -> str:
        return f"matrix_bridge_mautrix_{self.var_token}_"

    @property
    def prefix_legacy(self) -> str | None:
        return f"matrix_mautrix_{self.var_token}_" if self.has_legacy_prefix else None

    @property
    def db_name(self) -> str:
        return f"matrix_mautrix_{self.var_token}"

    @property
    def db_names(self) -> tuple[str, ...]:
        return self.databases or (self.db_name,)


@dataclass(frozen=True)
class Knowledge:
    bridges: dict[str, BridgeSpec]
    known_keys: tuple[str, ...]
    not_bridges: dict[str, str]
    rename_date: str
    public_keys: frozenset[str] = field(default_factory=frozenset)

    def get(self, name: str) -> BridgeSpec | None:
        return self.bridges.get(name)


def _spec(name: str, raw: dict) -> BridgeSpec:
    pk = raw["pickle_key"]
    era = raw.get("generate_era")
    return BridgeSpec(
        name=name,
        framework=raw["framework"],
        image=raw["image"],
        key_setting=pk["setting"],
        default_key=raw.get("default_key"),
        legacy_keys=tuple(raw.get("legacy_keys") or ()),
        rename_tag=raw.get("rename_tag"),
        source=raw["source"],
        compiled_key=raw.get("compiled_key"),
        variable_since=pk.get("since"),
        extension_since=pk.get("extension_since"),
        has_legacy_prefix=raw.get("legacy_prefix", True),
        sqlite_file=raw.get("sqlite_file") or f"mautrix-{name}.db",
        generate_era=(str(era[0]), str(era[1])) if era else None,
        databases=tuple(raw.get("databases") or ()),
        program=raw.get("program") or f"mautrix-{name}",
    )


@lru_cache(maxsize=1)
def load() -> Knowledge:
    text = (_DATA / "bridges.yaml").read_text("utf-8")
    raw = parse_yaml(text)  # the same safe load as a bridge's file, built from events: faster
    bridges = {name: _spec(name, spec) for name, spec in raw["bridges"].items()}
    known = tuple(raw["known_keys"])
    # "generate" and "" are tried as literal keys; neither is a secret worth hiding.
    public = set(known) | {"generate", ""}
    for b in bridges.values():
        public.update(b.legacy_keys)
        public.update(k for k in (b.default_key, b.compiled_key) if k)
    return Knowledge(
        bridges=bridges,
        known_keys=known,
        not_bridges=dict(raw.get("not_bridges") or {}),
        rename_date=str(raw["rename_date"]),
        public_keys=frozenset(public),
    )
