"""Parquet output (optional: only when pyarrow is importable), written in bounded batches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

_BATCH = 4096


def _schema() -> Any:
    import pyarrow as pa

    def counts(names: list[str]) -> Any:
        return pa.struct([(n, pa.int64()) for n in names])

    from glasshouse.training.export import (
        EXEC_CATEGORIES,
        FILE_CATEGORIES,
        FILE_OPS,
        NET_CATEGORIES,
    )

    strings = pa.list_(pa.string())
    return pa.schema(
        [
            ("schema", pa.string()),
            ("execution_id", pa.string()),
            ("timestamp", pa.string()),
            ("sequence", pa.int64()),
            ("receipt_digest", pa.string()),
            ("code_hash", pa.string()),
            ("command_hash", pa.string()),
            ("backend", pa.string()),
            ("isolation", pa.string()),
            ("profile", pa.string()),
            ("observed", strings),
            ("events_lost", pa.int64()),
            (
                "outcome",
                pa.struct(
                    [
                        ("exit_code", pa.int64()),
                        ("signal", pa.int64()),
                        ("timed_out", pa.bool_()),
                        ("error", pa.bool_()),
                    ]
                ),
            ),
            ("duration_ms", pa.int64()),
            ("cpu_time_ms", pa.int64()),
            ("max_rss_kb", pa.int64()),
            (
                "policy",
                pa.struct(
                    [
                        ("evaluated", pa.bool_()),
                        ("name", pa.string()),
                        ("passed", pa.bool_()),
                        ("violations", strings),
                        ("warnings", strings),
                    ]
                ),
            ),
            (
                "counts",
                pa.struct(
                    [
                        ("execs", counts(["total", *EXEC_CATEGORIES, "other"])),
                        (
                            "files",
                            pa.struct([(op, counts(list(FILE_CATEGORIES))) for op in FILE_OPS]),
                        ),
                        ("network", counts(["total", *NET_CATEGORIES, "tcp", "udp"])),
                        ("syscalls", pa.int64()),
                    ]
                ),
            ),
            ("first_seen", strings),
            ("label", pa.string()),
            ("reward", pa.float64()),
        ]
    )


def write_parquet(records: Iterator[dict[str, Any]], out: str | os.PathLike[str]) -> None:
    from glasshouse.training.export import ExportError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError("parquet output needs pyarrow (pip install pyarrow)") from exc
    schema = _schema()
    with pq.ParquetWriter(os.fspath(out), schema) as writer:
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            if len(batch) >= _BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch.clear()
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
