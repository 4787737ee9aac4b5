"""The Engine: one run, from a spec to a result, its observations and its receipt data.

validate -> prepare -> start (gated) -> attach observers -> release -> wait -> cleanup ->
aggregate. It sits above the contracts (:mod:`glasshouse.core`) and the receipt builder
(:mod:`glasshouse.receipt.aggregate`), below the library entry point
(:mod:`glasshouse.runner`), which finishes the receipt (hooks, seal, sign, store).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from glasshouse.core.execution import (
    DEFAULT_LIST_CAP,
    Backend,
    ExecutionResult,
    ExecutionSpec,
    GlasshouseError,
    Handle,
    Sink,
    SpecError,
    new_execution_id,
    utcnow,
)
from glasshouse.core.profiling import Attachment, Observation, Observer, Profile
from glasshouse.receipt.aggregate import build_receipt

if TYPE_CHECKING:
    from glasshouse.receipt.model import Receipt

__all__ = ["Engine", "Run"]


@dataclass
class Run:
    """The Engine's output: the result, each observer's observation and the receipt.

    ``receipt_data`` is the receipt as JSON data (built without pydantic, so the CLI's hot
    path stays fast); ``receipt`` validates it into the model on first use.
    """

    execution_id: str
    spec: ExecutionSpec
    result: ExecutionResult
    observations: list[Observation]
    receipt_data: dict[str, Any]
    _receipt: Receipt | None = field(default=None, repr=False)

    @property
    def receipt(self) -> Receipt:
        if self._receipt is None:
            from glasshouse.receipt.model import Receipt

            self._receipt = Receipt.model_validate(self.receipt_data)
        return self._receipt


class Engine:
    """Orchestrates one run: validate -> prepare -> start (gated) -> attach observers ->
    release -> wait -> aggregate -> cleanup. Never raises for the workload's or the backend's
    failures: they end up in the receipt. Thread-safe: one Engine may run many specs at once.
    """

    def __init__(
        self,
        backend: Backend,
        observers: Sequence[Observer] = (),
        profile: Profile | str = "disabled",
        *,
        list_cap: int = DEFAULT_LIST_CAP,
    ) -> None:
        """``list_cap``: the most entries each receipt list keeps (observers that support it,
        ``list_cap_aware``, keep no more in memory); the rest is counted, never silent."""
        if isinstance(list_cap, bool) or not isinstance(list_cap, int) or list_cap < 1:
            raise ValueError(f"list_cap must be a positive integer, got {list_cap!r}")
        self.backend = backend
        self.observers = list(observers)
        self.profile = Profile(profile)
        self.list_cap = list_cap
        self._active: dict[str, Handle] = {}
        self._lock = threading.Lock()

    def run(
        self,
        spec: ExecutionSpec,
        *,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        execution_id: str | None = None,
        on_start: Callable[[Handle], None] | None = None,
    ) -> Run:
        execution_id = execution_id or new_execution_id()
        observations: list[Observation] = []
        try:
            spec.validate()
        except SpecError as exc:
            result = ExecutionResult.failure(f"invalid spec: {exc}")
        else:
            if self.profile in ("guest", "combined") and not spec.guest_events:
                spec = dataclasses.replace(spec, guest_events=True)
            result = self._run_validated(spec, stdout, stderr, observations, on_start)
        receipt_data = build_receipt(
            execution_id=execution_id,
            spec=spec,
            result=result,
            observations=observations,
            profile=self.profile,
            backend=self.backend,
            list_cap=self.list_cap,
        )
        return Run(execution_id, spec, result, observations, receipt_data)

    def _run_validated(
        self,
        spec: ExecutionSpec,
        stdout: Sink | None,
        stderr: Sink | None,
        observations: list[Observation],
        on_start: Callable[[Handle], None] | None,
    ) -> ExecutionResult:
        handle: Handle | None = None
        sessions: list[tuple[Observer, Any]] = []
        started = utcnow()
        try:
            self.backend.prepare()
            handle = self.backend.start(spec, stdout, stderr)
            with self._lock:
                self._active[handle.id] = handle
            if on_start is not None:
                on_start(handle)
            for observer in self.observers:
                if handle.pid is None:
                    why = f"backend {self.backend.name} has no host process to observe"
                    observations.append(
                        _never(Observation.unavailable(observer.name, observer.provenance, why))
                    )
                    continue
                try:
                    sessions.append((observer, self._start_observer(observer, handle)))
                except Exception as exc:  # fail-open: observation is never required
                    why = str(exc)
                    observations.append(
                        _never(Observation.unavailable(observer.name, observer.provenance, why))
                    )
            self.backend.release(handle)
            result = self.backend.wait(handle)
        except GlasshouseError as exc:
            result = ExecutionResult.failure(
                f"{self.backend.name}: {exc}", exit_code=getattr(exc, "exit_code", None)
            )
            result.started_at = started
        except BaseException:
            if handle is not None:
                self.backend.kill(handle, "interrupted")
            raise
        finally:
            for observer, session in sessions:
                try:
                    obs = session.stop()
                except Exception as exc:
                    obs = Observation.unavailable(
                        observer.name, observer.provenance, f"observer failed: {exc}"
                    )
                assert handle is not None
                obs.attached = obs.attached or _gated(handle, self.backend.name)
                observations.append(obs)
            if handle is not None:
                with self._lock:
                    self._active.pop(handle.id, None)
                try:
                    self.backend.cleanup(handle)
                except Exception as exc:  # cleanup problems are reported, never fatal
                    cleanup_error = f"cleanup failed: {exc}"
                    if "result" in locals():
                        result.details["cleanup_error"] = cleanup_error
        if handle is not None:
            result.scope.setdefault("root_pid", handle.pid)
            result.scope.setdefault("workload_start", handle.workload_start.kind)
        if result.guest_observation is not None:
            guest = result.guest_observation
            guest.attached = guest.attached or _in_guest(guest)
            observations.append(guest)
        elif self.profile in ("guest", "combined"):
            observations.append(
                _never(
                    Observation.unavailable(
                        "guest",
                        "guest",
                        f"backend {self.backend.name} reported no guest-side events"
                        + ("" if result.error is None else f" ({result.error})"),
                    )
                )
            )
        return result

    def _start_observer(self, observer: Observer, handle: Handle) -> Any:
        assert handle.pid is not None
        options: dict[str, Any] = {}
        if getattr(observer, "list_cap_aware", False):
            options["list_cap"] = self.list_cap
        if getattr(observer, "harness_aware", False):
            options["workload_start"] = handle.workload_start
        return observer.start(handle.pid, **options)

    def kill_all(self, reason: str = "shutdown") -> int:
        """Kill every in-flight run (their receipts record ``reason``); return how many."""
        with self._lock:
            handles = list(self._active.values())
        for handle in handles:
            self.backend.kill(handle, reason)
        return len(handles)


_GATED = {
    "root_exec": "started on host pid {pid} while it was held at the {backend} backend's gate, "
    "before its exec; released after",
    "launcher": "started on host pid {pid} (the sandbox launcher) while it was held at the "
    "{backend} backend's gate, before the sandbox and the command started; released after",
    "none": "started on host pid {pid} (the runtime or VMM) while it was held at the {backend} "
    "backend's gate; the workload runs where the host cannot see it",
    "running": "started on the running interpreter (host pid {pid}) before the step's code was "
    "handed to it",
}


def _gated(handle: Handle, backend: str) -> Attachment:
    """An observer the Engine started at the gate: before the workload's first instruction."""
    how = _GATED.get(handle.workload_start.kind, _GATED["root_exec"])
    return Attachment(True, "gated", how.format(pid=handle.pid, backend=backend))


def _in_guest(obs: Observation) -> Attachment:
    if not obs.available:
        return Attachment(False, "never", obs.reason)
    why = "recorded by the guest's init from before it started the command (the guest's claim)"
    return Attachment(True, "guest", why)


def _never(obs: Observation) -> Observation:
    obs.attached = Attachment(False, "never", obs.reason)
    return obs
