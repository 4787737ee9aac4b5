"""Execution receipts: the v0.4.0 model (v0.3.0 ones still read), canonical JSON, digests and
atomic storage.

Exports load lazily: writing a receipt on the run hot path never imports pydantic.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Receipt": "glasshouse.receipt.model",
    "canonical_json": "glasshouse.receipt.canonical",
    "check_digest": "glasshouse.receipt.canonical",
    "compute_digest": "glasshouse.receipt.canonical",
    "seal": "glasshouse.receipt.canonical",
    "ReceiptError": "glasshouse.receipt.store",
    "load_receipt": "glasshouse.receipt.store",
    "parse_receipt": "glasshouse.receipt.store",
    "write_receipt": "glasshouse.receipt.store",
    "ReceiptLog": "glasshouse.receipt.log",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glasshouse.receipt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
