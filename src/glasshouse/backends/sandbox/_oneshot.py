"""One-shot runs on a prewarmed live sandbox (the server's warm pool, ``live`` slots).

A slot is a session sandbox (:mod:`._session`) made ahead: bubblewrap, the step agent and a
Python interpreter already up, a workspace with a quota. A run that fits takes it: its quota
is resized and its cgroup limits set to the run's, its files written, and it runs as one
step (``python3 -c CODE`` handed to the waiting interpreter, anything else forked by the
agent); then the slot is closed and its workspace removed, as a one-shot sandbox is. The
receipt says the interpreter was started before the request (``execution.details``).
"""

from __future__ import annotations

from glasshouse.core.execution import ExecutionSpec, Limits, Sink
from glasshouse.core.session import SessionSpec

from ._session import BwrapLiveSandbox, StepHandle, Steps

#: The quota a slot's workspace is made with; a run's own limit replaces it at start.
SLOT_DISK_BYTES = 1 << 30


def slot_spec() -> SessionSpec:
    return SessionSpec(network=False, limits=Limits(disk_bytes=SLOT_DISK_BYTES))


def unfit(spec: ExecutionSpec) -> str | None:
    """Why ``spec`` cannot run on a live slot (None: it can)."""
    if spec.network:
        return "the run asks for network (slots have none)"
    if spec.limits.disk_bytes is None:
        return "the run has no disk limit (a slot's workspace has a quota)"
    if spec.guest_events:
        return "guest events are a VM's"
    return None


def is_code(spec: ExecutionSpec) -> bool:
    argv = list(spec.argv)
    return len(argv) == 3 and argv[:2] == ["python3", "-c"]


def start(
    slot: BwrapLiveSandbox, spec: ExecutionSpec, stdout: Sink | None, stderr: Sink | None
) -> StepHandle:
    """Set ``slot`` up for ``spec`` and start it as a step (gated, like any start)."""
    slot.prepare_oneshot(spec)
    steps: Steps = slot.interpreter if is_code(spec) else slot.commands
    handle = steps.start(spec, stdout, stderr)
    assert isinstance(handle, StepHandle)
    handle.steps = steps
    return handle
