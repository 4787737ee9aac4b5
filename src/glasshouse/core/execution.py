"""Execution contracts: what to run, what happened, and the Backend protocol.

The lifecycle follows the seeds (001/002/004): ``prepare`` -> ``start`` -> ``wait`` ->
``cleanup``, with ``kill`` at any time. ``start`` leaves the workload held at a *gate*; the
Engine (:mod:`glasshouse.engine`) attaches observers to the reported root pid and then calls
``release``, so an observer sees the workload's very first exec. Every outcome, including a
spec that fails validation or a backend that cannot start, yields an
:class:`ExecutionResult` and so a receipt. Nothing here imports the receipt package: data
flows one way, core -> receipt -> engine -> runner -> CLI/server.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

# The errors live in glasshouse.core.errors; re-exported here for the backends.
from glasshouse.core.errors import BackendError as BackendError
from glasshouse.core.errors import BackendUnavailable as BackendUnavailable
from glasshouse.core.errors import CommandNotRunnable as CommandNotRunnable
from glasshouse.core.errors import GlasshouseError as GlasshouseError
from glasshouse.core.errors import SpecError as SpecError

if TYPE_CHECKING:
    from glasshouse.core.artifacts import WorkspaceScan
    from glasshouse.core.profiling import Observation

from glasshouse.core.hashing import sha256

#: Default cap on the bytes kept per output stream (the hash always covers the full stream).
DEFAULT_OUTPUT_LIMIT = 1 << 20

#: Default cap on the entries of each receipt list (process tree, files, network...): what a
#: list leaves out is counted in ``observation.omitted``; observers keep no more in memory.
DEFAULT_LIST_CAP = 10_000

Sink = Callable[[bytes], None]


@dataclass(frozen=True)
class Limits:
    """Resource limits. ``None`` means "not limited" (beyond the backend's own defaults)."""

    wall_s: float | None = None
    cpu_s: float | None = None
    memory_bytes: int | None = None
    pids: int | None = None
    output_bytes: int = DEFAULT_OUTPUT_LIMIT  # kept per stream; the rest is hashed, not kept
    file_size_bytes: int | None = None
    #: bytes the workspace may hold (isolating backends); writing past it gets ENOSPC
    disk_bytes: int | None = None

    def validate(self) -> None:
        for name in ("wall_s", "cpu_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SpecError(f"limits.{name} must be > 0, got {value!r}")
        for name in ("memory_bytes", "pids", "file_size_bytes", "disk_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise SpecError(f"limits.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.output_bytes, int) or self.output_bytes < 0:
            raise SpecError(f"limits.output_bytes must be >= 0, got {self.output_bytes!r}")
        if self.memory_bytes is not None and self.memory_bytes < 1 << 20:
            raise SpecError("limits.memory_bytes must be at least 1 MiB")


@dataclass(frozen=True)
class ExecutionSpec:
    """What to run and under which limits.

    ``env=None`` inherits the caller's environment (process backend) or uses the backend's
    minimal default; ``network=None`` takes the backend's default (on for ``process``, off for
    isolating backends). ``files`` are placed in the workspace before the run (isolating
    backends); ``outputs`` name workspace files copied back afterwards. ``guest_events``
    asks a VM backend for the guest's own record of the run (the Engine sets it for the
    ``guest`` and ``combined`` profiles); other backends ignore it.
    """

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    stdin: bytes | None = None
    timeout: float | None = None
    limits: Limits = field(default_factory=Limits)
    network: bool | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    outputs: Sequence[str] = ()
    guest_events: bool = False

    def validate(self) -> None:
        if isinstance(self.argv, str | bytes):
            raise SpecError("argv must be a list of strings, not a single string")
        if not self.argv:
            raise SpecError("argv is empty: nothing to run")
        for i, arg in enumerate(self.argv):
            if not isinstance(arg, str):
                raise SpecError(f"argv[{i}] must be a string, got {type(arg).__name__}")
            if "\x00" in arg:
                raise SpecError(f"argv[{i}] contains a NUL byte")
        if self.timeout is not None and not self.timeout > 0:
            raise SpecError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        check_env(self.env)
        if self.stdin is not None and not isinstance(self.stdin, bytes):
            raise SpecError("stdin must be bytes")
        for name in list(self.files) + list(self.outputs):
            _check_relative(name)
        self.limits.validate()

    @property
    def deadline_s(self) -> float | None:
        """The effective wall-clock limit: the smaller of ``timeout`` and ``limits.wall_s``."""
        values = [v for v in (self.timeout, self.limits.wall_s) if v is not None]
        return min(values) if values else None


def check_env(env: Mapping[str, str] | None) -> None:
    """Raise SpecError for an environment variable name or value a process cannot have."""
    for key, value in (env or {}).items():
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            raise SpecError(f"invalid environment variable name or value: {key!r}")


def _check_relative(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SpecError(f"workspace path must be relative without '..': {name!r}")
    if "\x00" in name:
        raise SpecError(f"workspace path contains a NUL byte: {name!r}")


@dataclass(frozen=True)
class StreamResult:
    """One output stream: the kept prefix, whether it was cut, and the digest of all of it."""

    data: bytes
    size: int
    sha256: str
    truncated: bool

    @classmethod
    def empty(cls) -> StreamResult:
        return cls(b"", 0, sha256(b"").hexdigest(), False)


class OutputCapture:
    """Accumulates a stream: keeps the first ``limit`` bytes, hashes and counts every byte,
    and forwards each chunk to an optional live ``sink`` (e.g. the terminal)."""

    def __init__(self, limit: int = DEFAULT_OUTPUT_LIMIT, sink: Sink | None = None) -> None:
        self._limit = limit
        self._sink = sink
        self._kept = bytearray()
        self._hash = sha256()
        self._size = 0
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        with self._lock:
            self._hash.update(chunk)
            self._size += len(chunk)
            room = self._limit - len(self._kept)
            if room > 0:
                self._kept += chunk[:room]
        if self._sink is not None:
            try:
                self._sink(chunk)
            except Exception:  # a broken terminal must not break the run
                self._sink = None

    def result(self) -> StreamResult:
        with self._lock:
            return StreamResult(
                bytes(self._kept), self._size, self._hash.hexdigest(), self._size > self._limit
            )


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


@dataclass
class ExecutionResult:
    """What happened. Exactly one of: exited (``exit_code``), killed (``signal``), or failed
    before/while running (``error`` and usually no exit code)."""

    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    timed_out: bool = False
    stdout: StreamResult = field(default_factory=StreamResult.empty)
    stderr: StreamResult = field(default_factory=StreamResult.empty)
    started_at: _dt.datetime = field(default_factory=utcnow)
    ended_at: _dt.datetime = field(default_factory=utcnow)
    cpu_time_ms: int | None = None
    max_rss_kb: int | None = None
    root_pid: int | None = None
    oom_killed: bool = False
    #: Backend facts for the receipt's ``execution.details``.
    details: dict[str, Any] = field(default_factory=dict)
    #: ``environment.sandbox.network``: "enabled" | "disabled" | "loopback".
    network: str = "enabled"
    #: Extra sandbox facts for ``environment.sandbox.details``.
    sandbox: dict[str, Any] = field(default_factory=dict)
    #: Workspace files copied back (``ExecutionSpec.outputs``).
    outputs: dict[str, bytes] = field(default_factory=dict)
    #: Why each requested output missing from ``outputs`` was not copied back (missing, a
    #: symlink, too large...). The receipt's ``artifacts.outputs`` lists every requested one.
    output_status: dict[str, str] = field(default_factory=dict)
    #: Guest-side observation delivered by the backend (VM backends), if any.
    guest_observation: Observation | None = None
    #: The files the run wrote in its workspace (the receipt's ``artifacts.workspace``), or
    #: why the backend lists none; None: the backend does not say.
    workspace: WorkspaceScan | None = None
    #: What the run's observation is scoped to (the receipt's ``observation.coverage.scope``):
    #: ``root_pid``, ``workload_start`` (set by the Engine), ``cgroup``, ``cgroup_id``,
    #: ``pid_namespace`` (inode), ``note`` (set by the backend, where known).
    scope: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.ended_at - self.started_at).total_seconds() * 1000))

    def shell_exit_code(self) -> int:
        """The exit status a shell would give: child's code, 124 timeout, 128+N signal, 125
        Glasshouse's own error."""
        if self.timed_out:
            return 124
        if self.signal is not None:
            return 128 + self.signal
        if self.exit_code is not None:
            return self.exit_code
        return 125

    @classmethod
    def failure(cls, error: str, *, exit_code: int | None = None) -> ExecutionResult:
        now = utcnow()
        return cls(exit_code=exit_code, error=error, started_at=now, ended_at=now)


