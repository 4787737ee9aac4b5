"""Declarative, deterministic policy over receipts, split from enforcement.

One line each::

    from glasshouse.policy import load_policy, evaluate
    verdict = evaluate(load_policy("policy.yaml"), receipt)   # receipt: model or JSON data
    verdict.passed, verdict.violations, verdict.to_dict()

Evaluation only reads a receipt; it never changes how a command ran or its exit code.
"""

from __future__ import annotations

from glasshouse.policy.evaluate import apply_verdict, evaluate, receipt_hook
from glasshouse.policy.load import load_policy, parse_policy
from glasshouse.policy.models import Evidence, Policy, PolicyError, Rule, RuleResult, Verdict

__all__ = [
    "Evidence",
    "Policy",
    "PolicyError",
    "Rule",
    "RuleResult",
    "Verdict",
    "apply_verdict",
    "evaluate",
    "load_policy",
    "parse_policy",
    "receipt_hook",
]
