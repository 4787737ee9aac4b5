"""Reading and writing receipts: atomic writes, strict loads."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glasshouse.core.errors import ReceiptError as ReceiptError
from glasshouse.receipt.canonical import seal, seal_data, to_bytes

if TYPE_CHECKING:
    from glasshouse.receipt.model import Receipt


def write_atomic(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *, sync_dir: bool = True
) -> Path:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a part.

    Temp file in the same directory, fsync, rename over the target, fsync the directory.
    ``sync_dir=False`` leaves the directory fsync to the caller, who batches several renames
    in one directory under a single fsync (the receipt log does).
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    # (not tempfile.mkstemp: importing tempfile costs ~6 ms of CLI start-up)
    tmp = os.path.join(directory, f".{target.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)
    return target


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``: a short write is continued, and a write that makes no
    progress (the file system is full) raises ``OSError(ENOSPC)``, never passes silently."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "no progress writing (file system full?)")
        view = view[n:]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the renames in ``directory`` durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_receipt(
    receipt: Receipt | dict[str, Any], path: str | os.PathLike[str], *, sync_dir: bool = True
) -> Any:
    """Seal (digest) and atomically write ``receipt`` (a model or its JSON data) as canonical
    JSON; return the sealed copy, of the same kind as given."""
    if isinstance(receipt, dict):
        sealed: Any = receipt if receipt.get("digest") else seal_data(receipt)
    else:
        sealed = seal(receipt) if receipt.digest is None else receipt
    write_atomic(path, to_bytes(sealed) + b"\n", sync_dir=sync_dir)
    return sealed


def load_receipt(path: str | os.PathLike[str]) -> Receipt:
    """Load and validate a receipt file; raise :class:`ReceiptError` with a readable reason."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ReceiptError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_receipt(raw, source=str(path))


def parse_receipt(raw: bytes | str, source: str = "<receipt>") -> Receipt:
    import json

    from pydantic import ValidationError

    from glasshouse.receipt.model import Receipt

    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReceiptError(f"{source}: not JSON: {exc}") from exc
    try:
        return Receipt.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ReceiptError(
            f"{source}: not a v0.3.0 receipt: {where}: {first['msg']}"
            f" ({exc.error_count()} problem(s))"
        ) from exc