@dataclass(frozen=True)
class WorkloadStart:
    """Where the workload starts in the host process tree a backend reports: everything
    before it, and every process outside it, is the harness Glasshouse runs to set the run
    up (observers keep the harness out of the workload's receipt sections).

    ``kind``: ``"root_exec"``, the root's first exec (the process backend: its pre-exec code
    is harness); ``"launcher"``, an exec by a child of a process running the ``launcher``
    binary (bwrap's sandbox: glasshouse-init, or bwrap itself without it); ``"none"``, no
    host process runs the workload's code as itself (gVisor's runsc, a VM's VMM);
    ``"running"``, the root already runs and is the workload from the moment the observer
    attaches (a session's persistent interpreter, handed a step's code).
    """

    kind: Literal["root_exec", "launcher", "none", "running"] = "root_exec"
    launcher: str | None = None


@dataclass
class Handle:
    """A started workload. ``pid`` is the host-side root pid to observe (the process, the
    sandbox's init, or the VMM), or ``None`` when there is no host process (fake)."""

    spec: ExecutionSpec
    pid: int | None
    id: str = field(default_factory=lambda: os.urandom(6).hex())
    killed_reason: str | None = None
    #: where the workload starts in the tree rooted at ``pid`` (the rest is harness)
    workload_start: WorkloadStart = field(default_factory=WorkloadStart)


