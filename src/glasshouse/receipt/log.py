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

An append writes, in this order: the ``INDEX`` line (the intent), the receipt file, its
envelope, then ``HEAD`` (the commit), then fsyncs the directory. A failed append (full disk,
I/O error, short write) is undone completely: ``HEAD`` restored, receipt and envelope removed,
``INDEX`` truncated back to its old size. What a crash leaves is settled by the next append:
a partial last ``INDEX`` line is cut off, and an ``INDEX`` line past ``HEAD`` is committed
when its files are complete, else undone. So no sequence number is ever used twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glasshouse.core import procfs
from glasshouse.receipt.canonical import compute_digest, seal
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.store import fsync_dir, load_receipt, write_all, write_atomic, write_receipt

#: Receipt ids this store accepts: path traversal is impossible by construction.
RECEIPT_ID = re.compile(r"^exec-[0-9]{13}-[0-9a-f]{20}$")
HEAD = "HEAD"
INDEX = "INDEX"
#: Free space below which the store reports itself unable to take an append.
MIN_FREE_BYTES = 1 << 20
_PROBE = ".probe"
_TAIL_BYTES = 4096
_log = logging.getLogger("glasshouse.receipt")


@dataclass(frozen=True)
class _Line:
    """One complete ``INDEX`` line and the file offset it starts at."""

    sequence: int
    id: str
    digest: str
    offset: int


