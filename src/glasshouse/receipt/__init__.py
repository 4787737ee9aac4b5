"""Execution receipts: the v0.3.0 model, canonical JSON, digests and atomic storage."""

from glasshouse.receipt.canonical import canonical_json, check_digest, compute_digest, seal
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.store import ReceiptError, load_receipt, parse_receipt, write_receipt

__all__ = [
    "Receipt",
    "ReceiptError",
    "canonical_json",
    "check_digest",
    "compute_digest",
    "load_receipt",
    "parse_receipt",
    "seal",
    "write_receipt",
]
