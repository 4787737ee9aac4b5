"""Verify a tamper-evident receipt log (:mod:`glasshouse.receipt.log`) and name what changed.

Three independent records are cross-checked:

* each receipt's own ``digest`` (its content, sequence and link are sealed under it),
* the chain: receipt ``n`` carries ``previous_digest`` = the digest of receipt ``n - 1``,
  and ``HEAD`` holds the last sequence number and digest,
* ``INDEX``, the append-only journal of ``(sequence, id, digest)`` written by every append.

From their disagreements :func:`verify_log` reports, per receipt, one of:

* ``modified``: its content does not match its digest, or it was re-sealed after a change
  (its digest is no longer the one its successor, ``HEAD`` or ``INDEX`` recorded);
* ``deleted``: a sequence number is missing (named by id from ``INDEX``, else by digest);
* ``inserted``: a receipt that was never appended (no sequence, a duplicate sequence, past
  ``HEAD``, or absent from ``INDEX``);
* ``reordered``: a receipt now sits at another position than the one it was appended at;

plus ``unreadable`` files and ``head``/``index`` problems. A writer able to rewrite every
file, ``HEAD`` and ``INDEX`` consistently can forge a whole log unless receipts are signed:
with a key, each receipt's envelope (its signature covers ``sequence`` and
``previous_digest``) must verify, so only dropping the newest receipts stays undetectable
without an external copy of ``HEAD`` (see docs/trust.md).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glasshouse.receipt.canonical import compute_digest
from glasshouse.receipt.log import HEAD, INDEX, RECEIPT_ID

ProblemKind = Literal[
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "unreadable",
    "head",
    "index",
    "unsigned",
    "signature",
]


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    detail: str
    execution_id: str | None = None
    sequence: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        who = self.execution_id or self.file or ""
        where = f" (sequence {self.sequence})" if self.sequence is not None else ""
        name = f" {who}{where}" if who or where else ""
        return f"{self.kind}:{name}: {self.detail}"


@dataclass(frozen=True)
class LogReport:
    """The outcome of :func:`verify_log`: ``ok`` when no problem was found."""

    directory: Path
    receipts: int
    last_sequence: int | None
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    indexed: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self, kind: ProblemKind) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def named(self, kind: ProblemKind) -> set[str]:
        """Execution ids (or file names) reported with ``kind``."""
        return {p.execution_id or p.file or "" for p in self.by_kind(kind)}

    def summary(self) -> str:
        if self.ok:
            last = "empty" if self.last_sequence is None else f"sequence 0..{self.last_sequence}"
            return f"{self.directory}: OK, {self.receipts} receipts, chain intact ({last})"
        return f"{self.directory}: {len(self.problems)} problem(s) in {self.receipts} receipts"


@dataclass
class _Entry:
    file: str
    execution_id: str | None
    sequence: int | None
    previous: str | None
    digest: str | None
    content_ok: bool


class _Problems:
    """Collects problems, one per (kind, receipt): the first explanation wins."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, kind: ProblemKind, detail: str, entry: _Entry | None = None, **kw: Any) -> None:
        if entry is not None:
            kw.setdefault("execution_id", entry.execution_id)
            kw.setdefault("sequence", entry.sequence)
            kw.setdefault("file", entry.file)
        key = (kind, str(kw.get("execution_id") or kw.get("file") or kw.get("sequence")))
        if key in self._seen:
            return
        self._seen.add(key)
        self.items.append(Problem(kind, detail, **kw))

    def has(self, kind: ProblemKind, entry: _Entry) -> bool:
        return (kind, str(entry.execution_id or entry.file)) in self._seen


