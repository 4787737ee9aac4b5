"""A tamper-evident receipt log: a directory of receipts, each linked to the one before.

Each appended receipt gets ``sequence`` (0, 1, 2, ...) and ``previous_digest`` (the digest
of the receipt appended just before it, ``None`` for the first) and is then sealed, so its
digest covers the link. Files are ``<execution_id>.json``, written atomically; ``HEAD``
holds the last sequence number and digest so appends do not rescan the directory.
``INDEX`` is an append-only journal, one JSON line ``{"sequence", "id", "digest"}`` per
append: it lets verification name a deleted receipt by its id and tell a reordered one from a
modified one. With a signing key, ``<execution_id>.dsse.json`` beside each receipt is its
signed envelope (:mod:`glasshouse.receipt.sign`): the signature covers the chain links too.
Verification (modified, deleted, inserted or reordered receipts) lives in
:mod:`glasshouse.receipt.verify_log`.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from glasshouse.receipt.canonical import seal
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.store import fsync_dir, load_receipt, write_atomic, write_receipt

#: Receipt ids this store accepts: path traversal is impossible by construction.
RECEIPT_ID = re.compile(r"^exec-[0-9]{13}-[0-9a-f]{20}$")
HEAD = "HEAD"
INDEX = "INDEX"


class ReceiptLog:
    """Append-only, hash-linked receipt directory. Thread-safe within one process."""

    def __init__(self, directory: str | os.PathLike[str], signing_key: Any = None) -> None:
        """``signing_key`` (an Ed25519 private key, optional): every appended receipt also
        gets ``<execution_id>.dsse.json``, its signed envelope, covering its chain links."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.signing_key = signing_key

    def path_for(self, execution_id: str) -> Path:
        if not RECEIPT_ID.fullmatch(execution_id):
            raise ValueError(f"not a receipt id: {execution_id!r}")
        return self.dir / f"{execution_id}.json"

    def head(self) -> tuple[int, str | None]:
        """(next sequence number, digest of the last receipt)."""
        try:
            data = json.loads((self.dir / HEAD).read_text())
            found = int(data["sequence"]) + 1, str(data["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return self._rescan()
        # INDEX is written before HEAD: after a crash between the two, INDEX is ahead.
        journal = self._index_tail()
        if journal is not None and journal[0] > found[0]:
            return journal
        return found

    def _index_tail(self) -> tuple[int, str] | None:
        """(next sequence, digest) from the last complete INDEX line, or None."""
        try:
            with open(self.dir / INDEX, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 4096))
                tail = fh.read()
        except OSError:
            return None
        lines = tail.split(b"\n")
        for line in reversed(lines[:-1]):  # the last element follows the final newline
            try:
                item = json.loads(line)
                return int(item["sequence"]) + 1, str(item["digest"])
            except (ValueError, KeyError, TypeError):
                continue
        return None

    def _rescan(self) -> tuple[int, str | None]:
        last: Receipt | None = None
        for path in self.dir.glob("exec-*.json"):
            try:
                receipt = load_receipt(path)
            except Exception:
                continue
            if receipt.sequence is not None and (
                last is None or (last.sequence or 0) < receipt.sequence
            ):
                last = receipt
        if last is None or last.sequence is None:
            return 0, None
        return last.sequence + 1, last.digest

    def append(self, receipt: Receipt) -> Receipt:
        """Link, seal and atomically store ``receipt``; return the stored copy."""
        with self._lock:
            sequence, previous = self.head()
            linked = seal(
                receipt.model_copy(
                    update={"sequence": sequence, "previous_digest": previous, "digest": None}
                )
            )
            # One directory fsync at the end covers every rename below (same directory).
            write_receipt(linked, self.path_for(linked.execution_id), sync_dir=False)
            if self.signing_key is not None:
                self._sign(linked)
            self._journal(sequence, linked)
            head = {"sequence": sequence, "digest": linked.digest, "id": linked.execution_id}
            write_atomic(self.dir / HEAD, json.dumps(head).encode(), sync_dir=False)
            fsync_dir(self.dir)
            return linked

    def envelope_path_for(self, execution_id: str) -> Path:
        return self.path_for(execution_id).with_suffix(".dsse.json")

    def _sign(self, receipt: Receipt) -> None:
        from glasshouse.receipt.sign import sign_receipt

        envelope = sign_receipt(receipt, self.signing_key)
        path = self.envelope_path_for(receipt.execution_id)
        write_atomic(path, (json.dumps(envelope, indent=2) + "\n").encode(), sync_dir=False)

    def _journal(self, sequence: int, receipt: Receipt) -> None:
        line = json.dumps(
            {"sequence": sequence, "id": receipt.execution_id, "digest": receipt.digest},
            separators=(",", ":"),
        )
        fd = os.open(self.dir / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, execution_id: str) -> Receipt:
        return load_receipt(self.path_for(execution_id))
