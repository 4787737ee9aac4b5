"""How complete a run's observation was: the receipt's ``observation.coverage``.

A receipt's lists say what was observed; coverage says whether an *absence* from them can be
trusted. ``status`` is ``complete`` (nothing is known to be missing), ``incomplete`` (each
``reasons`` entry says what was not seen) or ``none`` (no observation was made: the reasons
say why); ``complete`` is ``status == "complete"``. A receipt written before coverage was
stated (v0.3.0, early v0.4.0) reads as :data:`UNKNOWN` (:func:`coverage_of`).

Each reason is ``{code, message, count, observer, sections, detail}``: a machine-readable
code (the list is in docs/observe.md, "Coverage"), a human message, how many (events,
entries, calls) where countable, the observer it concerns, the receipt sections it affects
(empty: the whole run) and a breakdown of ``count``.

Two sources, one extension point each:

* :data:`DERIVERS`: functions deriving reasons from what the receipt already holds (the
  observers' counts, ``omitted``, ``missing``, the isolation, the syscall counts): a new
  kind of reason readable from receipt data is one more function there;
* :attr:`Observation.gaps <glasshouse.core.profiling.Observation.gaps>`: what only an
  observer knows (its reader did not drain, processes it stopped watching). An observer that
  states a code itself lists it in ``Observation.accounts_for``, and no deriver adds that
  code for it (an observer decoding io_uring lists ``blind:io_uring`` there and states a gap
  only for what it could not decode).

Pure functions of JSON data and observations: no pydantic, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glasshouse.core.profiling import CoverageGap, Observation

STATUSES = ("complete", "incomplete", "none")
#: What a receipt that states no coverage reads as (never written).
UNKNOWN = "unknown"
#: The sections that describe the workload's activity (``resources`` are figures).
WORKLOAD_SECTIONS = ("process_tree", "filesystem", "network", "syscalls")
IO_URING_SYSCALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register")
#: ``execution.isolation`` -> the blind spot's code and where the workload ran.
_BLIND = {
    "gvisor": ("blind:gvisor", "inside gVisor's sentry"),
    "vm": ("blind:vm_guest", "inside a VM guest"),
}


@dataclass(frozen=True)
class _Run:
    """What the derivers read: the receipt data being built and the observations."""

    data: Mapping[str, Any]
    observations: Sequence[Observation]

    @property
    def observation(self) -> Mapping[str, Any]:
        return _dict(self.data.get("observation"))

    @property
    def available(self) -> list[Observation]:
        return [o for o in self.observations if o.available]

    def derives(self, obs: Observation, code: str) -> bool:
        """Whether ``code`` is derived for ``obs`` (not stated by the observer itself)."""
        return code not in obs.accounts_for


Reason = dict[str, Any]
Deriver = Callable[[_Run], list[Reason]]


def reason(
    code: str,
    message: str,
    *,
    count: int | None = None,
    observer: str | None = None,
    sections: Sequence[str] = (),
    detail: Mapping[str, int] | None = None,
) -> Reason:
    """One ``observation.coverage.reasons`` entry (JSON data)."""
    return {
        "code": code,
        "message": message,
        "count": count,
        "observer": observer,
        "sections": list(sections),
        "detail": dict(detail or {}),
    }


def assess(
    data: Mapping[str, Any], observations: Sequence[Observation], *, ran: bool = True
) -> dict[str, Any]:
    """The coverage statement of a receipt being built (``data``: everything but coverage)
    from the observations it was built from; ``ran``: False when nothing ran to observe."""
    run = _Run(data, observations)
    none = _no_observation(run, ran)
    if none:
        return statement("none", none)
    reasons = [r for derive in DERIVERS for r in derive(run)]
    reasons += [_stated(o.observer, gap) for o in run.available for gap in o.gaps]
    reasons.sort(key=lambda r: (r["code"], r["observer"] or "", r["message"]))
    return statement("incomplete" if reasons else "complete", reasons)


def statement(status: str, reasons: list[Reason]) -> dict[str, Any]:
    return {"status": status, "complete": status == "complete", "reasons": reasons}


def coverage_of(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """A receipt's coverage statement; ``status`` :data:`UNKNOWN` (and no reasons) when it
    states none (written before coverage was stated)."""
    stated = _dict(_dict(receipt.get("observation")).get("coverage"))
    if stated.get("status") in STATUSES:
        return dict(stated)
    return {"status": UNKNOWN, "complete": False, "reasons": []}


# -- no observation ---------------------------------------------------------------------------


def _no_observation(run: _Run, ran: bool) -> list[Reason]:
    """Why no observation was made ([] when one was)."""
    if run.available:
        return []
    if run.observation.get("profile") == "disabled":
        msg = "profiling disabled (--profile disabled): no observation was made"
        return [reason("disabled", msg)]
    if not run.observations:
        error = _dict(run.data.get("outcome")).get("error")
        if not ran:
            return [reason("not_run", f"nothing ran to observe ({error})")]
        return [reason("no_observer", "no observer was attached to the run")]
    return _unavailable(run)


def _unavailable(run: _Run) -> list[Reason]:
    return [
        reason(
            "observer_unavailable",
            f"{o.observer} ({o.provenance} observation) was unavailable: {o.reason}",
            observer=o.observer,
        )
        for o in run.observations
        if not o.available
    ]


# -- derived from the receipt's data ----------------------------------------------------------


def _attached_late(run: _Run) -> list[Reason]:
    """Observers that began watching after the workload's first instruction: what the
    workload did before is not in the receipt."""
    return [
        reason(
            "attached_late",
            f"{o.observer} began watching after the workload started ({o.attached.detail}): "
            "what it did before is not in the receipt",
            observer=o.observer,
        )
        for o in run.available
        if o.attached is not None and not o.attached.before_start
    ]


def _events_lost(run: _Run) -> list[Reason]:
    return [
        reason(
            "events_lost",
            f"{o.events_lost} event(s) {o.observer} could not record or receive: what they "
            "held is not in the receipt",
            count=o.events_lost,
            observer=o.observer,
        )
        for o in run.available
        if o.events_lost > 0 and run.derives(o, "events_lost")
    ]


def _truncated(run: _Run) -> list[Reason]:
    return [
        reason(
            "truncated",
            f"{o.truncations} string(s) or path walk(s) {o.observer} cut at their bound "
            "(a path or argv is shown in part)",
            count=o.truncations,
            observer=o.observer,
        )
        for o in run.available
        if o.truncations > 0 and run.derives(o, "truncated")
    ]


def _list_capped(run: _Run) -> list[Reason]:
    omitted = {
        str(k): v
        for k, v in _dict(run.observation.get("omitted")).items()
        if isinstance(v, int) and v > 0
    }
    if not omitted:
        return []
    cap = run.observation.get("list_cap")
    shown = ", ".join(f"{name} {n}" for name, n in omitted.items())
    return [
        reason(
            "list_capped",
            f"{sum(omitted.values())} entries left out of lists capped at {cap} ({shown})",
            count=sum(omitted.values()),
            sections=sorted({name.split(".")[0] for name in omitted}),
            detail=omitted,
        )
    ]


def _blind_sections(run: _Run) -> tuple[str, str, list[str]] | None:
    """(code, where, sections) when the workload ran where the host cannot see it and no
    guest observation covered those sections."""
    isolation = _dict(run.data.get("execution")).get("isolation")
    if isolation not in _BLIND:
        return None
    code, where = _BLIND[isolation]
    # Host observers see only the harness (runsc, the VMM) there, whatever they collected.
    guest = {s for o in run.available if o.provenance == "guest" for s in o.collected()}
    sections = [s for s in WORKLOAD_SECTIONS if s not in guest]
    return (code, where, sections) if sections else None


def _blind(run: _Run) -> list[Reason]:
    found = _blind_sections(run)
    if found is None:
        return []
    code, where, sections = found
    message = (
        f"the workload ran {where}, where the host sees only Glasshouse's harness: "
        f"{', '.join(sections)} not observed"
    )
    if code == "blind:vm_guest":
        message += " (nor covered by the guest's own observation)"
    return [reason(code, message, sections=sections)]


def _not_collected(run: _Run) -> list[Reason]:
    """Sections the receipt says were not collected, for a reason other than a blind spot."""
    blind = _blind_sections(run)
    skip = set(blind[2]) if blind else set()
    missing = {
        s: str(why) for s, why in _dict(run.observation.get("missing")).items() if s not in skip
    }
    if not missing:
        return []
    message = "; ".join(f"{s}: {why}" for s, why in missing.items())
    return [reason("not_collected", f"not collected: {message}", sections=list(missing))]


def _partial(run: _Run) -> list[Reason]:
    """Sections an observer collected but says are partial (its ``missing`` names them)."""
    out = []
    for o in run.available:
        collected = set(o.collected())
        for section, why in o.missing.items():
            if section in collected and run.derives(o, "partial"):
                msg = f"{section} from {o.observer} is partial: {why}"
                out.append(reason("partial", msg, observer=o.observer, sections=[section]))
    return out


def _io_uring(run: _Run) -> list[Reason]:
    """io_uring used by the workload: operations submitted through a ring are not decoded
    (unless an observer that collected syscalls accounts for ``blind:io_uring`` itself)."""
    counts = _dict(_dict(run.data.get("syscalls")).get("counts"))
    used = {n: counts[n] for n in IO_URING_SYSCALLS if _positive(counts.get(n))}
    if not used:
        return []
    denied = _dict(_dict(run.data.get("environment")).get("sandbox")).get("details")
    if "io_uring_setup" in (_dict(denied).get("seccomp_denied") or []):
        return []  # no ring can be made there: every io_uring call failed with EPERM
    observers = [o for o in run.available if o.syscalls is not None]
    if observers and not any(run.derives(o, "blind:io_uring") for o in observers):
        return []
    calls = ", ".join(f"{n} {c}" for n, c in used.items())
    message = (
        f"the workload used io_uring ({calls}): operations submitted through a ring (opens, "
        "reads, writes, connects, sends...) are not decoded, so filesystem and network may "
        "lack them"
    )
    return [
        reason(
            "blind:io_uring",
            message,
            count=sum(used.values()),
            sections=["filesystem", "network"],
            detail=used,
        )
    ]


def _unknown_syscalls(run: _Run) -> list[Reason]:
    n = _dict(_dict(run.data.get("syscalls")).get("counts")).get("unknown")
    if not _positive(n):
        return []
    message = (
        f"{n} system call(s) with a number the observer has no entry for (x32 ABI, or newer "
        "than its table): counted as 'unknown', not decoded"
    )
    return [reason("blind:unknown_syscalls", message, count=n, sections=["filesystem", "network"])]


def _guest_spawns(run: _Run) -> list[Reason]:
    """Programs the user's code spawned in a VM guest: the guest's audit hook records the
    spawn (pid 0: its guest pid is unknown to the hook), never what the program did."""
    out = []
    for o in run.available:
        if o.provenance != "guest":
            continue
        n = sum(1 for node in o.process_tree or [] if node.pid == 0)
        if n:
            message = (
                f"{n} program(s) spawned in the guest: the guest records the spawn, not what "
                "the program did (its files and connections are not in the receipt)"
            )
            out.append(
                reason(
                    "blind:guest_spawn",
                    message,
                    count=n,
                    observer=o.observer,
                    sections=["filesystem", "network", "syscalls"],
                )
            )
    return out


#: Every reason derived from the receipt's data and the observations' counts, in order. Add a
#: function here to derive a new kind.
DERIVERS: list[Deriver] = [
    _unavailable,
    _attached_late,
    _events_lost,
    _truncated,
    _list_capped,
    _blind,
    _not_collected,
    _partial,
    _io_uring,
    _unknown_syscalls,
    _guest_spawns,
]


def _stated(observer: str, gap: CoverageGap) -> Reason:
    return reason(
        gap.code,
        gap.message,
        count=gap.count,
        observer=observer,
        sections=gap.sections,
        detail=gap.detail,
    )


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
