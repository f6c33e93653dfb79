"""Read a bridge's config.yaml in the three layouts MDAD renders."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from ..facts import AppserviceFacts, ConfigFacts, DoublePuppetForm, ProbeError
from ..pickle import fingerprint
from ..render.neutral import one_line
from .bridgefile import load_bridge_yaml


def _get(tree: object, *path: str) -> object:
    for key in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def token_digest(value: object) -> str | None:
    """A token as a printable digest: equality can be checked, the token cannot be read back."""
    return fingerprint(value) if isinstance(value, str) and value else None


def appservice_facts(section: object, address_key: str = "address") -> AppserviceFacts:
    """id, address and token digests from config.yaml's `appservice:` (or a registration)."""
    return AppserviceFacts(
        id=_str(_get(section, "id")),
        address=_str(_get(section, address_key)),
        as_token=token_digest(_get(section, "as_token")),
        hs_token=token_digest(_get(section, "hs_token")),
    )


def _double_puppet(secrets: object) -> tuple[tuple[str, DoublePuppetForm], ...]:
    if not isinstance(secrets, dict):
        return ()
    out: list[tuple[str, DoublePuppetForm]] = []
    for server, value in secrets.items():
        if not isinstance(value, str) or not value:
            out.append((str(server), "empty"))
        elif value.startswith("as_token:"):
            out.append((str(server), "as_token"))
        else:
            out.append((str(server), "shared_secret"))
    return tuple(out)


SENTINELS = frozenset({"disable", "generate"})  # provisioning's off switch, mautrix's "make one"


def _secret_values(tree: dict) -> tuple[str, ...]:
    """Every secret a log line could echo: tokens, shared secrets, the DB URI's password."""
    found: list[str] = []
    for path in (
        ("appservice", "as_token"),
        ("appservice", "hs_token"),
        ("provisioning", "shared_secret"),
        ("bridge", "provisioning", "shared_secret"),
        ("bridge", "login_shared_secret"),
        ("public_media", "signing_key"),
        ("direct_media", "server_key"),
        ("encryption", "pickle_key"),
    ):
        value = _get(tree, *path)
        if isinstance(value, str):
            found.append(value.removeprefix("as_token:"))
    for secrets in (
        _get(tree, "double_puppet", "secrets"),
        _get(tree, "bridge", "login_shared_secret_map"),
    ):
        if isinstance(secrets, dict):
            found += [v.removeprefix("as_token:") for v in secrets.values() if isinstance(v, str)]
    for uri in (
        _get(tree, "database", "uri"),
        _get(tree, "appservice", "database"),
        _get(tree, "appservice", "database", "uri"),
    ):
        if isinstance(uri, str) and "://" in uri and "@" in uri:
            creds = uri.split("://", 1)[1].rsplit("@", 1)[0]
            if ":" in creds:
                password = creds.split(":", 1)[1]
                # As written (percent-encoded) and as the bridge uses it: a driver's error
                # can echo either.
                found += [password, unquote(password)]
    # The words that switch a setting off or ask for a new value are no secrets; scrubbing
    # them would blank the word from every log line.
    return tuple(dict.fromkeys(v for v in found if v and v not in SENTINELS))


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
            **_common(tree),
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
            msc4190=_bool(_get(tree, "bridge", "encryption", "msc4190")),
            **_common(tree),
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
        msc4190=_bool(_get(tree, "encryption", "msc4190")),
        self_sign=_bool(_get(tree, "encryption", "self_sign")),
        double_puppet=_double_puppet(_get(tree, "double_puppet", "secrets")),
        **_common(tree),
    )


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _common(tree: dict) -> dict:
    """What every layout has in the same place: the appservice and the homeserver address."""
    return {
        "appservice": appservice_facts(tree.get("appservice")),
        "homeserver_address": _str(_get(tree, "homeserver", "address")),
        "secret_values": _secret_values(tree),
    }
