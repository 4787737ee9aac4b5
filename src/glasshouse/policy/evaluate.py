"""Evaluate a policy over a receipt: pure, deterministic, and never changing the run.

The same policy and receipt always give the same :class:`Verdict`; rule order in the file does
not matter (rules are evaluated and reported sorted by id, evidence sorted by its location).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from glasshouse.policy.models import Evidence, Policy, RuleResult, Verdict

if TYPE_CHECKING:
    from glasshouse.receipt.model import Receipt


def _order(e: Evidence) -> tuple[tuple[int, int | str], ...]:
    parts = e.at.split("/")[1:] if e.at else []
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def evaluate(policy: Policy, receipt: Receipt | dict[str, Any]) -> Verdict:
    """Every rule of ``policy`` over ``receipt`` (a model or its JSON data)."""
    from glasshouse.receipt.canonical import as_data

    data = as_data(receipt)
    fired: list[RuleResult] = []
    for rule in sorted(policy.rules, key=lambda r: r.id):
        found = rule.condition.evaluate(data)
        if found is None:
            continue
        unique = {e.at: e for e in found}  # one item can match several branches
        evidence = tuple(sorted(unique.values(), key=lambda e: (_order(e), e.at)))
        fired.append(
            RuleResult(
                rule=rule.id,
                action=rule.action,
                severity=rule.severity,
                description=rule.description,
                evidence=tuple(Evidence(e.at, copy.deepcopy(e.value)) for e in evidence),
            )
        )
    observation = data.get("observation") if isinstance(data.get("observation"), dict) else {}
    missing = observation.get("missing") if isinstance(observation.get("missing"), dict) else {}
    # A list cut at the receipt's cap cannot prove an absence: its section counts as not
    # (fully) observed, so a pass over it is partial, never silently complete.
    omitted = observation.get("omitted") if isinstance(observation.get("omitted"), dict) else {}
    capped = {str(name).split(".")[0] for name, n in omitted.items() if n}
    unobserved = tuple(sorted(s for s in policy.sections() if s in missing or s in capped))
    return Verdict(
        policy=policy.name,
        policy_digest=policy.digest,
        fired=tuple(fired),
        unobserved=unobserved,
    )


def apply_verdict(data: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """A copy of receipt JSON data carrying ``verdict``: the ``policy`` block, and denied
    items appended to ``filesystem.policy_violations``. Unsealed (``digest`` None)."""
    out = dict(data)
    fs = dict(out.get("filesystem") or {})
    existing = list(fs.get("policy_violations") or [])
    fs["policy_violations"] = existing + [v for v in verdict.violation_lines() if v not in existing]
    out["filesystem"] = fs
    out["policy"] = verdict.to_dict()
    out["digest"] = None
    return out


def receipt_hook(policy: Policy) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``hook(receipt_data) -> receipt_data`` that evaluates ``policy`` and records the
    verdict (for the server's ``ServerConfig.receipt_hooks``)."""

    def hook(data: dict[str, Any]) -> dict[str, Any]:
        return apply_verdict(data, evaluate(policy, data))

    return hook
