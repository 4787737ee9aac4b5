"""``glasshouse receipt show|export`` and ``glasshouse schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from glasshouse.cli._util import fail


@click.group()
def receipt() -> None:
    """Inspect and export receipts."""


@receipt.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the validated receipt as JSON.")
@click.option("--limit", default=15, show_default=True, help="Entries shown per list.")
def show(path: Path, as_json: bool, limit: int) -> None:
    """A readable summary of a receipt (v0.3.0 or v0.4.0, validated)."""
    from glasshouse.receipt.canonical import check_digest
    from glasshouse.receipt.store import ReceiptError, load_receipt

    try:
        rec = load_receipt(path)
    except ReceiptError as exc:
        fail(str(exc), 2)
    if as_json:
        click.echo(rec.model_dump_json(indent=2))
        return
    from glasshouse.cli._show import render

    render(rec, digest_ok=check_digest(rec), limit=limit)


#: ``--format`` -> what ``receipt export`` writes (our own predicate first: the default).
FORMATS = ("glasshouse", "in-toto-runtime-trace")


@receipt.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=FORMATS[0],
    show_default=True,
    help="glasshouse: the receipt as our own in-toto predicate (as `run --sign` signs it); "
    "in-toto-runtime-trace: as in-toto's runtime-trace v0.1 predicate.",
)
@click.option(
    "--sign",
    "key_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign with this Ed25519 private key: write a DSSE envelope, not the bare statement.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (atomically) instead of stdout.",
)
def export(path: Path, fmt: str, key_path: Path | None, out: Path | None) -> None:
    """Write the receipt at PATH as an in-toto statement (signed with --sign).

    \b
    Exit 0: written. Exit 2: the receipt is unreadable, invalid or its digest does not
    match its content (a modified receipt is never signed), or the key is unusable.
    """
    from glasshouse.receipt.canonical import as_data, check_digest
    from glasshouse.receipt.store import ReceiptError, load_receipt

    try:
        data = as_data(load_receipt(path))
    except ReceiptError as exc:
        fail(str(exc), 2)
    if data.get("digest") is not None and not check_digest(data):
        fail(f"{path}: the receipt's digest does not match its content (modified?)", 2)
    document = _export_document(data, fmt, key_path)
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    from glasshouse.receipt.store import write_atomic

    try:
        write_atomic(out, text.encode())
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", 2)


def _export_document(data: dict[str, Any], fmt: str, key_path: Path | None) -> dict[str, Any]:
    from glasshouse.receipt import intoto, sign

    key = None
    if key_path is not None:
        try:
            key = sign.load_private_key(key_path)
        except sign.KeyFileError as exc:
            fail(str(exc), 2)
    if fmt == "in-toto-runtime-trace":
        if key is None:
            return intoto.runtime_trace_statement(data)
        return intoto.sign_runtime_trace(data, key)
    return sign.statement(data) if key is None else sign.sign_receipt(data, key)


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def schema(out: Path | None) -> None:
    """Print the JSON Schema of the receipt this version writes (v0.4.0)."""
    text = schema_text()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


def receipt_schema() -> dict[str, Any]:
    from glasshouse.core.version import RECEIPT_VERSION
    from glasshouse.receipt.model import Receipt

    doc = Receipt.model_json_schema(mode="validation")
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["$id"] = f"https://glasshouse.dev/schemas/receipt-{RECEIPT_VERSION}.schema.json"
    doc["title"] = f"Glasshouse execution receipt {RECEIPT_VERSION}"
    return doc


def schema_text() -> str:
    return json.dumps(receipt_schema(), indent=2, sort_keys=True) + "\n"
