"""Policy types: the parsed policy, the verdict, and the error that names a YAML line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from glasshouse.core.errors import GlasshouseError

if TYPE_CHECKING:
    from glasshouse.policy._cond_base import Condition

Action = Literal["deny", "warn"]
SEVERITIES = ("info", "low", "medium", "high", "critical")
#: Evidence items kept per fired rule in a receipt (``evidence_total`` counts them all).
EVIDENCE_KEPT = 20


class PolicyError(GlasshouseError, ValueError):
    """A policy is malformed. ``line`` (1-based) and ``where`` (``rules[2].match.network``)
    locate the problem; ``reason`` says what is wrong."""

    def __init__(
        self, reason: str, *, line: int | None = None, where: str = "", source: str = "<policy>"
    ) -> None:
        self.reason, self.line, self.where, self.source = reason, line, where, source
        super().__init__(self.diagnostic())

    def diagnostic(self) -> str:
        loc = f"{self.source}:{self.line}" if self.line else self.source
        return f"{loc}: {self.where + ': ' if self.where else ''}{self.reason}"


@dataclass(frozen=True)
class Rule:
    id: str
    condition: Condition
    action: Action = "deny"
    severity: str = "medium"
    description: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Policy:
    name: str
    rules: tuple[Rule, ...]
    #: ``sha256:<hex>`` of the policy's canonical form: independent of rule order and layout.
    digest: str
    source: str = "<policy>"

    def sections(self) -> set[str]:
        """Receipt sections any rule looks at (to tell which of them were not observed)."""
        out: set[str] = set()
        for rule in self.rules:
            out |= rule.condition.sections()
        return out


@dataclass(frozen=True, order=True)
class Evidence:
    #: JSON pointer into the receipt, e.g. ``/network/attempts/0``; ``""`` for "absent".
    at: str
    value: Any = field(compare=False, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "value": self.value}

    def summary(self) -> str:
        v = self.value
        if isinstance(v, dict):
            for key in ("dst", "addr", "exe", "path", "absent", "code"):
                if v.get(key) is not None:
                    return str(v[key])
            if v.get("src"):
                return f"{v['src']} -> {v.get('dst')}"
        if v is None:
            return self.at
        return f"{self.at.rsplit('/', 1)[-1]}={v}" if not isinstance(v, str) else v


@dataclass(frozen=True)
class RuleResult:
    rule: str
    action: Action
    severity: str
    description: str | None
    evidence: tuple[Evidence, ...]

    def to_dict(self, keep: int = EVIDENCE_KEPT) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "action": self.action,
            "severity": self.severity,
            "description": self.description,
            "evidence": [e.to_dict() for e in self.evidence[:keep]],
            "evidence_total": len(self.evidence),
        }


@dataclass(frozen=True)
class Verdict:
    """What a policy concluded about one receipt. Equal inputs give equal verdicts."""

    policy: str
    policy_digest: str
    fired: tuple[RuleResult, ...]
    unobserved: tuple[str, ...] = ()

    @property
    def violations(self) -> list[str]:
        return [r.rule for r in self.fired if r.action == "deny"]

    @property
    def warnings(self) -> list[str]:
        return [r.rule for r in self.fired if r.action == "warn"]

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        """The receipt's ``policy`` block."""
        return {
            "policy": self.policy,
            "policy_digest": self.policy_digest,
            "passed": self.passed,
            "violations": self.violations,
            "warnings": self.warnings,
            "fired": [r.to_dict() for r in self.fired],
            "unobserved": list(self.unobserved),
        }

    def violation_lines(self, keep: int = EVIDENCE_KEPT) -> list[str]:
        """``"<rule>: <evidence>"`` per denied item, for ``filesystem.policy_violations``."""
        out: list[str] = []
        for r in self.fired:
            if r.action != "deny":
                continue
            if not r.evidence:
                out.append(r.rule)
            out += [f"{r.rule}: {e.summary()}" for e in r.evidence[:keep]]
            if len(r.evidence) > keep:
                out.append(f"{r.rule}: ... {len(r.evidence) - keep} more")
        return out
