"""The record of one apply: `<backup_dir>/<bridge>/<id>/apply.json`, next to the backed-up file.

Written atomically after every step (reset/manifest.Recorded, as the reset manifest), so a crash
leaves it at most one step behind. It is named apply.json, not manifest.json, so the reset
machinery (which reads every manifest.json under the bridge's directory) never mistakes it for
one of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..reset.manifest import Recorded, load_all

NAME = "apply.json"
BACKUP = "config.yaml"
State = Literal[
    "planned", "backed_up", "written", "done", "rolled_back", "failed", "undoing", "undone"
]
FINAL = ("done", "rolled_back", "failed", "undone")


@dataclass
class ApplyRecord(Recorded):
    id: str
    bridge: str
    unit: str
    requested_by: str
    created_at: str
    location: str  # this record's directory: the backup of config.yaml lives here
    config: str  # the live config.yaml
    base: str  # the bridge's directory: config.yaml is only ever opened below it
    was_active: bool
    before_sha256: str
    after_sha256: str
    uid: int
    gid: int
    file_mode: int  # config.yaml's permission bits
    key_from: str  # printable forms only
    key_to: str
    state: State = "planned"
    steps: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    undone_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    FILE = NAME
    # Not fields: what lets a listing show resets and applies side by side (Manifest has both).
    kind = "apply"
    mode = "apply"

    @property
    def dir(self) -> Path:
        return Path(self.location)

    @property
    def backup(self) -> Path:
        return self.dir / BACKUP


def all_for(bridge_dir: Path) -> list[ApplyRecord]:
    """Every apply record under a bridge's backup directory, oldest first."""
    return load_all(ApplyRecord, bridge_dir)


def summary(r: ApplyRecord) -> dict[str, Any]:
    """As reset_ops.summary, for the `backups` listing (mode "apply")."""
    return {
        "id": r.id,
        "bridge": r.bridge,
        "kind": "apply",
        "mode": "apply",
        "state": r.state,
        "created_at": r.created_at,
        "requested_by": r.requested_by,
        "location": r.location,
        "source": "",
        "error": r.error,
        "steps": [s["step"] for s in r.steps],
    }
