"""Canonical JSON (RFC 8785, JCS) and the receipt's content digest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import rfc8785

from glasshouse.core.hashing import sha256

if TYPE_CHECKING:
    from glasshouse.receipt.model import Receipt


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` (JSON data: dict, list, str, int, float, bool, None) per RFC 8785."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return sha256(data).hexdigest()


def as_data(receipt: Receipt | dict[str, Any]) -> dict[str, Any]:
    """The receipt as JSON data (a copy when given a model)."""
    if isinstance(receipt, dict):
        return receipt
    return receipt.model_dump(mode="json")


def receipt_payload(receipt: Receipt | dict[str, Any]) -> dict[str, Any]:
    """The receipt as JSON data, without its ``digest`` field (what the digest covers)."""
    data = dict(as_data(receipt))
    data.pop("digest", None)
    return data


def compute_digest(receipt: Receipt | dict[str, Any]) -> str:
    """``sha256:<hex>`` over the canonical bytes of the receipt without its digest field."""
    return "sha256:" + sha256_hex(canonical_json(receipt_payload(receipt)))


def seal(receipt: Receipt) -> Receipt:
    """Return a copy of ``receipt`` with ``digest`` set to its content digest."""
    return receipt.model_copy(update={"digest": compute_digest(receipt)})


def seal_data(data: dict[str, Any]) -> dict[str, Any]:
    """Like :func:`seal` for receipt JSON data."""
    return {**data, "digest": compute_digest(data)}


def check_digest(receipt: Receipt | dict[str, Any]) -> bool:
    """True when the receipt carries a digest and it matches its content."""
    data = as_data(receipt)
    return data.get("digest") is not None and data["digest"] == compute_digest(data)


def to_bytes(receipt: Receipt | dict[str, Any]) -> bytes:
    """The canonical bytes of the whole receipt (digest included), as written to disk."""
    return canonical_json(as_data(receipt))
