"""The helper's YAML configuration: every key validated, each error one plain sentence."""

from __future__ import annotations

import grp
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..dbpin import DbPin, parse_pins
from ..naming import Preference
from ..probes.postgres import AUTO

DEFAULT_CONFIG = Path("/etc/bridgedoctor/helper.yaml")
# Shorter than this is guessable; docs/helper.md generates 64 hex characters.
MIN_TOKEN_CHARS = 16
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
_HOST_PORT_RE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?")


class ConfigError(Exception):
    """A configuration problem; str() is one sentence for the admin."""


@dataclass(frozen=True)
class HelperConfig:
    token: str = field(repr=False)  # never printed: repr=False keeps it out of logs and tracebacks
    token_file: Path
    root: Path = Path("/matrix")
    systemd_dir: Path = Path("/etc/systemd/system")
    db_host: str | None = "auto"
    socket: Path = Path("/run/bridgedoctor/helper.sock")
    socket_gid: int | None = None
    socket_mode: int = 0o660
    allowed_uids: frozenset[int] | None = None
    backup_dir: Path = Path("/var/lib/bridgedoctor/backups")
    allow_reset: bool = False
    naming: Preference = "auto"
    inventory: Path | None = None
    max_concurrent: int = 4
    request_timeout: float = 60.0
    deep_timeout: float = 900.0  # a check with deep: it reads every row of the store
    read_timeout: float = 5.0
    # Custom setups: bridge -> its own database and role, when not MDAD's (dbpin.py).
    databases: Mapping[str, DbPin] = field(default_factory=dict)
    verify_seconds: float = 30.0


KEYS = frozenset(
    {
        "root",
        "systemd_dir",
        "db_host",
        "socket",
        "socket_group",
        "socket_mode",
        "token_file",
        "allowed_uids",
        "backup_dir",
        "allow_reset",
        "naming",
        "inventory",
        "max_concurrent",
        "request_timeout",
        "deep_timeout",
        "read_timeout",
        "databases",
        "verify_seconds",
    }
)


