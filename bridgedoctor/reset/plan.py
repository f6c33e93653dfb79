"""What a reset will do, as plain data: shown before confirmation, stored in the manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

Mode = Literal["crypto", "full"]
DEFAULT_BACKUP_ROOT = Path("/var/lib/bridgedoctor/backups")
KEPT_CRYPTO = "crypto_device, crypto_tracked_user, crypto_cross_signing_*, and every bridge table"
KEPT_RECOVERY_KEY = "kv_store row recovery_key (plain text; self-signing needs it)"


class Digested:
    """A plan named by its digest: a confirmation is only good for the plan that was shown.
    Shared by the reset plan and the apply plan (apply/plan.py)."""

    @property
    def digest(self) -> str:
        return digest_of(self.to_dict(with_digest=False))

    def to_dict(self, with_digest: bool = True) -> dict[str, object]:
        fields = asdict(self)  # type: ignore[call-overload]
        d = {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        return {**d, "digest": self.digest} if with_digest else d


@dataclass(frozen=True)
class Plan(Digested):
    bridge: str
    mode: Mode
    unit: str
    was_active: bool
    database: str  # printable location, no credentials
    data_dir: Path
    backup_dir: Path
    id: str
    backed_up: tuple[str, ...]
    removed: tuple[str, ...]
    kept: str
    after: tuple[str, ...]

    @property
    def data_fate(self) -> str:
        return "emptied" if self.mode == "full" else "not emptied"

    @property
    def undo(self) -> str:
        return f"bridgedoctor restore {self.bridge} {self.id}"

    def render(self) -> str:
        lines = [f"Reset plan for {self.bridge} ({self.mode}):"]
        lines.append(f"  database:       {self.database}")
        lines.append(f"  data directory: {self.data_dir} ({self.data_fate})")
        lines.append(f"  1. stop {self.unit} and verify it is inactive")
        lines.append(f"  2. back up to {self.backup_dir}:")
        lines += [f"       - {b}" for b in self.backed_up]
        lines.append("     and verify the backup (row counts, sha256) before removing anything")
        lines.append("  3. remove:")
        lines += [f"       - {r}" for r in self.removed]
        lines.append(f"     kept: {self.kept}")
        start = "start" if self.was_active else "leave stopped (it was not running):"
        lines.append(f"  4. {start} {self.unit}")
        lines.append("After the reset:")
        lines += [f"  - {a}" for a in self.after]
        lines.append(f"Undo: {self.undo}")
        return "\n".join(lines)


def digest_of(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_id(bridge_dir: Path, mode: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base, n = f"{stamp}-{mode}", 1
    cand = base
    while (bridge_dir / cand).exists():
        n += 1
        cand = f"{base}.{n}"
    return cand


def make(
    bridge: str,
    mode: Mode,
    unit: str,
    was_active: bool,
    database: str,
    data_dir: Path,
    bridge_dir: Path,
    present: list[str],
    ident: str | None = None,
    recovery_key: bool | None = False,
) -> Plan:
    """`ident` reuses the id of a plan shown earlier (the room path), else a new one is made.
    `recovery_key`: kv_store holds one (a crypto reset keeps it); None: not known."""
    ident = ident or new_id(bridge_dir, mode)
    if mode == "crypto":
        from .crypto import CLEARED, cross_signing_note  # here: crypto loads the drivers

        cleared = [t for t in CLEARED if t in present]
        backed = tuple(f"table {t} (all rows)" for t in cleared)
        removed = tuple(f"all rows of {t}" for t in cleared)
        after = (
            "the bridge creates a new device and uploads new keys on start",
            cross_signing_note(recovery_key),
            "users may need to re-request keys in encrypted portals; undecryptable history stays",
            "set a stable pickle key in vars.yml (never 'generate') before the next playbook run",
        )
        kept = KEPT_CRYPTO if recovery_key is False else f"{KEPT_RECOVERY_KEY}, {KEPT_CRYPTO}"
    else:
        backed = (f"the whole database {database} ({len(present)} tables, schema and rows)",)
        backed += (f"the data directory {data_dir} (tar)",)
        removed = ("every table and object of the bridge database", f"everything in {data_dir}")
        after = (
            "log in to the remote network again (the bridge's login command)",
            "portals are recreated as new rooms; old portal rooms are no longer bridged",
        )
        kept = "the config directory and the database itself (empty, same owner)"
    return Plan(
        bridge=bridge,
        mode=mode,
        unit=unit,
        was_active=was_active,
        database=database,
        data_dir=data_dir,
        backup_dir=bridge_dir / ident,
        id=ident,
        backed_up=backed,
        removed=removed,
        kept=kept,
        after=after,
    )
