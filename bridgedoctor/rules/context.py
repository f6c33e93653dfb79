"""What every rule may consult besides the facts: the knowledge table, the naming era, key options."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import catalogue, pickle
from ..facts import InventoryFacts, ProbeError
from ..fixes import yaml_str
from ..knowledge import Knowledge
from ..naming import NamingDecision


@dataclass(frozen=True)
class RuleContext:
    kb: Knowledge
    naming: NamingDecision
    try_keys: tuple[str, ...] = ()
    reveal_keys: bool = False
    # The admin's inventory (--inventory / the helper's `inventory`), read once per check; None
    # when none was given.
    inventory: InventoryFacts | ProbeError | None = None
    cat: catalogue.Catalogue = field(default_factory=catalogue.load)

    def show(self, key: str) -> str:
        """A key as it may be printed: public constants verbatim, anything else fingerprinted."""
        if key in self.kb.public_keys or self.reveal_keys:
            return yaml_str(key)
        return f"<secret key {pickle.fingerprint(key)}>"

    def snippet_key(self, key: str) -> str:
        if key in self.kb.public_keys or self.reveal_keys:
            return yaml_str(key)
        return f'"<key {pickle.fingerprint(key)}: rerun with --reveal-keys to print it>"'
