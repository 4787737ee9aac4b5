"""The *observed effects* of a run: a short summary of its receipt for a model to read.

A model that ran code wants to know, in a few lines, whether the code did something it did
not intend: which files it wrote or deleted, where it tried to connect, which programs it
started, and what a configured policy said. :func:`effects_of` cuts that out of a receipt
(v0.3.0 or v0.4.0 JSON data); :func:`combine` folds the receipts of a session's steps into
one receipt-shaped record to summarize. Lists are capped (:data:`MAX_ITEMS`); the totals
say how many there were, and the receipt keeps everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

#: Most entries each list of a summary keeps (the totals count them all).
MAX_ITEMS = 20
#: Paths written by almost every program that say nothing about what it did.
_NOISE = ("/dev/null", "/dev/tty", "/dev/pts/", "/dev/urandom", "/dev/random")


class NetworkAttempt(BaseModel):
    dst: str = Field(description="Destination address:port (or a socket path).")
    protocol: str = Field(description="tcp, udp, unix...")
    result: str = Field(description="What the kernel answered: connected, refused, denied...")


class ProcessStarted(BaseModel):
    exe: str | None = Field(description="Executable path, when known.")
    argv: list[str] = Field(description="Arguments (cut to the first 8, each to 200 chars).")
    exit_code: int | None = None


class PolicyFindings(BaseModel):
    policy: str = Field(description="Name of the configured policy.")
    passed: bool
    violations: list[str] = Field(default_factory=list, description="Rules that denied.")
    warnings: list[str] = Field(default_factory=list, description="Rules that warned.")


class Effects(BaseModel):
    """What the OS saw the run do (from its receipt)."""

    observed: bool = Field(
        description="False when the host could not observe the run: then the lists are empty "
        "because nothing was recorded, not because nothing happened."
    )
    note: str | None = Field(None, description="Why observation is partial or missing.")
    files_written: list[str] = Field(default_factory=list)
    files_written_total: int = 0
    files_deleted: list[str] = Field(default_factory=list)
    files_deleted_total: int = 0
    network_attempts: list[NetworkAttempt] = Field(default_factory=list)
    network_attempts_total: int = 0
    processes_started: list[ProcessStarted] = Field(default_factory=list)
    processes_started_total: int = 0
    policy: PolicyFindings | None = Field(
        None, description="The configured policy's verdict on the run (None: no policy)."
    )

    def lines(self) -> list[str]:
        """A few readable lines (the text rendering of a tool result)."""
        out: list[str] = []
        if not self.observed:
            out.append(f"not observed: {self.note or 'no observer ran'}")
        elif self.note:
            out.append(f"observation partial: {self.note}")
        out.append(_list_line("files written", self.files_written, self.files_written_total))
        out.append(_list_line("files deleted", self.files_deleted, self.files_deleted_total))
        nets = [f"{a.protocol} {a.dst} ({a.result})" for a in self.network_attempts]
        out.append(_list_line("network attempts", nets, self.network_attempts_total))
        procs = [" ".join(p.argv[:4]) or (p.exe or "?") for p in self.processes_started]
        out.append(_list_line("processes started", procs, self.processes_started_total))
        if self.policy is not None:
            verdict = "passed" if self.policy.passed else "FAILED"
            fired = [f"deny {v}" for v in self.policy.violations]
            fired += [f"warn {w}" for w in self.policy.warnings]
            extra = f": {', '.join(fired)}" if fired else ""
            out.append(f"policy {self.policy.policy}: {verdict}{extra}")
        return out


def _list_line(label: str, items: list[str], total: int) -> str:
    if not total:
        return f"{label}: none"
    more = f" (+{total - len(items)} more)" if total > len(items) else ""
    return f"{label} ({total}): {', '.join(items)}{more}"


def effects_of(receipt: Mapping[str, Any]) -> Effects:
    """The effects summary of one receipt."""
    fs = receipt.get("filesystem") or {}
    writes = _paths(fs.get("writes"))
    deletes = _paths(fs.get("deletes"))
    attempts = [_attempt(a) for a in (receipt.get("network") or {}).get("attempts") or []]
    procs = [_process(p) for p in _started(receipt)]
    omitted = _omitted(receipt)
    observed, note = _observation(receipt)
    return Effects(
        observed=observed,
        note=note,
        files_written=writes[:MAX_ITEMS],
        files_written_total=len(writes) + omitted.get("filesystem.writes", 0),
        files_deleted=deletes[:MAX_ITEMS],
        files_deleted_total=len(deletes) + omitted.get("filesystem.deletes", 0),
        network_attempts=attempts[:MAX_ITEMS],
        network_attempts_total=len(attempts) + omitted.get("network.attempts", 0),
        processes_started=procs[:MAX_ITEMS],
        processes_started_total=len(procs) + omitted.get("process_tree", 0),
        policy=_policy(receipt.get("policy")),
    )


def slim(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a receipt a summary reads (kept per session step instead of the whole
    receipt, whose file reads alone can hold thousands of paths)."""
    fs = receipt.get("filesystem") or {}
    obs = receipt.get("observation") or {}
    return {
        "filesystem": {
            "writes": list(fs.get("writes") or []),
            "deletes": list(fs.get("deletes") or []),
        },
        "network": {"attempts": list((receipt.get("network") or {}).get("attempts") or [])},
        "process_tree": [_process(p).model_dump() for p in _started(receipt)],
        "policy": receipt.get("policy"),
        "observation": {
            key: obs.get(key) for key in ("collected", "missing", "events_lost", "note", "omitted")
        },
    }


