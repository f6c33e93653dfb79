"""Where MDAD's own PostgreSQL answers from the host: `db_host: auto` (the default).

Bridges reach `matrix-postgres:5432` on a Docker network; that name does not resolve on the host
and the container publishes no port by default. MDAD hosts set up from March 2026 on have the
server's socket directory on the host (`<root>/postgres/run`, mounted as /run/postgresql in the
container); older ones do not, and there the container's own address on its Docker network is
the way in (`docker inspect matrix-postgres`). Only URIs naming `matrix-postgres` are redirected:
an external database keeps the host its URI names.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import stat
import subprocess
import time
from pathlib import Path

AUTO = "auto"
MDAD_HOST = "matrix-postgres"
SOCKET_NAME = ".s.PGSQL.5432"
INSPECT_TIMEOUT = 10.0
# One discovery serves a whole `check all`; a restarted container gets a new address, so not longer.
CACHE_SECONDS = 10.0
_cache: dict[Path, tuple[float, str | None]] = {}


def socket_dir(root: Path) -> Path | None:
    """`<root>/postgres/run` when PostgreSQL's socket is in it (MDAD from March 2026)."""
    run = root / "postgres" / "run"
    try:
        return run if stat.S_ISSOCK((run / SOCKET_NAME).stat().st_mode) else None
    except OSError:
        return None


def container_address() -> str | None:
    """The `matrix-postgres` container's address on one of its Docker networks, if it runs."""
    found = _container_interface()
    return str(found.ip) if found is not None else None


def container_network() -> str | None:
    """That Docker network's subnet (`172.18.0.0/16`): what the helper's unit must allow to
    reach the container, whose own address changes when it is recreated (docs/SECURITY.md)."""
    found = _container_interface()
    return str(found.network) if found is not None else None


def _container_interface() -> ipaddress.IPv4Interface | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        r = subprocess.run(
            [docker, "inspect", MDAD_HOST], capture_output=True, text=True, timeout=INSPECT_TIMEOUT
        )
        info = json.loads(r.stdout) if r.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    for item in info if isinstance(info, list) else []:
        if not (isinstance(item, dict) and (item.get("State") or {}).get("Running")):
            continue
        networks = (item.get("NetworkSettings") or {}).get("Networks") or {}
        for net in networks.values() if isinstance(networks, dict) else []:
            ip = net.get("IPAddress") if isinstance(net, dict) else None
            # Docker's networks hand out IPv4 addresses unless IPv6 was set up by hand.
            if isinstance(ip, str) and ip.count(".") == 3 and ip.replace(".", "").isdigit():
                plen = net.get("IPPrefixLen")
                plen = plen if isinstance(plen, int) and 8 <= plen <= 32 else 32
                try:
                    return ipaddress.IPv4Interface(f"{ip}/{plen}")
                except ValueError:
                    continue
    return None


def discover(root: Path) -> str | None:
    """A db_host for MDAD's Postgres: its socket directory, else its container's address."""
    now = time.monotonic()
    hit = _cache.get(root)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    found = socket_dir(root)
    value = str(found) if found is not None else container_address()
    _cache[root] = (now, value)
    return value


def effective(db_host: str | None, uri_host: str, root: Path) -> str | None:
    """The db_host to use for one database URI: `auto` resolves only for matrix-postgres."""
    if db_host != AUTO:
        return db_host
    return discover(root) if uri_host == MDAD_HOST else None
