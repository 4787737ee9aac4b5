"""Load a policy from YAML. Every error is a :class:`PolicyError` naming the line and reason.

The language (docs/trust.md has the full reference)::

    name: ci-sandbox
    rules:
      - id: no-public-network
        description: code under test talks to nothing but loopback
        action: deny            # deny (default) fails the verdict; warn only reports
        severity: high          # info | low | medium (default) | high | critical
        match:
          all:
            - network: {cidr: [0.0.0.0/0, "::/0"]}
            - not: {network: {cidr: [127.0.0.0/8, "::1/128"]}}
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from glasshouse.policy._conditions import parse_condition
from glasshouse.policy._yaml import Node, compose
from glasshouse.policy.models import SEVERITIES, Policy, PolicyError, Rule

_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_MAX_BYTES = 1 << 20


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and parse a policy file."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 text: {exc}", source=source) from exc
    return parse_policy(text, source=source, default_name=Path(path).stem)


def parse_policy(text: str, source: str = "<policy>", default_name: str = "policy") -> Policy:
    """Parse policy YAML text. Never raises anything but :class:`PolicyError`."""
    if len(text) > _MAX_BYTES:
        raise PolicyError(f"policy larger than {_MAX_BYTES} bytes", source=source)
    root = compose(text, source)
    if root is None:
        raise PolicyError("empty policy: expected a mapping with 'rules'", line=1, source=source)
    top = root.mapping({"name", "version", "description", "rules"})
    if "version" in top and top["version"].integer() != 1:
        raise top["version"].error("only policy version 1 is understood")
    name = top["name"].string() if "name" in top else default_name
    if "rules" not in top:
        raise root.error("a policy needs 'rules' (a list of rules)")
    items = top["rules"].items()
    if not items:
        raise top["rules"].error("'rules' is empty: a policy with no rules decides nothing")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for item in items:
        rule = _parse_rule(item)
        if rule.id in seen:
            raise item.error(f"rule id {rule.id!r} is already used on line {seen[rule.id]}")
        seen[rule.id] = item.line
        rules.append(rule)
    rules.sort(key=lambda r: r.id)  # evaluation order never depends on file order
    return Policy(name=name, rules=tuple(rules), digest=_digest(name, rules), source=source)


def _parse_rule(node: Node) -> Rule:
    fields = node.mapping({"id", "description", "action", "severity", "match"})
    if "id" not in fields:
        raise node.error("a rule needs an 'id'")
    rule_id = fields["id"].string()
    if not _RULE_ID.match(rule_id):
        raise fields["id"].error(
            f"rule id {rule_id!r}: use letters, digits and _.:- (up to 128 characters)"
        )
    if "match" not in fields:
        raise node.error(f"rule {rule_id!r} needs 'match' (a condition)")
    action = fields["action"].string() if "action" in fields else "deny"
    if action not in ("deny", "warn"):
        raise fields["action"].error(f"action {action!r}: expected deny or warn")
    severity = fields["severity"].string() if "severity" in fields else "medium"
    if severity not in SEVERITIES:
        raise fields["severity"].error(
            f"severity {severity!r}: expected one of {', '.join(SEVERITIES)}"
        )
    description = fields["description"].string() if "description" in fields else None
    return Rule(
        id=rule_id,
        condition=parse_condition(fields["match"]),
        action=action,  # type: ignore[arg-type]
        severity=severity,
        description=description,
        line=node.line,
    )


def _digest(name: str, rules: list[Rule]) -> str:
    from glasshouse.receipt.canonical import canonical_json

    doc = {
        "name": name,
        "rules": [
            {
                "id": r.id,
                "action": r.action,
                "severity": r.severity,
                "description": r.description,
                "match": r.condition.canonical(),
            }
            for r in rules
        ],
    }
    return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()