class ReceiptLog:
    """Append-only, hash-linked receipt directory. Thread-safe within one process."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        signing_key: Any = None,
        *,
        min_free: int = MIN_FREE_BYTES,
    ) -> None:
        """``signing_key`` (an Ed25519 private key, optional): every appended receipt also
        gets ``<execution_id>.dsse.json``, its signed envelope, covering its chain links.
        ``min_free``: below this many free bytes :meth:`unavailable` refuses appends.

        Opening settles what a crashed writer left (stale temp files, an interrupted
        append, a receipt written without its ``INDEX`` line by an older version); if that
        cannot write, the log opens marked unavailable (see :attr:`failure`)."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.signing_key = signing_key
        self.min_free = min_free
        #: Why the last append (or the recovery at open) failed to write; cleared by a probe
        #: or an append that succeeds.
        self.failure: str | None = None
        with self._lock:
            try:
                self._sweep_temp_files()
                self._adopt_orphans()
            except OSError as exc:
                self._failed("recovering the log at open", exc)

    def path_for(self, execution_id: str) -> Path:
        if not RECEIPT_ID.fullmatch(execution_id):
            raise ValueError(f"not a receipt id: {execution_id!r}")
        return self.dir / f"{execution_id}.json"

    def envelope_path_for(self, execution_id: str) -> Path:
        return self.path_for(execution_id).with_suffix(".dsse.json")

    def get(self, execution_id: str) -> Receipt:
        return load_receipt(self.path_for(execution_id))

    # -- the head of the chain -------------------------------------------------------------
    def head(self) -> tuple[int, str | None]:
        """(next sequence number, digest of the last receipt), read only."""
        head = self._read_head()
        tail = self._index_lines()
        if tail and (head is None or tail[-1].sequence > head[0]):
            # INDEX is written before HEAD: after a crash between the two, INDEX is ahead.
            return tail[-1].sequence + 1, tail[-1].digest
        if head is not None:
            return head[0] + 1, head[1]
        return self._rescan()

    def _read_head(self) -> tuple[int, str] | None:
        try:
            data = json.loads((self.dir / HEAD).read_text())
            return int(data["sequence"]), str(data["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _index_lines(self) -> list[_Line]:
        """The complete lines at the end of INDEX (up to the last 4 KiB), oldest first."""
        try:
            with open(self.dir / INDEX, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - _TAIL_BYTES)
                fh.seek(start)
                tail = fh.read()
        except OSError:
            return []
        lines: list[_Line] = []
        offset = start
        chunks = tail.split(b"\n")
        for i, chunk in enumerate(chunks[:-1]):  # the last element follows the final newline
            line_start, offset = offset, offset + len(chunk) + 1
            if i == 0 and start > 0:
                continue  # may be the end of a line that began before the window
            try:
                item = json.loads(chunk)
                lines.append(
                    _Line(int(item["sequence"]), str(item["id"]), str(item["digest"]), line_start)
                )
            except (ValueError, KeyError, TypeError):
                continue
        return lines

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

    # -- appending -------------------------------------------------------------------------
    def append(self, receipt: Receipt) -> Receipt:
        """Link, seal and atomically store ``receipt``; return the stored copy.

        On any error nothing of this append stays (and :attr:`failure` says why, for an
        ``OSError``); the error is raised."""
        with self._lock:
            try:
                sequence, previous = self._settle()
                linked = seal(
                    receipt.model_copy(
                        update={"sequence": sequence, "previous_digest": previous, "digest": None}
                    )
                )
                if self.path_for(linked.execution_id).exists():
                    raise ValueError(f"{linked.execution_id} is already in the log")
                self._commit(sequence, linked)
            except OSError as exc:
                self._failed("appending a receipt", exc)
                raise
            self.failure = None
            return linked

    def _commit(self, sequence: int, linked: Receipt) -> None:
        rid = linked.execution_id
        head_before = _read_or_none(self.dir / HEAD)
        index_size = self._journal(sequence, linked)
        try:
            # One directory fsync at the end covers every rename below (same directory).
            write_receipt(linked, self.path_for(rid), sync_dir=False)
            if self.signing_key is not None:
                self._sign(linked)
            head = {"sequence": sequence, "digest": linked.digest, "id": rid}
            write_atomic(self.dir / HEAD, json.dumps(head).encode(), sync_dir=False)
            fsync_dir(self.dir)
        except BaseException:
            try:
                self._undo(rid, index_size, head_before)
            except OSError as exc:  # the next append's _settle finishes the job
                _log.error("undoing the failed append of %s: %s", rid, exc)
            raise

    def _journal(self, sequence: int, receipt: Receipt) -> int:
        """Append the INDEX line (all of it, fsynced) and return INDEX's size before it."""
        line = json.dumps(
            {"sequence": sequence, "id": receipt.execution_id, "digest": receipt.digest},
            separators=(",", ":"),
        )
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.dir / INDEX, flags, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                write_all(fd, (line + "\n").encode())
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):  # else the next append trims it
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise
        finally:
            os.close(fd)
        return size

    def _sign(self, receipt: Receipt) -> None:
        from glasshouse.receipt.sign import sign_receipt

        envelope = sign_receipt(receipt, self.signing_key)
        path = self.envelope_path_for(receipt.execution_id)
        write_atomic(path, (json.dumps(envelope, indent=2) + "\n").encode(), sync_dir=False)

    def _undo(self, rid: str, index_size: int, head_before: bytes | None) -> None:
        """Remove every trace of an append, newest first: HEAD back to ``head_before``,
        envelope and receipt removed, INDEX cut back to ``index_size``. Raises at the first
        step that fails: whatever is left is still a state :meth:`_settle` resolves."""
        head = self.dir / HEAD
        if _read_or_none(head) != head_before:
            if head_before is None:
                head.unlink()
            else:
                write_atomic(head, head_before, sync_dir=False)
        self.envelope_path_for(rid).unlink(missing_ok=True)
        self.path_for(rid).unlink(missing_ok=True)
        self._truncate_index(index_size)
        fsync_dir(self.dir)

    def _truncate_index(self, size: int) -> None:
        path = self.dir / INDEX
        if size == 0:  # an empty INDEX would disown every receipt: no INDEX at all instead
            path.unlink(missing_ok=True)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- recovery ----------------------------------------------------------------------------
    def _settle(self) -> tuple[int, str | None]:
        """Finish or undo what an interrupted append left; return :meth:`head`.

        A partial last INDEX line is cut off. An INDEX line one past a consistent HEAD is
        an append that did not reach its commit: committed (HEAD written) when its receipt
        (and envelope, when signing) is complete, else undone."""
        self._trim_index()
        head = self._read_head()
        lines = self._index_lines()
        if head is not None and (not lines or lines[-1].sequence <= head[0]):
            return head[0] + 1, head[1]
        if not lines:
            return self._rescan()
        last = lines[-1]
        before = lines[-2] if len(lines) > 1 else None
        consistent = (
            last.sequence == 0 and head is None and last.offset == 0
            if before is None
            else head is not None and (before.sequence, before.digest) == head
        )
        if not consistent:
            return self.head()  # not an interrupted append: leave it for verify-log
        if self._complete(last):
            head_data = {"sequence": last.sequence, "digest": last.digest, "id": last.id}
            write_atomic(self.dir / HEAD, json.dumps(head_data).encode())
            done = "committed"
        else:
            self._undo(last.id, last.offset, _read_or_none(self.dir / HEAD))
            done = "undid"
        _log.warning("%s the interrupted append of %s (sequence %d)", done, last.id, last.sequence)
        return self.head()

    def _trim_index(self) -> None:
        """Cut a partial last line (no newline: a short write or a crash) off INDEX."""
        path = self.dir / INDEX
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - _TAIL_BYTES)
                fh.seek(start)
                tail = fh.read()
        except FileNotFoundError:
            return
        if not tail or tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and start > 0:
            return  # a "line" over 4 KiB is no journal line of ours: leave it to verify-log
        keep = start + cut + 1
        _log.warning("cutting a partial line of %d bytes off %s", size - keep, path)
        self._truncate_index(keep)

    def _complete(self, line: _Line) -> bool:
        """Is the receipt an INDEX line names fully written (with its envelope if signing)?"""
        try:
            path = self.path_for(line.id)
            data = json.loads(path.read_bytes())
            if self.signing_key is not None and not self.envelope_path_for(line.id).exists():
                return False
            return (
                data.get("sequence") == line.sequence
                and data.get("digest") == line.digest
                and compute_digest(data) == line.digest
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return False

    def _adopt_orphans(self) -> None:
        """Settle, then adopt a receipt file written after the last commit that links to
        the head (an older version wrote the file before INDEX; a crash in between left it
        without an INDEX line and the next append reused its sequence)."""
        sequence, previous = self._settle()
        try:
            since = (self.dir / HEAD).stat().st_mtime_ns
        except FileNotFoundError:
            since = 0
        found: list[dict[str, Any]] = []
        with os.scandir(self.dir) as entries:
            for entry in entries:
                rid = entry.name.removesuffix(".json")
                if not RECEIPT_ID.fullmatch(rid):
                    continue
                with contextlib.suppress(OSError, ValueError):
                    if entry.stat().st_mtime_ns >= since:
                        data = json.loads(Path(entry.path).read_bytes())
                        if isinstance(data, dict) and isinstance(data.get("sequence"), int):
                            found.append(data)
        for data in sorted(found, key=lambda d: d["sequence"]):
            linked = self._adoptable(data, sequence, previous)
            if linked is None:
                continue
            self._journal(sequence, linked)
            head = {"sequence": sequence, "digest": linked.digest, "id": linked.execution_id}
            write_atomic(self.dir / HEAD, json.dumps(head).encode())
            _log.warning(
                "adopted %s (sequence %d), written without its INDEX line",
                linked.execution_id,
                sequence,
            )
            sequence, previous = sequence + 1, linked.digest

    def _adoptable(self, data: dict[str, Any], sequence: int, previous: str | None) -> Any:
        """The receipt ``data`` if it is whole and is the next link of the chain, else None."""
        if data["sequence"] != sequence or data.get("previous_digest") != previous:
            return None
        try:
            if compute_digest(data) != data.get("digest"):
                return None
            linked = Receipt.model_validate(data)
        except Exception:  # not canonical-encodable, not a receipt: not ours to adopt
            return None
        signed = self.envelope_path_for(linked.execution_id).exists()
        return linked if signed or self.signing_key is None else None

    def _sweep_temp_files(self) -> None:
        """Remove temp files (``.<name>.<pid>.<hex>.tmp``, probes) of processes now gone."""
        for name in os.listdir(self.dir):
            if not name.startswith("."):
                continue
            parts = name.split(".")
            if name.endswith(".tmp") and len(parts) >= 5 and parts[-3].isdigit():
                pid = int(parts[-3])
            elif name.startswith(_PROBE + ".") and parts[-1].isdigit():  # .probe.<tid>.<pid>
                pid = int(parts[-1])
            else:
                continue
            if pid != os.getpid() and not procfs.exists(pid):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)

    # -- can the store write? ----------------------------------------------------------------
    def free_bytes(self) -> int:
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def unavailable(self, *, probe: bool = True) -> str | None:
        """Why an append would fail now, or None when the store can take one.

        Cheap: one ``statvfs`` (free bytes and inodes). After a failed append, ``probe``
        writes, fsyncs and removes a small file; its success clears :attr:`failure`."""
        try:
            st = os.statvfs(self.dir)
        except OSError as exc:
            return f"{self.dir}: {exc.strerror or exc}"
        free = st.f_bavail * st.f_frsize
        if free < self.min_free:
            return f"{self.dir}: {free} bytes free, under the {self.min_free} an append needs"
        if st.f_files and st.f_favail == 0:
            return f"{self.dir}: no free inodes"
        if self.failure is None or not probe:
            return self.failure
        try:
            self._probe()
        except OSError as exc:
            self._failed("probing the store", exc)
            return self.failure
        self.failure = None
        return None

    def _probe(self) -> None:
        path = self.dir / f"{_PROBE}.{threading.get_ident()}.{os.getpid()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _failed(self, doing: str, exc: OSError) -> None:
        self.failure = f"{doing} in {self.dir} failed: {exc.strerror or exc}"


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None

    return True
