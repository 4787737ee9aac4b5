"""``glasshouse keys|verify|verify-log|policy|training``: thin wrappers over the library.

Exit codes: 0 valid/pass, 1 invalid/violations, 2 usage (bad arguments, unreadable key,
malformed policy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from glasshouse.cli._util import fail

_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def keys() -> None:
    """Manage Ed25519 signing keys."""


@keys.command("generate")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for <name>.key (private, mode 0600) and <name>.pub.",
)
@click.option("--name", default="glasshouse", show_default=True, help="Base file name.")
def generate(out_dir: Path, name: str) -> None:
    """Generate a key pair (encrypted when GLASSHOUSE_KEY_PASSPHRASE is set)."""
    from glasshouse.receipt.dsse import keyid
    from glasshouse.receipt.sign import generate_keypair, load_public_key

    try:
        private, public = generate_keypair(out_dir, name)
    except (FileExistsError, OSError) as exc:
        fail(str(exc), 2)
    click.echo(f"private key: {private}")
    click.echo(f"public key:  {public}")
    click.echo(f"keyid:       {keyid(load_public_key(public))}")


@click.command()
@click.argument("envelope", type=_EXISTING)
@click.option("--key", "key_path", type=_EXISTING, required=True, help="Public key (PEM).")
@click.option(
    "--receipt",
    "receipt_path",
    type=_EXISTING,
    help="Also check that this receipt file is exactly the signed one (or, for a runtime "
    "trace, the one it was exported from).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the signed receipt (or statement) as JSON."
)
def verify(envelope: Path, key_path: Path, receipt_path: Path | None, as_json: bool) -> None:
    """Verify a signed receipt, or a runtime trace exported from one, offline (DSSE envelope).

    \b
    Exit 0: valid. Exit 1: invalid, with the reason (a changed byte, the wrong key, the
    wrong payload type, a missing signature, a receipt that differs from the signed one).
    """
    from glasshouse.receipt.sign import KeyFileError, VerificationError, load_public_key

    try:
        key = load_public_key(key_path)
    except KeyFileError as exc:
        fail(str(exc), 2)
    receipt = None
    if receipt_path is not None:
        try:
            receipt = json.loads(receipt_path.read_bytes())
        except (OSError, ValueError) as exc:
            fail(f"{receipt_path}: not a JSON receipt: {exc}", 2)
        if not isinstance(receipt, dict):
            fail(f"{receipt_path}: not a JSON receipt: not a JSON object", 2)
    from glasshouse.receipt.sign import verify_attestation

    try:
        verified = verify_attestation(envelope.read_bytes(), key, receipt=receipt)
    except VerificationError as exc:
        click.echo(f"INVALID: {envelope}: {exc.diagnostic()}", err=True)
        sys.exit(1)
    from glasshouse.receipt.intoto import PREDICATE_TYPE as RUNTIME_TRACE

    trace = verified.predicate_type == RUNTIME_TRACE
    if as_json:
        click.echo(json.dumps(verified.statement if trace else verified.receipt, indent=2))
        return
    subjects = ", ".join(
        f"{s['name']}={s['digest']['sha256'][:12]}" for s in verified.statement["subject"]
    )
    what = "runtime trace of run" if trace else "receipt"
    click.echo(f"OK: {envelope}: {what} {verified.execution_id} signed by key {verified.keyid}")
    click.echo(f"    predicate: {verified.predicate_type}")
    click.echo(f"    subjects: {subjects}")
    if trace:
        log = verified.statement["predicate"]["monitorLog"]
        counts = {k: len(log.get(k) or []) for k in ("process", "network", "fileAccess")}
        digests = sum(1 for f in log.get("fileAccess") or [] if f.get("digest"))
        click.echo(
            f"    monitorLog: {counts['process']} process(es), {counts['network']} network "
            f"event(s), {counts['fileAccess']} file access(es), {digests} with a digest"
        )
    if receipt_path is not None:
        relation = "gives exactly this trace" if trace else "is identical to the signed receipt"
        click.echo(f"    {receipt_path} {relation}")


@click.command("verify-log")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    type=_EXISTING,
    help="Public key: every receipt must also carry a valid signed envelope.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_log(directory: Path, key_path: Path | None, as_json: bool) -> None:
    """Check a receipt log: name every modified, deleted, inserted or reordered receipt.

    Exit 0 when the log is intact, 1 otherwise.
    """
    from dataclasses import asdict

    from glasshouse.receipt.verify_log import verify_log as check

    key = None
    if key_path is not None:
        from glasshouse.receipt.sign import KeyFileError, load_public_key

        try:
            key = load_public_key(key_path)
        except KeyFileError as exc:
            fail(str(exc), 2)
    report = check(directory, key=key)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "directory": str(report.directory),
                    "ok": report.ok,
                    "receipts": report.receipts,
                    "last_sequence": report.last_sequence,
                    "indexed": report.indexed,
                    "problems": [asdict(p) for p in report.problems],
                },
                indent=2,
            )
        )
    else:
        click.echo(report.summary())
        for problem in report.problems:
            click.echo(f"  {problem}")
    sys.exit(0 if report.ok else 1)


@click.group()
def policy() -> None:
    """Evaluate declarative policies over receipts."""


@policy.command("check")
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), required=True)
@click.argument("receipts", nargs=-1, required=True, type=_EXISTING)
@click.option("--json", "as_json", is_flag=True, help="Print each verdict as JSON.")
def check(policy_path: Path, receipts: tuple[Path, ...], as_json: bool) -> None:
    """Check RECEIPTS against a policy.

    Exit 0: every receipt passes. 1: a deny rule fired. 2: the policy (line and reason) or
    a receipt is malformed.
    """
    from glasshouse.policy import PolicyError, evaluate, load_policy
    from glasshouse.receipt.canonical import check_digest
    from glasshouse.receipt.store import ReceiptError, load_receipt

    try:
        loaded = load_policy(policy_path)
    except PolicyError as exc:
        fail(f"bad policy: {exc.diagnostic()}", 2)
    worst = 0
    for path in receipts:
        try:
            receipt = load_receipt(path)
        except ReceiptError as exc:
            fail(str(exc), 2)
        verdict = evaluate(loaded, receipt)
        worst = max(worst, 0 if verdict.passed else 1)
        if as_json:
            click.echo(json.dumps({"receipt": str(path), **verdict.to_dict()}, indent=2))
            continue
        status = "PASS" if verdict.passed else "FAIL"
        click.echo(f"{status}: {path} ({receipt.execution_id}) · policy {verdict.policy}")
        for result in verdict.fired:
            label = "violation" if result.action == "deny" else "warning"
            click.echo(f"  {label}: {result.rule} [{result.severity}]")
            if result.description:
                click.echo(f"    {result.description}")
            for ev in result.evidence[:5]:
                click.echo(f"    {ev.at or '(absent)'}: {ev.summary()}")
            if len(result.evidence) > 5:
                click.echo(f"    ... {len(result.evidence) - 5} more")
        if verdict.unobserved:
            click.echo(
                f"  note: not observed in this receipt: {', '.join(verdict.unobserved)}"
                " (the policy could not judge them)"
            )
        if receipt.digest is not None and not check_digest(receipt):
            click.echo("  note: the receipt's digest does not match its content (modified?)")
        lost = receipt.observation.events_lost
        if lost:
            click.echo(f"  note: the observer lost {lost} event(s): a pass may have missed some")
    sys.exit(worst)


@policy.command("validate")
@click.argument("policy_path", metavar="POLICY", type=click.Path(path_type=Path))
def validate(policy_path: Path) -> None:
    """Parse POLICY and list its rules (exit 0), or say where it is wrong (exit 2)."""
    from glasshouse.policy import PolicyError, load_policy

    try:
        loaded = load_policy(policy_path)
    except PolicyError as exc:
        fail(f"bad policy: {exc.diagnostic()}", 2)
    click.echo(f"{policy_path}: policy {loaded.name}, {len(loaded.rules)} rule(s), {loaded.digest}")
    for rule in loaded.rules:
        click.echo(f"  {rule.id}: {rule.action} [{rule.severity}] (line {rule.line})")


@click.group()
def training() -> None:
    """Derive training signals from receipts."""


@training.command("export")
@click.argument("receipts_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "parquet"]),
    default="jsonl",
    show_default=True,
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path),
    help="Evaluate this policy for receipts that carry no verdict.",
)
def export(receipts_dir: Path, out: Path, fmt: str, policy_path: Path | None) -> None:
    """One record per run in RECEIPTS_DIR, streamed to --out (JSONL, or Parquet with pyarrow)."""
    from glasshouse.training import ExportError
    from glasshouse.training import export as run_export

    loaded = None
    if policy_path is not None:
        from glasshouse.policy import PolicyError, load_policy

        try:
            loaded = load_policy(policy_path)
        except PolicyError as exc:
            fail(f"bad policy: {exc.diagnostic()}", 2)
    try:
        stats = run_export(receipts_dir, out, fmt=fmt, policy=loaded)
    except ExportError as exc:
        fail(str(exc), 2)
    click.echo(
        f"{stats.records} records -> {out} ({fmt}); skipped {stats.skipped} unreadable file(s)",
        err=True,
    )
    for problem in stats.problems[:10]:
        click.echo(f"  skipped: {problem}", err=True)
