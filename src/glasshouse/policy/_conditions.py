"""Policy conditions: parsed from YAML nodes (:func:`parse_condition`), evaluated purely
over receipt JSON data. This module holds the combinators (``all``, ``any``, ``not``) and
the parser; the leaves are in ``_leaves.py``, the base class in ``_cond_base.py``.

``evaluate(receipt)`` returns the evidence list when the condition holds (possibly empty for
``not``), or None when it does not. Evaluation reads the receipt only; it never raises for a
schema-valid receipt and tolerates missing sections (they hold nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glasshouse.policy._cond_base import Condition
from glasshouse.policy._leaves import LEAF_TYPES
from glasshouse.policy._yaml import Node
from glasshouse.policy.models import Evidence

_MAX_DEPTH = 32
LEAVES = tuple(LEAF_TYPES)
COMBINATORS = ("all", "any", "not")


# -- combinators ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AllOf(Condition):
    children: tuple[Condition, ...]

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        evidence: list[Evidence] = []
        for child in self.children:
            found = child.evaluate(receipt)
            if found is None:
                return None
            evidence += found
        return evidence

    def sections(self) -> set[str]:
        return set().union(*(c.sections() for c in self.children))

    def canonical(self) -> Any:
        return {"all": sorted((c.canonical() for c in self.children), key=_sort_key)}


@dataclass(frozen=True)
class AnyOf(Condition):
    children: tuple[Condition, ...]

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        evidence: list[Evidence] | None = None
        for child in self.children:
            found = child.evaluate(receipt)
            if found is not None:
                evidence = (evidence or []) + found
        return evidence

    def sections(self) -> set[str]:
        return set().union(*(c.sections() for c in self.children))

    def canonical(self) -> Any:
        return {"any": sorted((c.canonical() for c in self.children), key=_sort_key)}


@dataclass(frozen=True)
class Not(Condition):
    child: Condition

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        if self.child.evaluate(receipt) is not None:
            return None
        return [Evidence("", {"absent": self.child.describe()})]

    def sections(self) -> set[str]:
        return self.child.sections()

    def canonical(self) -> Any:
        return {"not": self.child.canonical()}


def _sort_key(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def parse_condition(node: Node, depth: int = 0) -> Condition:
    """A condition is a mapping with exactly one key: a combinator or a leaf."""
    if depth > _MAX_DEPTH:
        raise node.error(f"conditions nested deeper than {_MAX_DEPTH}")
    fields = node.mapping({*COMBINATORS, *LEAVES})
    if len(fields) != 1:
        keys = ", ".join(fields) or "nothing"
        raise node.error(
            f"a condition has exactly one key (got {keys}); combine several with all: [...]"
        )
    ((key, value),) = fields.items()
    if key in ("all", "any"):
        items = value.items()
        if not items:
            raise value.error(
                f"empty '{key}': it would be vacuously {'true' if key == 'all' else 'false'}"
            )
        children = tuple(parse_condition(i, depth + 1) for i in items)
        return AllOf(children) if key == "all" else AnyOf(children)
    if key == "not":
        return Not(parse_condition(value, depth + 1))
    return LEAF_TYPES[key].parse(value)