@runtime_checkable
class Backend(Protocol):
    """How a workload is executed. Implementations live in ``glasshouse.backends``."""

    name: str
    isolation: str  # "none" | "namespaces" | "gvisor" | "vm" | "fake"

    def prepare(self) -> None:
        """Make the backend ready (probe binaries, build images). Idempotent, cheap when done."""
        ...

    def start(
        self, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        """Create the workload and hold it at its gate. Raise BackendError on failure."""
        ...

    def release(self, handle: Handle) -> None:
        """Let the gated workload run."""
        ...

    def wait(self, handle: Handle) -> ExecutionResult:
        """Block until the workload ends, enforcing ``spec.deadline_s`` (kill + timed_out)."""
        ...

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        """Kill the whole workload now (any descendants included). Safe to call any time."""
        ...

    def cleanup(self, handle: Handle) -> None:
        """Release every resource of the run. Idempotent. The workload must be dead when it
        returns; a backend may finish slow teardown (reaping, removing directories) in the
        background, and then offers ``close()`` (see :func:`close_backend`)."""
        ...


def close_backend(backend: object) -> None:
    """Wait for a backend's background teardown, if it has any (an optional ``close()``):
    call it before exiting, once no more runs will start."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()


@runtime_checkable
class Prewarmable(Protocol):
    """Optional, on top of :class:`Backend`: a backend that can do a run's spec-independent
    setup ahead of time (workspace, uid, seccomp program, a restored VM...), so a request does
    not pay for it. The server keeps a pool of such slots (``glasshouse.server``).

    A slot serves exactly one run and must suit any spec; a backend that cannot use a slot
    for some spec discards it and starts cold inside :meth:`start_prewarmed`.
    """

    def prewarm(self) -> Any:
        """Prepare one slot. Raise BackendError if it cannot."""
        ...

    def start_prewarmed(
        self, slot: Any, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        """Like :meth:`Backend.start`, consuming ``slot`` (released at the run's cleanup)."""
        ...

    def discard(self, slot: Any) -> None:
        """Release a slot that will not be used (stale, or at shutdown). Idempotent."""
        ...


def new_execution_id() -> str:
    """``exec-<unix ms>-<80 random bits>``: sortable by time, unguessable."""
    return f"exec-{time.time_ns() // 1_000_000}-{os.urandom(10).hex()}"
