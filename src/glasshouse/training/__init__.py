"""Training signals derived from receipts: ``export(receipts_dir, out)`` streams one record
per run (see :mod:`glasshouse.training.export` for the record and its label)."""

from __future__ import annotations

from glasshouse.training.export import (
    RECORD_SCHEMA,
    REWARDS,
    ExportError,
    ExportStats,
    export,
    iter_records,
    label_for,
    record_for,
)

__all__ = [
    "RECORD_SCHEMA",
    "REWARDS",
    "ExportError",
    "ExportStats",
    "export",
    "iter_records",
    "label_for",
    "record_for",
]
