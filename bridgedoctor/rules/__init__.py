"""Pure rules: facts in, findings out. No I/O here, so every verdict is reproducible in tests.

One module per family (service, config, database, keys); `evaluate` runs them in order.
Add a rule to the family it belongs to, as a small function that can be tested alone.
"""

from .context import RuleContext
from .evaluate import evaluate

__all__ = ["RuleContext", "evaluate"]