def load(path: Path) -> HelperConfig:
    """Read and validate the config file; raises ConfigError with one sentence."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the config file {path}: {_reason(e)}.") from None
    try:
        raw = YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"the config file {path} is not valid YAML{where}.") from None
    return parse(raw if raw is not None else {}, path)


def parse(raw: Any, path: Path) -> HelperConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"the config file {path} must be a mapping of settings.")
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        raise ConfigError(
            f"unknown setting '{unknown[0][:40]}' in {path}; known settings: "
            f"{', '.join(sorted(KEYS))}."
        )
    if "token_file" not in raw:
        raise ConfigError(f"token_file is required in {path}.")
    token_file = _abs_path(raw, "token_file", None)
    root = _abs_path(raw, "root", Path("/matrix"))
    if not root.is_dir():
        raise ConfigError(f"root {root} is not a directory.")
    sock = _abs_path(raw, "socket", Path("/run/bridgedoctor/helper.sock"))
    if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        raise ConfigError(f"socket path {sock} is longer than {MAX_SOCKET_PATH} bytes.")
    return HelperConfig(
        token=_read_token(token_file),
        token_file=token_file,
        root=root,
        systemd_dir=_abs_path(raw, "systemd_dir", Path("/etc/systemd/system")),
        db_host=_db_host(raw.get("db_host", "auto")),
        socket=sock,
        socket_gid=_group(raw.get("socket_group")),
        socket_mode=_mode(raw.get("socket_mode", 0o660)),
        allowed_uids=_uids(raw.get("allowed_uids")),
        backup_dir=_abs_path(raw, "backup_dir", Path("/var/lib/bridgedoctor/backups")),
        allow_reset=_bool(raw, "allow_reset", False),
        naming=_naming(raw.get("naming", "auto")),
        inventory=_inventory(raw),
        max_concurrent=_int(raw, "max_concurrent", 4, 1, 256),
        request_timeout=_seconds(raw, "request_timeout", 60.0),
        deep_timeout=_seconds(raw, "deep_timeout", 900.0),
        read_timeout=_seconds(raw, "read_timeout", 5.0),
        databases=_databases(raw.get("databases")),
        verify_seconds=_verify_seconds(raw),
    )


def _reason(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__


def _abs_path(raw: dict, key: str, default: Path | None) -> Path:
    value = raw.get(key, default)
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ConfigError(f"{key} must be an absolute path.")
    return Path(value)


def _read_token(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"cannot read token_file {path}: {_reason(e)}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"token_file {path} is not a regular file.")
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        # Anyone on the host could read the token and talk to a root service: refuse outright.
        raise ConfigError(
            f"token_file {path} is accessible to all users (mode {stat.S_IMODE(st.st_mode):04o}); "
            "run chmod 0640 on it."
        )
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read token_file {path}: {_reason(e)}.") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            f"token_file {path} must hold one token of at least {MIN_TOKEN_CHARS} printable "
            "characters (generate one with: openssl rand -hex 32)."
        )
    return token


def _db_host(value: Any) -> str | None:
    if value is None or value == AUTO:
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError("db_host must be auto, HOST[:PORT], a socket directory, or null.")
    if value.startswith("/"):
        directory, sep, port = value.rpartition(":")
        if not (sep and port.isdigit()):
            directory, port = value, ""
        if "\0" in directory:
            raise ConfigError("db_host must be auto, HOST[:PORT], a socket directory, or null.")
    else:
        m = _HOST_PORT_RE.fullmatch(value)
        if m is None:
            raise ConfigError(f"db_host '{value[:60]}' is not HOST[:PORT] or a socket directory.")
        port = m.group(1) or ""
    if port and not 0 < int(port) < 65536:
        raise ConfigError(f"db_host port {port} is out of range.")
    return value


def _databases(value: Any) -> dict[str, DbPin]:
    if value is None:
        return {}
    try:
        return parse_pins(value, "databases")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _group(value: Any) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return grp.getgrgid(value).gr_gid
        if isinstance(value, str) and value:
            return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigError(
            f"socket_group '{str(value)[:40]}' does not exist on this host."
        ) from None
    raise ConfigError("socket_group must be a group name, a numeric gid, or null.")


def _mode(value: Any) -> int:
    # YAML 1.2 reads 0660 as decimal 660; accept 0o660 or a quoted "0660" as octal.
    if isinstance(value, str) and re.fullmatch(r"(?:0o?)?[0-7]{1,4}", value):
        value = int(value.removeprefix("0o"), 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    raise ConfigError(
        f"socket_mode {str(value)[:20]} is not a permission mode; write it as 0o660 or '0660'."
    )


def _uids(value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    if value == []:
        # An empty allowlist would lock every client out; it is a mistake, not a policy.
        raise ConfigError(
            "allowed_uids is an empty list, so no one could use the helper; list the uids "
            "that may connect (id -u matrix) or remove the setting."
        )
    if isinstance(value, list) and all(
        isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in value
    ):
        return frozenset(value)
    raise ConfigError("allowed_uids must be a list of numeric user ids, or null.")


def _inventory(raw: dict) -> Path | None:
    if raw.get("inventory") is None:
        return None
    path = _abs_path(raw, "inventory", None)
    if not path.is_dir():
        raise ConfigError(
            f"inventory {path} is not a directory: give the MDAD inventory directory (the one "
            "holding host_vars/), or null."
        )
    return path


def _verify_seconds(raw: dict) -> float:
    # Following the unit is one request: it must end before the request is cut off.
    limit = _seconds(raw, "request_timeout", 60.0) - 10
    if "verify_seconds" not in raw:
        return max(1.0, min(30.0, limit))
    seconds = _seconds(raw, "verify_seconds", 30.0)
    if seconds > limit:
        raise ConfigError("verify_seconds must be at least 10 seconds below request_timeout.")
    return seconds


def _naming(value: Any) -> Preference:
    if value in ("auto", "current", "legacy"):
        return value
    raise ConfigError("naming must be one of auto, current, legacy.")


def _bool(raw: dict, key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key} must be true or false.")


def _int(raw: dict, key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    raise ConfigError(f"{key} must be a whole number from {low} to {high}.")


def _seconds(raw: dict, key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 3600:
        return float(value)
    raise ConfigError(f"{key} must be a number of seconds above 0 and at most 3600.")


def prepare_dirs(cfg: HelperConfig) -> None:
    """Create the socket and backup directories if missing (systemd normally does this)."""
    for directory, mode in ((cfg.socket.parent, 0o755), (cfg.backup_dir, 0o700)):
        try:
            directory.mkdir(mode=mode, parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create {directory}: {_reason(e)}.") from None
    if not os.access(cfg.backup_dir, os.W_OK):
        raise ConfigError(f"backup_dir {cfg.backup_dir} is not writable.")
    from ..reset.errors import ResetError
    from ..reset.paths import private_dir

    try:
        private_dir(cfg.backup_dir)
    except ResetError as e:
        raise ConfigError(str(e).removesuffix(" nothing was changed.").rstrip(";") + ".") from None