def combine(receipts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One receipt-shaped summary of several (a session's steps, :func:`slim` or whole):
    the union of files written and deleted and of network attempts, every process, and a
    policy that passed only if it passed on every step."""
    writes: dict[str, None] = {}
    deletes: dict[str, None] = {}
    attempts: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    procs: list[Any] = []
    missing: dict[str, str] = {}
    omitted: dict[str, int] = {}
    collected: list[str] | None = None
    lost = 0
    verdicts: list[Mapping[str, Any]] = []
    for r in receipts:
        fs = r.get("filesystem") or {}
        writes.update(dict.fromkeys(fs.get("writes") or []))
        deletes.update(dict.fromkeys(fs.get("deletes") or []))
        for a in (r.get("network") or {}).get("attempts") or []:
            attempts.setdefault(
                (str(a.get("dst")), str(a.get("protocol")), str(a.get("result"))), a
            )
        procs += r.get("process_tree") or []
        obs = r.get("observation") or {}
        seen = list(obs.get("collected") or [])
        collected = seen if collected is None else [s for s in collected if s in seen]
        missing.update(obs.get("missing") or {})
        lost += int(obs.get("events_lost") or 0)
        for key, n in (obs.get("omitted") or {}).items():
            omitted[key] = omitted.get(key, 0) + int(n)
        if isinstance(r.get("policy"), Mapping):
            verdicts.append(r["policy"])
    return {
        "filesystem": {"writes": list(writes), "deletes": list(deletes)},
        "network": {"attempts": list(attempts.values())},
        "process_tree": procs,
        "policy": _combine_verdicts(verdicts),
        "observation": {
            "collected": collected or [],
            "missing": missing,
            "events_lost": lost,
            "omitted": omitted,
        },
    }


def _paths(items: Any) -> list[str]:
    return [p for p in items or [] if isinstance(p, str) and not p.startswith(_NOISE)]


def _attempt(item: Mapping[str, Any]) -> NetworkAttempt:
    return NetworkAttempt(
        dst=str(item.get("dst")), protocol=str(item.get("protocol")), result=str(item.get("result"))
    )


def _started(receipt: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The processes a run started. A session's Python step runs in the interpreter that
    was already there (the tree's root): the code started only what is below it."""
    tree = list(receipt.get("process_tree") or [])
    session = receipt.get("session") or {}
    if session.get("kind") != "step" or session.get("interpreter_restarted") is None:
        return tree
    pids = {node.get("pid") for node in tree}
    return [node for node in tree if node.get("ppid") in pids]


def _process(node: Mapping[str, Any]) -> ProcessStarted:
    argv = [str(a)[:200] for a in (node.get("argv") or [])[:8]]
    return ProcessStarted(exe=node.get("exe"), argv=argv, exit_code=node.get("exit_code"))


def _omitted(receipt: Mapping[str, Any]) -> dict[str, int]:
    omitted = (receipt.get("observation") or {}).get("omitted") or {}
    return {str(k): int(v) for k, v in omitted.items() if isinstance(v, int)}


def _observation(receipt: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(observed at all, why partial or missing)."""
    obs = receipt.get("observation") or {}
    collected = obs.get("collected") or []
    missing = obs.get("missing") or {}
    notes = [f"{section}: {why}" for section, why in missing.items()]
    lost = int(obs.get("events_lost") or 0)
    if lost:
        notes.append(f"{lost} events lost")
    note = "; ".join(notes) or obs.get("note") or None
    observed = bool(collected) and any(s in collected for s in ("filesystem", "process_tree"))
    return observed, note


def _policy(verdict: Any) -> PolicyFindings | None:
    if not isinstance(verdict, Mapping):
        return None
    return PolicyFindings(
        policy=str(verdict.get("policy")),
        passed=bool(verdict.get("passed")),
        violations=list(verdict.get("violations") or []),
        warnings=list(verdict.get("warnings") or []),
    )


def _combine_verdicts(verdicts: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    if not verdicts:
        return None
    return {
        "policy": verdicts[-1].get("policy"),
        "passed": all(bool(v.get("passed")) for v in verdicts),
        "violations": list(dict.fromkeys(x for v in verdicts for x in v.get("violations") or [])),
        "warnings": list(dict.fromkeys(x for v in verdicts for x in v.get("warnings") or [])),
    }
