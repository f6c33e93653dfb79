"""The bridge's registration.yaml (what the homeserver is meant to load) and the homeserver's side:
which registrations Synapse lists in `app_service_config_files`, mounted from where, since when.

registration.yaml is written into the bridge's config directory, which the bridge's container can
write: it is read as untrusted input, like config.yaml. Synapse's homeserver.yaml is MDAD's, but
holds secrets and can be large: only `app_service_config_files` is kept, under a size cap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..facts import HomeserverFacts, ProbeError, RegistrationFacts, ServiceFacts
from .bridgefile import load_bridge_yaml
from .config import _get, appservice_facts
from .host import read_unit

MAX_REGISTRATION_BYTES = 256 * 1024
MAX_HOMESERVER_BYTES = 4 * 1024 * 1024
SYNAPSE_CONFIG = ("synapse", "config", "homeserver.yaml")  # under the MDAD root
SYNAPSE_UNIT = "matrix-synapse.service"


def read_registration(path: Path, base: Path | None = None) -> RegistrationFacts | ProbeError:
    """registration.yaml, read as untrusted input (probes/bridgefile.py) below the bridge's
    directory `base`."""
    tree = load_bridge_yaml(path, base, what="registration", max_bytes=MAX_REGISTRATION_BYTES)
    if isinstance(tree, ProbeError):
        return tree
    if not isinstance(tree, dict):
        return ProbeError("registration_unreadable", f"{path} does not hold a YAML mapping.")
    try:
        mtime = os.lstat(path).st_mtime
    except OSError:
        mtime = 0.0
    msc4190 = tree.get("io.element.msc4190")
    return RegistrationFacts(
        path=path,
        appservice=appservice_facts(tree, address_key="url"),
        msc4190=msc4190 if isinstance(msc4190, bool) else None,
        mtime=mtime,
    )


def container_path(dirname: str) -> str:
    """Where MDAD mounts a bridge's registration inside the homeserver's container."""
    return f"/matrix-{dirname}-registration.yaml"


def read_homeserver(
    root: Path, systemd_dir: Path, service: ServiceFacts | ProbeError | None = None
) -> HomeserverFacts | ProbeError | None:
    """Synapse's appservice list under the MDAD root; None when this host runs no MDAD Synapse
    (another homeserver, or none here): then nothing can be said about loaded registrations."""
    path = root.joinpath(*SYNAPSE_CONFIG)
    if not path.exists() and not path.is_symlink():
        return None
    # Same reader as a bridge's files: no links followed, a size cap counted while reading.
    tree = load_bridge_yaml(
        path, root / SYNAPSE_CONFIG[0], what="homeserver", max_bytes=MAX_HOMESERVER_BYTES
    )
    if isinstance(tree, ProbeError):
        return tree
    if not isinstance(tree, dict):
        return ProbeError("homeserver_unreadable", f"{path} does not hold a YAML mapping.")
    files = _get(tree, "app_service_config_files")
    unit = read_unit(systemd_dir / SYNAPSE_UNIT, root)
    started = None
    if isinstance(service, ServiceFacts) and service.running and service.age is not None:
        started = time.time() - service.age
    return HomeserverFacts(
        config=path,
        app_service_files=tuple(f for f in files if isinstance(f, str))
        if isinstance(files, list)
        else (),
        mounts=dict(unit.mounts) if unit is not None else {},
        started_at=started,
    )
