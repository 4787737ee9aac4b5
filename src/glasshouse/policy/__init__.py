"""Declarative, deterministic policy over receipts, split from enforcement.

One line each::

    from glasshouse.policy import load_policy, evaluate
    verdict = evaluate(load_policy("policy.yaml"), receipt)   # receipt: model or JSON data
    verdict.passed, verdict.violations, verdict.to_dict()

Evaluation only reads a receipt; it never changes how a command ran or its exit code.
Exports load lazily, so importing this package needs neither pyyaml nor pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Evaluation and the types are pure Python; the module named like the function is imported
# here so that ``glasshouse.policy.evaluate`` is the function, not the submodule.
from glasshouse.policy._net import parse_endpoint
from glasshouse.policy.evaluate import apply_verdict, evaluate, receipt_hook
from glasshouse.policy.models import Evidence, Policy, PolicyError, Rule, RuleResult, Verdict

if TYPE_CHECKING:
    from glasshouse.core.checks import Check

#: Loading needs pyyaml: imported on first use.
_EXPORTS = {"load_policy": "glasshouse.policy.load", "parse_policy": "glasshouse.policy.load"}

__all__ = [
    "Evidence",
    "Policy",
    "PolicyError",
    "Rule",
    "RuleResult",
    "Verdict",
    "apply_verdict",
    "doctor_checks",
    "evaluate",
    "load_policy",
    "parse_endpoint",
    "parse_policy",
    "receipt_hook",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glasshouse.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def doctor_checks() -> list[Check]:
    """``glasshouse doctor``: the libraries signing and policies need (the ``trust`` extra)."""
    import importlib.util

    from glasshouse.core.checks import Check

    out = []
    for name, module, disables in (
        ("cryptography", "cryptography", "signing: run --sign, verify, server --signing-key"),
        ("pyyaml", "yaml", "policies and redaction rules files"),
    ):
        ok = importlib.util.find_spec(module) is not None
        detail = "importable" if ok else "missing: pip install 'glasshouse[trust]'"
        out.append(Check(name, ok, detail, "" if ok else disables))
    return out
