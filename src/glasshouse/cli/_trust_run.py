"""``glasshouse run`` options for trust: --redact/--redact-rules, --policy, --sign/--envelope.

The loaders (``LOADERS``, named by ``Option.loader``) read keys, policies and rules as the
options are read, *before* the command runs (a typo must not cost a run); the library's
receipt pipeline (``glasshouse.runner.pipeline_for``) then applies them in the order redact ->
policy -> seal -> sign, as for the server and the agent. Nothing here imports click, nor
cryptography, yaml or pydantic unless its option is used. Policy evaluation never changes
the run or its exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_key(path: Path) -> Any:
    from glasshouse.receipt.sign import KeyFileError, load_private_key

    try:
        return load_private_key(path)
    except KeyFileError as exc:
        raise ValueError(str(exc)) from exc


def load_policy(path: Path) -> Any:
    from glasshouse.policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        raise ValueError(exc.diagnostic()) from exc


def load_rules(path: Path) -> Any:
    from glasshouse.receipt.redact import RedactionConfigError, load_rules

    try:
        return load_rules(path)
    except RedactionConfigError as exc:
        raise ValueError(str(exc)) from exc


#: ``Option.loader`` -> the loader; each raises ``ValueError`` with the user's message.
LOADERS = {"key": load_key, "policy": load_policy, "rules": load_rules}


def report_lines(data: dict[str, Any], envelope_path: Path | None) -> list[str]:
    """What the trust steps did, for the terminal: the policy verdict, the envelope."""
    lines = []
    verdict = data.get("policy")
    if verdict:
        if verdict["passed"]:
            line = f"policy {verdict['policy']}: pass"
        else:
            line = f"policy {verdict['policy']}: {len(verdict['violations'])} violation(s): "
            line += ", ".join(verdict["violations"])
        if verdict["warnings"]:
            line += f" · warnings: {', '.join(verdict['warnings'])}"
        if verdict["unobserved"]:
            line += f" · not observed: {', '.join(verdict['unobserved'])}"
        lost = (data.get("observation") or {}).get("events_lost") or 0
        if lost:
            line += f" · {lost} events lost"
        lines.append(f"glasshouse: {line}")
    if envelope_path is not None:
        lines.append(f"glasshouse: signed envelope: {envelope_path}")
    return lines
