"""What an apply will do, as plain data: shown before confirmation, bound by its digest."""

from __future__ import annotations

from dataclasses import dataclass

from ..reset.plan import Digested


@dataclass(frozen=True)
class ApplyPlan(Digested):
    bridge: str
    unit: str
    was_active: bool
    config: str  # config.yaml's path
    config_sha256: str  # the file as read for this plan: any change since refuses the apply
    key_from: str  # printable (public constants verbatim, anything else a fingerprint)
    key_to: str
    key_to_id: str  # fingerprint of the proven key: the digest names the key, not only the text
    origin: str  # why that key was tried ("historical key of gmessages", ...)
    backup_dir: str
    id: str
    # The lasting fix, shown first: the next playbook run renders config.yaml again.
    vars_yml: str
    pin_steps: tuple[str, ...]

    @property
    def undo(self) -> str:
        return f"bridgedoctor restore {self.bridge} {self.id}"

    def render(self) -> str:
        start = "restart" if self.was_active else "start (it is not running now)"
        lines = [
            f"Apply plan for {self.bridge}:",
            "  The lasting fix is the pin in vars.yml (the next playbook run renders config.yaml "
            "again):",
            *(f"      {line}" for line in self.vars_yml.splitlines()),
            f"  1. back up {self.config} to {self.backup_dir} and verify the copy",
            f"  2. in {self.config}, change encryption.pickle_key from {self.key_from} to "
            f"{self.key_to} ({self.origin}); nothing else in the file changes",
            f"  3. {start} {self.unit}, then follow it",
            f"Undo: {self.undo}",
        ]
        return "\n".join(lines)
