"""Read a bridge's config.yaml in the three layouts MDAD renders."""

from __future__ import annotations

from pathlib import Path

from ..facts import ConfigFacts, ProbeError
from ..render.neutral import one_line
from .bridgefile import load_bridge_yaml


def _get(tree: object, *path: str) -> object:
    for key in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def read_config(path: Path, base: Path | None = None) -> ConfigFacts | ProbeError:
    """config.yaml, read as untrusted input (probes/bridgefile.py) below the bridge's
    directory `base` (default: the file's own directory)."""
    tree = load_bridge_yaml(path, base, what="config")
    if isinstance(tree, ProbeError):
        return tree
    if not isinstance(tree, dict):
        return ProbeError("config_unreadable", f"{path} does not hold a YAML mapping.")
    return _facts(path, tree)


def _facts(path: Path, tree: dict) -> ConfigFacts | ProbeError:
    domain = _get(tree, "homeserver", "domain")
    domain = domain if isinstance(domain, str) and domain else None
    appservice_db = _get(tree, "appservice", "database")
    if isinstance(appservice_db, str):
        # mautrix-python: URL string under appservice, encryption under bridge, key compiled in.
        return ConfigFacts(
            path=path,
            layout="python",
            encryption_allow=bool(_get(tree, "bridge", "encryption", "allow")),
            pickle_key=None,
            db_type=None,
            db_uri=appservice_db,
            homeserver_domain=domain,
        )
    if isinstance(appservice_db, dict):
        # legacy mautrix-go `bridge` framework: key compiled into the binary.
        uri = appservice_db.get("uri")
        if not isinstance(uri, str):
            return ProbeError("config_unreadable", f"{path} has no appservice.database.uri.")
        return ConfigFacts(
            path=path,
            layout="legacy-go",
            encryption_allow=bool(_get(tree, "bridge", "encryption", "allow")),
            pickle_key=None,
            db_type=str(appservice_db.get("type") or ""),
            db_uri=uri,
            homeserver_domain=domain,
        )
    db = tree.get("database")
    uri = _get(db, "uri")
    if not isinstance(uri, str):
        return ProbeError(
            "config_unreadable",
            f"{path} has no database URI (database.uri or appservice.database).",
        )
    key = _get(tree, "encryption", "pickle_key")
    prefix = tree.get("env_config_prefix")
    return ConfigFacts(
        path=path,
        layout="bridgev2",
        encryption_allow=bool(_get(tree, "encryption", "allow")),
        # bridgev2's upgrader treats a missing or non-string value like "generate".
        pickle_key=key if isinstance(key, str) else "generate",
        db_type=str(_get(db, "type") or ""),
        db_uri=uri,
        env_config_prefix=one_line(prefix, 64) if isinstance(prefix, str) and prefix else None,
        homeserver_domain=domain,
    )
