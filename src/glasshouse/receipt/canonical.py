"""Canonical JSON (RFC 8785, JCS) and the receipt's content digest."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from glasshouse.receipt.model import Receipt


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` (JSON data: dict, list, str, int, float, bool, None) per RFC 8785."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def receipt_payload(receipt: Receipt) -> dict[str, Any]:
    """The receipt as JSON data, without its ``digest`` field (what the digest covers)."""
    data = receipt.model_dump(mode="json")
    data.pop("digest", None)
    return data


def compute_digest(receipt: Receipt) -> str:
    """``sha256:<hex>`` over the canonical bytes of the receipt without its digest field."""
    return "sha256:" + sha256_hex(canonical_json(receipt_payload(receipt)))


def seal(receipt: Receipt) -> Receipt:
    """Return a copy of ``receipt`` with ``digest`` set to its content digest."""
    return receipt.model_copy(update={"digest": compute_digest(receipt)})


def check_digest(receipt: Receipt) -> bool:
    """True when the receipt carries a digest and it matches its content."""
    return receipt.digest is not None and receipt.digest == compute_digest(receipt)


def to_bytes(receipt: Receipt) -> bytes:
    """The canonical bytes of the whole receipt (digest included), as written to disk."""
    return canonical_json(receipt.model_dump(mode="json"))
