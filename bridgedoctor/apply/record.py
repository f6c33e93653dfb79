"""The record of one apply: `<backup_dir>/<bridge>/<id>/apply.json`, next to the backed-up file.

Written atomically after every step (reset/manifest.write_atomic), so a crash leaves it at most
one step behind. It is named apply.json, not manifest.json, so the reset machinery (which reads
every manifest.json under the bridge's directory) never mistakes it for one of its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..reset.manifest import now, write_atomic

NAME = "apply.json"
BACKUP = "config.yaml"
State = Literal[
    "planned", "backed_up", "written", "done", "rolled_back", "failed", "undoing", "undone"
]
FINAL = ("done", "rolled_back", "failed", "undone")


@dataclass
class ApplyRecord:
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

    # Not fields: what lets a listing show resets and applies side by side (Manifest has both).
    kind = "apply"
    mode = "apply"

    @property
    def dir(self) -> Path:
        return Path(self.location)

    @property
    def backup(self) -> Path:
        return self.dir / BACKUP

    def step(self, name: str, state: State | None = None) -> None:
        self.steps.append({"step": name, "at": now()})
        if state:
            self.state = state
        self.save()

    def done_steps(self) -> set[str]:
        return {s["step"] for s in self.steps}

    def save(self) -> None:
        write_atomic(self.dir / NAME, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> ApplyRecord:
        return cls(**json.loads(path.read_text("utf-8")))


def all_for(bridge_dir: Path) -> list[ApplyRecord]:
    """Every apply record under a bridge's backup directory, oldest first."""
    out: list[ApplyRecord] = []
    if not bridge_dir.is_dir():
        return out
    for d in sorted(bridge_dir.iterdir()):
        p = d / NAME
        if p.is_file():
            try:
                out.append(ApplyRecord.load(p))
            except (OSError, ValueError, TypeError):
                continue  # a foreign or damaged file is not ours to act on
    return out


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
