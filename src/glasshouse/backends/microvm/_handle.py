"""One run's state in the microvm backend (a :class:`~glasshouse.core.execution.Handle`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glasshouse.core.execution import Handle, Sink

from ._streamed import StreamedOutput
from ._vm import VMProcess


@dataclass
class VMHandle(Handle):
    vm: VMProcess | None = None
    run_dir: Path | None = None
    vmm: str = ""
    source: str = ""  # "snapshot:<key>" or "cold"
    sinks: tuple[Sink | None, Sink | None] = (None, None)
    started_at: Any = None
    released_at: float = 0.0
    deadline: float | None = None
    timings: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    #: The VMM's own cgroup (None where cgroups are unavailable: ``cgroup_note`` says why).
    cgroup: Any = None
    cgroup_note: str = "none"
    #: Guest events received in intermediate frames (``spec.guest_events``).
    events: list[list[Any]] = field(default_factory=list)
    #: Output the guest streamed while its command ran (set when the request is sent).
    streamed: StreamedOutput | None = None
    #: Prewarmed VMs (the warm pool): sent their entropy and time ahead; when ready.
    primed: bool = False
    prewarmed_at: float = 0.0
    used: bool = False
