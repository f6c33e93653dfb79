"""Pure rules: facts in, findings out. No I/O here, so every verdict is reproducible in tests.

One module per family (service, config, registration, database, keys, and logs: the bridge's
own last words matched against data/failures.yaml); `evaluate` runs them, `verdict.settle` makes
one answer of them. Add a rule to the family it belongs to, as a small function that can be
tested alone; an error string or exit status goes into data/failures.yaml, not into code.
"""

from .context import RuleContext
from .evaluate import evaluate

__all__ = ["RuleContext", "evaluate"]
