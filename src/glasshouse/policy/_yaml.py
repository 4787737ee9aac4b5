"""YAML with line numbers: the composed node tree, wrapped so every error names its line."""

from __future__ import annotations

from typing import Any

import yaml

from glasshouse.policy.models import PolicyError

_MAX_NODES = 100_000


class Node:
    """A YAML node with its location. Accessors raise :class:`PolicyError` naming the line."""

    def __init__(self, node: yaml.Node, where: str, source: str, budget: list[int]) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise PolicyError("policy too large (or an alias expands too far)", source=source)
        self.node, self.where, self.source, self._budget = node, where, source, budget
        self.line = node.start_mark.line + 1

    def error(self, reason: str) -> PolicyError:
        return PolicyError(reason, line=self.line, where=self.where, source=self.source)

    def _child(self, node: yaml.Node, where: str) -> Node:
        return Node(node, where, self.source, self._budget)

    def kind(self) -> str:
        if isinstance(self.node, yaml.MappingNode):
            return "a mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "a list"
        value = self.scalar_value()
        return "null" if value is None else f"{type(value).__name__} {value!r}"

    def mapping(self, allowed: set[str] | None = None) -> dict[str, Node]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"expected a mapping, got {self.kind()}")
        out: dict[str, Node] = {}
        for key_node, value_node in self.node.value:
            key = self._child(key_node, self.where).scalar_value()
            if not isinstance(key, str):
                raise PolicyError(
                    f"keys must be strings, got {key!r}",
                    line=key_node.start_mark.line + 1,
                    where=self.where,
                    source=self.source,
                )
            sub = f"{self.where}.{key}" if self.where else key
            if key in out:
                raise PolicyError(
                    f"duplicate key {key!r}",
                    line=key_node.start_mark.line + 1,
                    where=self.where,
                    source=self.source,
                )
            if allowed is not None and key not in allowed:
                raise PolicyError(
                    f"unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})",
                    line=key_node.start_mark.line + 1,
                    where=self.where,
                    source=self.source,
                )
            out[key] = self._child(value_node, sub)
        return out

    def items(self) -> list[Node]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error(f"expected a list, got {self.kind()}")
        return [self._child(n, f"{self.where}[{i}]") for i, n in enumerate(self.node.value)]

    def one_or_many(self) -> list[Node]:
        """A scalar or a mapping counts as a one-item list."""
        if isinstance(self.node, yaml.SequenceNode):
            items = self.items()
            if not items:
                raise self.error("empty list: give at least one value")
            return items
        return [self]

    def scalar_value(self) -> Any:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.error(f"expected a single value, got {self.kind()}")
        try:
            return yaml.SafeLoader("").construct_object(self.node)
        except yaml.YAMLError as exc:
            raise self.error(f"unreadable value: {exc}") from exc

    def string(self) -> str:
        value = self.scalar_value()
        if not isinstance(value, str) or not value:
            raise self.error(f"expected a non-empty string, got {self.kind()}")
        return value

    def integer(self, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.scalar_value()
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(f"expected an integer, got {self.kind()}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.error(f"{value} is out of range [{minimum}, {maximum}]")
        return value

    def boolean(self) -> bool:
        value = self.scalar_value()
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {self.kind()}")
        return value


def compose(text: str, source: str) -> Node | None:
    """Parse one YAML document into a :class:`Node` tree (None for an empty document)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = f"not valid YAML: {exc.problem or exc.context or exc}"
        raise PolicyError(reason, line=mark.line + 1 if mark else None, source=source) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}", source=source) from exc
    except RecursionError as exc:
        raise PolicyError("YAML nested too deeply", source=source) from exc
    if root is None:
        return None
    return Node(root, "", source, [_MAX_NODES])
