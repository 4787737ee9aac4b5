"""``glasshouse run`` options for trust: --redact/--redact-rules, --policy, --sign/--envelope.

Option callbacks load keys, policies and rules *before* the command runs (a typo must not
cost a run); the hooks then post-process the receipt data in the order redact -> policy ->
seal -> sign. Nothing here imports cryptography, yaml or pydantic unless its option is used.
Policy evaluation never changes the run or its exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def load_key_option(ctx: click.Context, param: click.Parameter, value: Path | None) -> Any:
    if value is None:
        return None
    from glasshouse.receipt.sign import KeyFileError, load_private_key

    try:
        return load_private_key(value)
    except KeyFileError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def load_policy_option(ctx: click.Context, param: click.Parameter, value: Path | None) -> Any:
    if value is None:
        return None
    from glasshouse.policy import PolicyError, load_policy

    try:
        return load_policy(value)
    except PolicyError as exc:
        raise click.BadParameter(exc.diagnostic(), ctx=ctx, param=param) from exc


def load_rules_option(ctx: click.Context, param: click.Parameter, value: Path | None) -> Any:
    if value is None:
        return None
    from glasshouse.receipt.redact import RedactionConfigError, load_rules

    try:
        return load_rules(value)
    except RedactionConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def redact_hook(data: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    redactor = opts.get("redact_rules")
    if redactor is None and not opts.get("redact"):
        return data
    from glasshouse.receipt.redact import Redactor

    return (redactor or Redactor.from_env()).redact_receipt(data)


def policy_hook(data: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    policy = opts.get("policy")
    if policy is None:
        return data
    from glasshouse.policy import apply_verdict, evaluate

    verdict = evaluate(policy, data)
    if not opts.get("quiet"):
        if verdict.passed:
            line = f"policy {verdict.policy}: pass"
        else:
            line = f"policy {verdict.policy}: {len(verdict.violations)} violation(s): "
            line += ", ".join(verdict.violations)
        if verdict.warnings:
            line += f" · warnings: {', '.join(verdict.warnings)}"
        if verdict.unobserved:
            line += f" · not observed: {', '.join(verdict.unobserved)}"
        lost = (data.get("observation") or {}).get("events_lost") or 0
        if lost:
            line += f" · {lost} events lost"
        click.echo(f"glasshouse: {line}", err=True)
    return apply_verdict(data, verdict)


def sign_hook(data: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    key = opts.get("sign")
    if key is None:
        if opts.get("envelope"):
            click.echo("glasshouse: --envelope has no effect without --sign", err=True)
        return data
    from glasshouse.receipt.canonical import seal_data
    from glasshouse.receipt.sign import envelope_path_for, sign_receipt, write_envelope

    sealed = seal_data({**data, "digest": None})
    path = opts.get("envelope") or envelope_path_for(opts["receipt_path"])
    write_envelope(sign_receipt(sealed, key), path)
    if not opts.get("quiet"):
        click.echo(f"glasshouse: signed envelope: {path}", err=True)
    return sealed


HOOKS = [redact_hook, policy_hook, sign_hook]
