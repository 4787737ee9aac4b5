"""An SQLite index (WAL) of the receipt directory, for listing and lookup.

The receipt files are the truth; this index is a cache of a few fields per receipt. It lives
next to the files (``index.sqlite3``) and is reconciled with them at startup: a lost or
corrupt index is rebuilt, receipts missing from it (a crash between the file write and the
index insert) are added and rows whose file is gone are dropped.

Each row also has the receipt's ``owner``, the tenant whose request made it
(``glasshouse.server._tenancy``). The owner is not in the receipt file: a row added from the
files (rebuild, reconcile) has none, so only admins see it (fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from glasshouse.receipt.log import RECEIPT_ID
from glasshouse.receipt.store import ReceiptError, load_receipt

INDEX_NAME = "index.sqlite3"
_COLUMNS = (
    "id",
    "sequence",
    "timestamp",
    "exit_code",
    "timed_out",
    "error",
    "duration_ms",
    "backend",
    "isolation",
    "code_hash",
    "digest",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    id TEXT PRIMARY KEY,
    sequence INTEGER,
    timestamp TEXT NOT NULL,
    exit_code INTEGER,
    timed_out INTEGER NOT NULL,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    backend TEXT NOT NULL,
    isolation TEXT NOT NULL,
    code_hash TEXT,
    digest TEXT,
    -- listing order: append order (sequence), then id (time-sortable) for unsequenced rows
    ord INTEGER NOT NULL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS receipts_ord ON receipts (ord);
"""
#: Added after the first schema: an index made before tenancy gets the column (rows with
#: no owner: visible to admins only), then its index.
_MIGRATE = "ALTER TABLE receipts ADD COLUMN owner TEXT"
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS receipts_owner_ord ON receipts (owner, ord)"
_log = logging.getLogger("glasshouse.server")


def row_of(data: dict[str, Any]) -> dict[str, Any]:
    """The indexed fields of a receipt (its JSON data)."""
    outcome = data.get("outcome") or {}
    execution = data.get("execution") or {}
    return {
        "id": data["execution_id"],
        "sequence": data.get("sequence"),
        "timestamp": data.get("timestamp") or "",
        "exit_code": outcome.get("exit_code"),
        "timed_out": bool(outcome.get("timed_out")),
        "error": outcome.get("error"),
        "duration_ms": int((data.get("timing") or {}).get("duration_ms") or 0),
        "backend": str(execution.get("backend", "")),
        "isolation": str(execution.get("isolation", "")),
        "code_hash": data.get("code_hash"),
        "digest": data.get("digest"),
    }


class ReceiptIndex:
    """Thread-safe: one connection behind a lock (every statement is a few microseconds)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / INDEX_NAME
        self._lock = threading.Lock()
        self.rebuilt = False
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            _log.warning("receipt index %s unusable (%s): rebuilding it", self.path, exc)
            self._discard()
            self._db = self._open()
            self.rebuilt = True
        self.added, self.dropped = self.reconcile()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # the files are the durable copy
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(receipts)")}
            if "owner" not in columns:
                db.execute(_MIGRATE)
            db.execute(_OWNER_INDEX)
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
        except BaseException:
            db.close()
            raise
        return db

    def _discard(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / (INDEX_NAME + suffix)).unlink()

    def reconcile(self) -> tuple[int, int]:
        """Make the index match the receipt files; return (rows added, rows dropped)."""
        on_disk = {
            p.name[: -len(".json")]
            for p in self.dir.glob("exec-*.json")
            if RECEIPT_ID.fullmatch(p.name[: -len(".json")])
        }
        with self._lock:
            indexed = {r[0] for r in self._db.execute("SELECT id FROM receipts")}
        missing, gone = on_disk - indexed, indexed - on_disk
        rows = []
        for rid in sorted(missing):
            try:
                receipt = load_receipt(self.dir / f"{rid}.json")
            except ReceiptError as exc:
                _log.warning("not indexing %s: %s", rid, exc)
                continue
            rows.append(row_of(receipt.model_dump(mode="json")))
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM receipts WHERE id = ?", [(g,) for g in gone])
            for row in rows:
                self._insert(row)
            self._db.execute("COMMIT")
        return len(rows), len(gone)

    def add(self, data: dict[str, Any], owner: str | None = None) -> None:
        """Index the stored receipt ``data``, made for the tenant ``owner``."""
        row = row_of(data)
        with self._lock:
            self._insert(row, owner)

    def _insert(self, row: dict[str, Any], owner: str | None = None) -> None:
        # Sequenced receipts sort by sequence; ids sort by creation time, so an unsequenced
        # one (copied in by hand) sorts before every sequenced one with a large negative key.
        seq = row["sequence"]
        ord_key = seq if seq is not None else -(1 << 62) + int(row["id"].split("-")[1])
        self._db.execute(
            f"INSERT OR REPLACE INTO receipts ({', '.join(_COLUMNS)}, ord, owner)"
            f" VALUES ({', '.join('?' * len(_COLUMNS))}, ?, ?)",
            [*(row[c] for c in _COLUMNS), ord_key, owner],
        )

    def exists(self, rid: str) -> bool:
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM receipts WHERE id = ?", (rid,)).fetchone()
                is not None
            )

    def owner(self, rid: str) -> tuple[bool, str | None]:
        """(indexed, owner) of the receipt ``rid``."""
        with self._lock:
            row = self._db.execute("SELECT owner FROM receipts WHERE id = ?", (rid,)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def page(
        self, limit: int, before: int | None, owner: str | None = None, *, everyone: bool = True
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first: up to ``limit`` rows with ``ord < before``; and the next cursor.
        Unless ``everyone``, only the rows owned by ``owner``."""
        query = f"SELECT {', '.join(_COLUMNS)}, ord FROM receipts"
        where: list[str] = []
        args: list[Any] = []
        if not everyone:
            where.append("owner = ?")
            args.append(owner)
        if before is not None:
            where.append("ord < ?")
            args.append(before)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY ord DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        out = [dict(zip(_COLUMNS, r[:-1], strict=True)) for r in rows]
        for item in out:
            item["timed_out"] = bool(item["timed_out"])
        return out, (rows[-1][-1] if more and rows else None)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM receipts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
