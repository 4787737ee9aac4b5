"""A receipt log that several processes can append to: each append holds an exclusive
``flock`` on the log directory's ``.append.lock``.

:class:`~glasshouse.receipt.log.ReceiptLog` is thread-safe within one process and reads its
head from disk on every append; two ``glasshouse mcp`` processes (two agent windows) sharing
the default receipts directory would still race between reading the head and writing the
next receipt, or one opening the log (which settles what an interrupted append left) while
the other appends. The lock closes both windows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glasshouse.receipt.log import ReceiptLog
from glasshouse.receipt.model import Receipt

LOCK_FILE = ".append.lock"


class SharedReceiptLog(ReceiptLog):
    def __init__(self, directory: str | os.PathLike[str], signing_key: Any = None) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with _locked(Path(directory)):
            super().__init__(directory, signing_key)

    def append(self, receipt: Receipt) -> Receipt:
        with _locked(self.dir):
            return super().append(receipt)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)
