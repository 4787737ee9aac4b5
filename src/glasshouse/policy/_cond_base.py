"""What every policy condition is (:class:`Condition`) and the helpers its leaves share:
reading receipt JSON that may be partial (:func:`as_list`, :func:`as_dict`), pointing at
evidence (:func:`ptr`, a JSON pointer) and parsing globs and choices from YAML nodes."""

from __future__ import annotations

from typing import Any

from glasshouse.policy._glob import GlobError, compile_glob
from glasshouse.policy._yaml import Node
from glasshouse.policy.models import Evidence


class Condition:
    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        raise NotImplementedError

    def sections(self) -> set[str]:
        return set()

    def canonical(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        import json

        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))


def ptr(*parts: object) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def globs(node: Node, path: bool) -> tuple[str, ...]:
    out = []
    for item in node.one_or_many():
        pattern = item.string()
        try:
            compile_glob(pattern, path)
        except GlobError as exc:
            raise item.error(str(exc)) from exc
        out.append(pattern)
    return tuple(sorted(set(out)))


def any_glob(patterns: tuple[str, ...], text: Any, path: bool) -> bool:
    return isinstance(text, str) and any(
        compile_glob(p, path).fullmatch(text) is not None for p in patterns
    )


def choices(node: Node, allowed: tuple[str, ...] | None = None) -> frozenset[str]:
    out = set()
    for item in node.one_or_many():
        value = item.string().lower()
        if allowed is not None and value not in allowed:
            raise item.error(f"{value!r} is not one of: {', '.join(allowed)}")
        out.add(value)
    return frozenset(out)
