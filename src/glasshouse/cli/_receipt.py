"""``glasshouse receipt show`` and ``glasshouse schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from glasshouse.cli._util import fail


@click.group()
def receipt() -> None:
    """Inspect receipts."""


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