def verify_log(directory: str | os.PathLike[str], key: Any = None) -> LogReport:
    """Check every receipt, the chain, ``HEAD`` and ``INDEX`` of a receipt log directory.

    With ``key`` (an Ed25519 public key), every receipt must also have a ``.dsse.json``
    envelope signed by it that carries exactly that receipt (``unsigned``/``signature``).
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    problems = _Problems()
    entries = _scan(root, problems, key)
    head = _read_head(root, problems)
    index = _read_index(root, problems)

    for e in entries:
        if not e.content_ok:
            problems.add("modified", "its content does not match its sealed digest", e)
        if e.sequence is None:
            problems.add("inserted", "it has no sequence number: it was not appended", e)

    by_seq: dict[int, list[_Entry]] = {}
    for e in entries:
        if e.sequence is not None:
            by_seq.setdefault(e.sequence, []).append(e)
    index_by_seq = {seq: (rid, dig) for seq, rid, dig in index} if index is not None else {}
    chain = _pick_chain(by_seq, index_by_seq, problems)
    by_digest = {e.digest: e for e in entries if e.digest}

    recorded = [head[0]] if head else []
    recorded += list(index_by_seq)
    if recorded:  # HEAD/INDEX say where the log ends: anything later was never appended
        last = max(recorded)
        for seq in sorted(s for s in chain if s > last):
            problems.add(
                "inserted", f"sequence {seq} is past the last append ({last})", chain.pop(seq)
            )
    else:
        last = max(chain, default=-1)
    gap: list[int] = []  # a run of missing sequences INDEX cannot name
    for seq in range(last + 1):
        cur = chain.get(seq)
        if cur is None:
            if seq in index_by_seq:
                _deleted(gap, None, problems)
                rid, digest = index_by_seq[seq]
                problems.add(
                    "deleted",
                    f"appended as sequence {seq} (digest {digest}) but its file is gone",
                    execution_id=rid,
                    sequence=seq,
                )
            else:
                gap.append(seq)
            continue
        _deleted(gap, cur, problems)
        if seq == 0:
            if cur.previous is not None and cur.content_ok:
                problems.add("modified", "it is sequence 0 but links to a predecessor", cur)
            continue
        prev = chain.get(seq - 1)
        if prev is None or cur.previous == prev.digest:
            continue
        other = by_digest.get(cur.previous) if cur.previous else None
        if other is not None and other is not prev:
            problems.add(
                "reordered",
                f"it links to {other.execution_id} (sequence {other.sequence}), "
                f"not to sequence {seq - 1} ({prev.execution_id})",
                cur,
            )
        elif prev.content_ok and cur.content_ok:
            problems.add(
                "modified",
                f"its digest is not the one {cur.execution_id} (sequence {seq}) recorded "
                "for its predecessor: changed and re-sealed, or replaced",
                prev,
            )

    _deleted(gap, None, problems)
    if head is not None:
        _check_head(head, chain, problems)
    if index is not None:
        _check_index(index, entries, problems)

    order = {"deleted": 0, "inserted": 1, "reordered": 2, "modified": 3}
    items = sorted(
        problems.items,
        key=lambda p: (
            p.sequence if p.sequence is not None else 1 << 62,
            order.get(p.kind, 9),
            p.execution_id or p.file or "",
        ),
    )
    return LogReport(
        directory=root,
        receipts=len(entries),
        last_sequence=last if last >= 0 else None,
        problems=tuple(items),
        indexed=index is not None,
    )


def _scan(root: Path, problems: _Problems, key: Any = None) -> list[_Entry]:
    entries: list[_Entry] = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".json") or name.startswith(".") or name.endswith(".dsse.json"):
            continue
        path = root / name
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            stem = name.removesuffix(".json")
            problems.add(
                "unreadable",
                f"not a readable JSON receipt ({exc})",
                execution_id=stem if RECEIPT_ID.match(stem) else None,
                file=name,
            )
            continue
        if not isinstance(data, dict):
            problems.add("unreadable", "not a JSON object", file=name)
            continue
        found_id = data.get("execution_id")
        rid = found_id if isinstance(found_id, str) else None
        seq = data.get("sequence")
        entry = _Entry(
            file=name,
            execution_id=rid,
            sequence=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            previous=data.get("previous_digest"),
            digest=data.get("digest") if isinstance(data.get("digest"), str) else None,
            content_ok=False,
        )
        try:
            entry.content_ok = entry.digest is not None and entry.digest == compute_digest(data)
        except Exception:  # values canonical JSON cannot encode (e.g. NaN)
            entry.content_ok = False
        if rid is None or f"{rid}.json" != name:
            problems.add(
                "inserted" if rid is None else "modified",
                f"the file holds receipt {rid!r}, not {name.removesuffix('.json')!r}",
                entry,
            )
        if key is not None:
            _check_signature(root, name, data, entry, key, problems)
        entries.append(entry)
    return entries


def _check_signature(
    root: Path, name: str, data: dict[str, Any], entry: _Entry, key: Any, problems: _Problems
) -> None:
    from glasshouse.receipt.sign import VerificationError, verify_envelope

    envelope = root / (name.removesuffix(".json") + ".dsse.json")
    try:
        raw = envelope.read_bytes()
    except OSError:
        problems.add("unsigned", f"no signed envelope ({envelope.name})", entry)
        return
    try:
        verify_envelope(raw, key, receipt=data)
    except VerificationError as exc:
        problems.add("signature", exc.diagnostic(), entry)


def _read_head(root: Path, problems: _Problems) -> tuple[int, str | None, str | None] | None:
    path = root / HEAD
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return int(data["sequence"]), data.get("digest"), data.get("id")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.add("head", f"HEAD is unreadable: {exc}", file=HEAD)
        return None


def _read_index(root: Path, problems: _Problems) -> list[tuple[int, str, str]] | None:
    path = root / INDEX
    if not path.exists():
        return None
    out: list[tuple[int, str, str]] = []
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add("index", f"INDEX is unreadable: {exc}", file=INDEX)
        return None
    # An unterminated last line is a journal write cut short (full disk, crash): the append
    # it began never wrote its receipt, and the writer cuts it off before its next append.
    lines.pop()
    for n, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
            out.append((int(item["sequence"]), str(item["id"]), str(item["digest"])))
        except (ValueError, KeyError, TypeError):
            problems.add("index", f"INDEX line {n} is not a journal entry", file=f"INDEX:{n}")
    for (a, *_), (b, *_) in itertools.pairwise(out):
        if b != a + 1:
            problems.add(
                "index", f"INDEX jumps from sequence {a} to {b}: edited", file=f"INDEX@{b}"
            )
    return out


def _pick_chain(
    by_seq: dict[int, list[_Entry]],
    index_by_seq: dict[int, tuple[str, str]],
    problems: _Problems,
) -> dict[int, _Entry]:
    """One receipt per sequence; extra claimants of a sequence are inserted receipts."""
    chain: dict[int, _Entry] = {}
    for seq in sorted(by_seq):
        claimants = by_seq[seq]
        if len(claimants) == 1:
            chain[seq] = claimants[0]
            continue
        successors = by_seq.get(seq + 1, [])
        recorded = index_by_seq.get(seq)

        def genuine(e: _Entry, recorded: Any = recorded, successors: Any = successors) -> int:
            score = 0
            if recorded and (e.execution_id, e.digest) == recorded:
                score += 4
            if any(s.previous == e.digest for s in successors):
                score += 2
            if e.content_ok:
                score += 1
            return score

        ranked = sorted(claimants, key=lambda e: (-genuine(e), e.file))
        chain[seq] = ranked[0]
        for e in ranked[1:]:
            problems.add(
                "inserted",
                f"a second receipt claiming sequence {seq} (the chain continues through "
                f"{ranked[0].execution_id})",
                e,
            )
    return chain


def _deleted(gap: list[int], successor: _Entry | None, problems: _Problems) -> None:
    """Report (and clear) a run of missing sequences that INDEX does not name."""
    if not gap:
        return
    first, last = gap[0], gap[-1]
    if first != last:
        problems.add(
            "deleted",
            f"sequences {first}..{last} are missing ({len(gap)} receipts)",
            sequence=first,
        )
    elif successor is not None and successor.previous:
        problems.add(
            "deleted",
            f"sequence {first} is missing; {successor.execution_id} recorded its digest "
            f"{successor.previous}",
            sequence=first,
        )
    else:
        problems.add("deleted", f"sequence {first} is missing", sequence=first)
    gap.clear()


def _check_head(
    head: tuple[int, str | None, str | None],
    chain: dict[int, _Entry],
    problems: _Problems,
) -> None:
    seq, digest, rid = head
    for later in sorted(s for s in chain if s > seq):
        problems.add("inserted", f"sequence {later} is past HEAD (sequence {seq})", chain[later])
    cur = chain.get(seq)
    if cur is not None and digest is not None and cur.digest != digest and cur.content_ok:
        problems.add(
            "modified",
            "its digest is not the one HEAD recorded: changed and re-sealed, or replaced",
            cur,
        )
    if cur is not None and rid is not None and cur.execution_id != rid:
        problems.add(
            "head",
            f"HEAD names {rid} as sequence {seq}, the log has {cur.execution_id}",
            file=HEAD,
        )


def _check_index(
    index: list[tuple[int, str, str]], entries: list[_Entry], problems: _Problems
) -> None:
    by_id: dict[str, list[_Entry]] = {}
    for e in entries:
        if e.execution_id:
            by_id.setdefault(e.execution_id, []).append(e)
    indexed_ids = set()
    for seq, rid, digest in index:
        indexed_ids.add(rid)
        found = by_id.get(rid)
        if not found:
            problems.add(
                "deleted",
                f"appended as sequence {seq} (digest {digest}) but its file is gone",
                execution_id=rid,
                sequence=seq,
            )
            continue
        for e in found:
            if e.sequence is not None and e.sequence != seq:
                problems.add(
                    "reordered", f"it is at sequence {e.sequence} but was appended as {seq}", e
                )
            elif e.digest != digest and e.content_ok:
                problems.add(
                    "modified", "its digest is not the one INDEX recorded at append time", e
                )
    first = index[0][0] if index else None
    for e in entries:
        if e.execution_id in indexed_ids or e.sequence is None:
            continue
        if first is not None and e.sequence < first:
            continue  # appended before the journal existed
        problems.add("inserted", "it is not in INDEX: it was never appended", e)
