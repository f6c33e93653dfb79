"""Instance configuration: the maubot proxy config and the typed settings the commands use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mautrix.util.config import BaseProxyConfig, ConfigUpdateHelper

DEFAULT_SOCKET = "/run/bridgedoctor/helper.sock"
KEYS = (
    "socket_path",
    "token",
    "admins",
    "allowed_rooms",
    "timeouts.check",
    "timeouts.deep",
    "timeouts.working_after",
    "timeouts.confirm",
    "timeouts.reset",
    "watch.enabled",
    "watch.interval",
    "watch.room",
)


class Config(BaseProxyConfig):
    def do_update(self, helper: ConfigUpdateHelper) -> None:
        # Keys not copied here revert to base-config.yaml values on every update.
        for key in KEYS:
            helper.copy(key)


def _ids(value: Any) -> frozenset[str]:
    if not isinstance(value, (list, tuple)):
        return frozenset()
    return frozenset(str(v).strip() for v in value if isinstance(v, str) and v.strip())


def _seconds(value: Any, default: float, lowest: float) -> float:
    try:
        return max(float(value), lowest)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Settings:
    """Validated settings. A missing or mistyped key falls back to the safe value, never raises
    (maubot returns None for missing keys, and a TypeError in a handler would only be logged)."""

    socket_path: str = DEFAULT_SOCKET
    token: str = field(default="", repr=False)  # never in a repr, a log line or a room
    admins: frozenset[str] = frozenset()
    allowed_rooms: frozenset[str] = frozenset()
    check_timeout: float = 90.0
    deep_timeout: float = 960.0
    working_after: float = 3.0
    confirm_timeout: float = 300.0
    reset_timeout: float = 3600.0
    watch: bool = False
    watch_interval: float = 300.0
    watch_room: str = ""

    @classmethod
    def load(cls, get: Callable[[str], Any]) -> Settings:
        """Build from a config getter such as maubot's `self.config.__getitem__`."""
        socket_path = get("socket_path")
        token = get("token")
        room = get("watch.room")
        return cls(
            socket_path=socket_path.strip()
            if isinstance(socket_path, str) and socket_path.strip()
            else DEFAULT_SOCKET,
            token=token.strip() if isinstance(token, str) else "",
            admins=_ids(get("admins")),
            allowed_rooms=_ids(get("allowed_rooms")),
            check_timeout=_seconds(get("timeouts.check"), 90.0, 1.0),
            deep_timeout=_seconds(get("timeouts.deep"), 960.0, 1.0),
            working_after=_seconds(get("timeouts.working_after"), 3.0, 0.0),
            confirm_timeout=_seconds(get("timeouts.confirm"), 300.0, 1.0),
            reset_timeout=_seconds(get("timeouts.reset"), 3600.0, 60.0),
            watch=get("watch.enabled") is True,
            watch_interval=_seconds(get("watch.interval"), 300.0, 1.0),
            watch_room=room.strip() if isinstance(room, str) else "",
        )

    def may_use(self, sender: str, room_id: str) -> bool:
        """Admins, in an allowed room. Empty lists allow nobody: a fresh instance stays mute
        until configured, because reports name hosts, paths and database servers."""
        return sender in self.admins and room_id in self.allowed_rooms

    def watch_target(self) -> str | None:
        """The room the watch posts to, or None when it is off or not safely configured: only an
        allowed room, because the alerts name hosts and paths as any report does."""
        if self.watch and self.watch_room in self.allowed_rooms:
            return self.watch_room
        return None

    def problems(self) -> list[str]:
        """Configuration mistakes worth a warning in the maubot log."""
        out = []
        if not self.token:
            out.append("token is empty: the helper will refuse every request")
        if not self.admins:
            out.append("admins is empty: every command will be refused")
        if not self.allowed_rooms:
            out.append("allowed_rooms is empty: every command will be refused")
        aliases = sorted(r for r in self.allowed_rooms if r.startswith("#"))
        if aliases:
            out.append(
                "allowed_rooms must hold room IDs (!id:server), not aliases: " + ", ".join(aliases)
            )
        if self.watch and self.watch_room not in self.allowed_rooms:
            out.append(
                "watch is on but watch.room is not one of allowed_rooms: the watch stays off"
            )
        return out
