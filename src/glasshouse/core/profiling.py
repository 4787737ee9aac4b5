"""Profiling contracts: the profile modes, the Observer protocol and what an observer returns.

An observer watches one run's process tree, rooted at the host pid a backend reports. It is
started while the child is held at the backend's gate (so the first exec is seen) and stopped
after the run ends. Observers fail open: an observer that cannot start yields an
:class:`Observation` with ``available=False`` and the reason, and the run goes on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from glasshouse.core.errors import ObserverUnavailable as ObserverUnavailable

if TYPE_CHECKING:  # the model pulls in pydantic; the run hot path does not need it
    from glasshouse.receipt.model import (
        Filesystem,
        Harness,
        Network,
        ProcessNode,
        Resources,
        Syscalls,
    )


class Profile(enum.StrEnum):
    DISABLED = "disabled"
    HOST = "host"  # host kernel observation (eBPF, or a labeled fallback)
    GUEST = "guest"  # events reported from inside a VM guest
    COMBINED = "combined"  # both


@dataclass(frozen=True)
class CoverageGap:
    """Something an observer knows it did not see of a run, as it goes into the receipt's
    ``observation.coverage.reasons`` (``glasshouse.receipt.coverage`` derives the common ones
    from the observation's counts; an observer states here what only it knows)."""

    #: machine-readable: ``events_lost``, ``not_drained``, ``blind:io_uring``... (docs/observe.md)
    code: str
    #: what was not seen, for a human
    message: str
    #: how many (events, processes, operations), when countable
    count: int | None = None
    #: the receipt sections the gap affects (empty: the whole run)
    sections: tuple[str, ...] = ()
    #: a breakdown of ``count`` (e.g. by cause), name -> count
    detail: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Attachment:
    """When an observer began watching a run, as the receipt's
    ``observation.coverage.attached`` states it (set by whoever attached it: the Engine)."""

    #: attached before the workload's first instruction (False: late, or never)
    before_start: bool
    #: ``gated``: attached while the root was held at the backend's gate, then released;
    #: ``guest``: recorded in the guest from before the command started (the guest's
    #: claim); ``kernel_exec``: made the root in the kernel at its exec (the agent);
    #: ``never``: could not attach
    how: str
    #: the evidence, for a human
    detail: str | None = None


@dataclass
class Observation:
    """What one observer saw of one run. Sections left ``None`` were not collected."""

    observer: str
    provenance: str  # "host" | "guest"
    available: bool = True
    reason: str | None = None
    process_tree: list[ProcessNode] | None = None
    filesystem: Filesystem | None = None
    network: Network | None = None
    syscalls: Syscalls | None = None
    resources: Resources | None = None
    events: int = 0
    events_lost: int = 0
    truncations: int = 0
    #: section name -> why it was not collected (when available but partial)
    missing: dict[str, str] = field(default_factory=dict)
    #: receipt list (``filesystem.writes``...) -> entries left out at the observer's list cap
    omitted: dict[str, int] = field(default_factory=dict)
    #: what Glasshouse itself ran (kept out of the sections above), if the observer told
    #: the harness apart from the workload
    harness: Harness | None = None
    #: what the observer knows it missed (the receipt's ``observation.coverage`` lists them)
    gaps: list[CoverageGap] = field(default_factory=list)
    #: gap codes this observer states itself in ``gaps`` (also by their absence): the receipt
    #: does not derive those codes from this observation's counts. E.g. an observer that
    #: decodes io_uring operations lists ``blind:io_uring`` here and adds a gap only for the
    #: operations it could not decode.
    accounts_for: frozenset[str] = frozenset()
    #: when the observer began watching the run (None: not stated)
    attached: Attachment | None = None

    @classmethod
    def unavailable(cls, observer: str, provenance: str, reason: str) -> Observation:
        return cls(observer=observer, provenance=provenance, available=False, reason=reason)

    def collected(self) -> list[str]:
        names = ("process_tree", "filesystem", "network", "syscalls", "resources")
        return [n for n in names if getattr(self, n) is not None]


@runtime_checkable
class ObserverSession(Protocol):
    """One run being observed."""

    def stop(self) -> Observation:
        """Drain pending events and return what was seen. Called once, after the run ended."""
        ...


@runtime_checkable
class Observer(Protocol):
    """A long-lived observer. ``start`` may be called for many runs, also concurrently.

    An observer with ``list_cap_aware = True`` also takes ``start(root_pid, list_cap=N)``:
    it keeps at most N entries per receipt list while observing and counts the rest in
    :attr:`Observation.omitted` (the Engine passes its own cap). Others are capped afterwards.
    An observer with ``harness_aware = True`` also takes ``start(root_pid,
    workload_start=WorkloadStart(...))`` (the backend's :attr:`Handle.workload_start`) and
    keeps what Glasshouse itself ran out of the workload's sections (:attr:`Observation.harness`).
    """

    name: str
    provenance: str

    def start(self, root_pid: int) -> ObserverSession:
        """Begin observing the process tree rooted at ``root_pid`` (held at its gate)."""
        ...
