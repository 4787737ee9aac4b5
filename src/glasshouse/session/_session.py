"""``glasshouse.Session``: a sandbox that lives across an agent's steps, every step receipted.

    with glasshouse.Session(backend="sandbox") as s:
        s.run_code("x = 41")
        print(s.run_code("print(x + 1)").stdout)       # b"42\\n"
        s.files.write("data.csv", b"a,b\\n1,2\\n")
        s.run_command(["wc", "-l", "data.csv"])
    # leaving the block seals the session receipt (s.close())

Each step is observed and receipted like a one-shot run (the Engine over the live sandbox's
step backends), with ``session {id, step, previous_step_digest}``: the steps form a hash
chain. :meth:`Session.close` seals a **session receipt** with every step's id and digest,
the union of what the OS saw across the steps and the files that went in and out.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from glasshouse.core.errors import (
    BackendUnavailable,
    SessionBusy,
    SessionGone,
    SessionPaused,
)
from glasshouse.core.execution import (
    DEFAULT_LIST_CAP,
    Backend,
    ExecutionResult,
    ExecutionSpec,
    Limits,
    Sink,
    new_execution_id,
    utcnow,
)
from glasshouse.core.session import (
    FileInfo,
    LiveSandbox,
    SessionCapable,
    SessionSpec,
    WorkspaceFiles,
)
from glasshouse.engine import Engine
from glasshouse.receipt.aggregate import build_receipt, rfc3339
from glasshouse.receipt.pipeline import ReceiptPipeline
from glasshouse.runner import Result, failed_run, result_of

from ._totals import SessionTotals

if TYPE_CHECKING:
    from glasshouse.core.profiling import Observer

__all__ = ["Session", "SessionClosed", "SessionFiles", "StepResult", "new_session_id"]

#: Default cap on one file through the files API (upload or download).
DEFAULT_FILE_BYTES = 64 << 20


def new_session_id() -> str:
    """``sess-<unix ms>-<80 random bits>``: sortable by time, unguessable."""
    return new_execution_id().replace("exec-", "sess-", 1)


@dataclass(frozen=True)
class StepResult(Result):
    """A step's :class:`~glasshouse.runner.Result`, plus its number in the session and
    whether the interpreter it ran in is a fresh one (its state was lost)."""

    step: int = 0
    interpreter_restarted: bool = False


@dataclass(frozen=True)
class SessionClosed:
    """A closed session: its sealed session receipt."""

    receipt: dict[str, Any]
    reason: str
    envelope: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def receipt_id(self) -> str:
        return str(self.receipt["execution_id"])


class SessionFiles:
    """The session's workspace from outside (``Session.files``); every transfer is recorded
    in the next step's receipt and in the session receipt."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def write(self, path: str, data: bytes | str) -> FileInfo:
        if isinstance(data, str):
            data = data.encode("utf-8")
        info = self._session._live_files().write(path, data)
        self._session._transfer("upload", info.path, data)
        return info

    def read(self, path: str, max_bytes: int | None = None) -> bytes:
        data = self._session._live_files().read(path, max_bytes)
        self._session._transfer("download", path, data)
        return data

    def list(self, path: str = ".") -> list[FileInfo]:
        return self._session._live_files().list(path)

    def delete(self, path: str) -> None:
        self._session._live_files().delete(path)


class Session:
    """A live sandbox for many steps (see the module docstring). Thread-safe: one step at
    a time (a second concurrent one raises :class:`~glasshouse.core.errors.SessionBusy`);
    any call after :meth:`close` raises :class:`~glasshouse.core.errors.SessionGone`."""

    def __init__(
        self,
        backend: str | Backend = "sandbox",
        *,
        profile: str = "host",
        network: bool = False,
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        files: Mapping[str, bytes | str] | None = None,
        pipeline: ReceiptPipeline | None = None,
        session_id: str | None = None,
        backend_options: Mapping[str, Any] | None = None,
        observers: Sequence[Observer] | None = None,
        list_cap: int = DEFAULT_LIST_CAP,
        max_file_bytes: int = DEFAULT_FILE_BYTES,
    ) -> None:
        from glasshouse import backends

        if isinstance(backend, str):
            backend = backends.create(backend, **dict(backend_options or {}))
        if not isinstance(backend, SessionCapable):
            raise BackendUnavailable(
                f"the {backend.name} backend has no sessions (sessions run on: sandbox, microvm)"
            )
        if observers is None:
            observers = []
            if profile in ("host", "combined"):
                from glasshouse.observe import observers_for

                observers = observers_for(profile)
        self.id = session_id or new_session_id()
        self.backend = backend.name
        self.profile = profile
        self.created = utcnow()
        self.last_active = self.created
        self.steps = 0
        self.state = "running"
        self.files = SessionFiles(self)
        self._network = network
        self._limits = limits or Limits()
        self._env = dict(env or {})
        inputs = {k: v.encode() if isinstance(v, str) else v for k, v in (files or {}).items()}
        self._inputs = inputs
        self._pipeline = pipeline if pipeline is not None else ReceiptPipeline()
        self._list_cap = list_cap
        self._lock = threading.Lock()  # one step (or lifecycle change) at a time
        self._previous_digest: str | None = None
        self._records: list[dict[str, Any]] = []
        self._transfers: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []  # transfers since the last step
        self._totals = SessionTotals(list_cap)
        self._closed: SessionClosed | None = None
        self._paused_keeps = ""
        spec = SessionSpec(
            env=self._env,
            network=network,
            limits=self._limits,
            files=inputs,
            max_file_bytes=max_file_bytes,
        )
        self._live: LiveSandbox = backend.open_session(spec)
        self.isolation = self._live.isolation
        self._engines = {
            kind: Engine(step_backend, observers=observers, profile=profile, list_cap=list_cap)
            for kind, step_backend in (
                ("command", self._live.commands),
                ("code", self._live.interpreter),
            )
        }

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps -------------------------------------------------------------------------
    def run_code(self, code: str, **options: Any) -> StepResult:
        """Run Python ``code`` in the session's persistent interpreter (its variables,
        imports and open files survive between steps). ``options``: see :meth:`run_command`.
        ``returncode``: 0, 1 for an uncaught exception (traceback on stderr), or
        ``sys.exit``'s code."""
        if not isinstance(code, str):
            raise TypeError("code must be a string")
        spec = self._spec(["python3", "-c", code], **options)
        extra = {"code_hash": hashlib.sha256(code.encode("utf-8", "surrogateescape")).hexdigest()}
        return self._step("code", spec, options, extra)

    def run_command(self, argv: Sequence[str], **options: Any) -> StepResult:
        """Run ``argv`` as a new process in the session's sandbox. ``stdin`` (bytes or str),
        ``env`` (added to the session's), ``cwd`` (relative to the workspace), ``timeout``
        (seconds), ``on_stdout``/``on_stderr`` (called with each chunk as it comes).
        Processes the step starts do not outlive it."""
        args = argv if isinstance(argv, str | bytes) else list(argv)
        return self._step("command", self._spec(args, **options), options, {})

    def run_shell(self, script: str, **options: Any) -> StepResult:
        """Run ``script`` with ``sh -c`` (see :meth:`run_command`)."""
        return self.run_command(["sh", "-c", script], **options)

    def _spec(
        self,
        argv: Any,
        *,
        stdin: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        output_bytes: int | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> ExecutionSpec:
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8")
        limits = Limits(
            memory_bytes=self._limits.memory_bytes,
            pids=self._limits.pids,
            disk_bytes=self._limits.disk_bytes,
            **({"output_bytes": output_bytes} if output_bytes is not None else {}),
        )
        return ExecutionSpec(
            argv=argv,
            env=dict(env or {}),
            cwd=cwd,
            stdin=stdin,
            timeout=timeout,
            limits=limits,
            network=self._network,
        )

    def _step(
        self, kind: str, spec: ExecutionSpec, options: dict[str, Any], extra: dict[str, Any]
    ) -> StepResult:
        if not self._lock.acquire(blocking=False):
            raise SessionBusy(f"session {self.id} is already running a step")
        try:
            self._check_open()
            self.steps += 1
            step = self.steps
            engine = self._engines[kind]
            execution_id = new_execution_id()
            try:
                run = engine.run(
                    spec,
                    stdout=options.get("on_stdout"),
                    stderr=options.get("on_stderr"),
                    execution_id=execution_id,
                )
            except Exception as exc:  # a backend bug: the step still leaves a receipt
                run = failed_run(engine, spec, execution_id, exc)
            restarted = bool(run.result.details.get("interpreter_restarted", False))
            transfers, self._pending = self._pending, []
            data = {
                **run.receipt_data,
                **extra,
                "session": {
                    "id": self.id,
                    "kind": "step",
                    "step": step,
                    "previous_step_digest": self._previous_digest,
                    "interpreter_restarted": restarted if kind == "code" else None,
                    "transfers": transfers,
                },
            }
            finished = self._pipeline.finish(data)
            self._previous_digest = finished.data.get("digest")
            self._records.append(
                {"step": step, "execution_id": execution_id, "digest": self._previous_digest}
            )
            self._totals.add(finished.data)
            self.last_active = utcnow()
            return result_of(run, finished, StepResult, step=step, interpreter_restarted=restarted)
        finally:
            self._lock.release()

    # -- lifecycle ---------------------------------------------------------------------
    def pause(self) -> str:
        """Free the session's CPU and memory, keep its state; returns what is kept (the
        sandbox backend keeps the workspace; the interpreter's state is lost)."""
        with self._locked():
            if self.state == "running":
                self._paused_keeps = self._live.pause()
                self.state = "paused"
            return self._paused_keeps

    def resume(self) -> None:
        with self._locked():
            if self.state == "paused":
                self._live.resume()
                self.state = "running"
                self.last_active = utcnow()

    def info(self) -> dict[str, Any]:
        """The session as the server shows it (state, steps, resources now)."""
        usage = self._live.usage() if self.state == "running" else {}
        return {
            "id": self.id,
            "backend": self.backend,
            "isolation": self.isolation,
            "state": self.state,
            "steps": self.steps,
            "created": rfc3339(self.created),
            "last_active": rfc3339(self.last_active),
            "usage": usage,
        }

    def kill_step(self, reason: str = "killed") -> bool:
        """Kill the step in flight, if any (its receipt records ``reason``); the session
        lives on. Returns whether a step was running."""
        return sum(engine.kill_all(reason) for engine in self._engines.values()) > 0

    def close(self, reason: str = "closed", *, kill: bool = True) -> SessionClosed:
        """End the session and seal its session receipt (idempotent: a second call returns
        the first's). A step in flight is killed first (``kill=False``: waited for); its
        receipt records ``session <reason>``."""
        if kill and self._lock.locked() and self._closed is None:
            self.kill_step(f"session {reason}")
        with self._lock:
            if self._closed is not None:
                return self._closed
            final = self._live.close()
            self.state = "closed"
            self._closed = self._seal(reason, final)
            return self._closed

    def _seal(self, reason: str, final: ExecutionResult) -> SessionClosed:
        ended = utcnow()
        spec = ExecutionSpec(
            argv=["glasshouse-session", self.id],
            env=self._env,
            network=self._network,
            limits=self._limits,
            files=self._inputs,
        )
        result = ExecutionResult(
            started_at=self.created,
            ended_at=ended,
            network="enabled" if self._network else "loopback",
            sandbox=dict(self._live.facts),
            details={"session_end": reason},
            oom_killed=final.oom_killed,
        )
        execution_id = new_execution_id()
        engine = self._engines["command"]
        data = build_receipt(
            execution_id=execution_id,
            spec=spec,
            result=result,
            observations=[],
            profile=engine.profile,
            backend=engine.backend,
            list_cap=self._list_cap,
        )
        self._totals.apply(data, self.steps)
        data["session"] = {
            "id": self.id,
            "kind": "session",
            "steps": list(self._records),
            "reason": reason,
            "transfers": list(self._transfers),
        }
        finished = self._pipeline.finish(data)
        return SessionClosed(finished.data, reason, finished.envelope)

    # -- internals -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.state == "closed":
            raise SessionGone(f"session {self.id} is closed")
        if self.state == "paused":
            raise SessionPaused(f"session {self.id} is paused: resume it first")

    def _locked(self) -> _Guard:
        return _Guard(self)

    def _live_files(self) -> WorkspaceFiles:
        if self.state == "closed":
            raise SessionGone(f"session {self.id} is closed")
        return self._live.files

    def _transfer(self, direction: str, path: str, data: bytes) -> None:
        entry = {
            "direction": direction,
            "path": path,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "at": rfc3339(_dt.datetime.now(_dt.UTC)),
        }
        self._pending.append(entry)
        self._transfers.append(entry)
        self.last_active = utcnow()


class _Guard:
    """The session's lock for a lifecycle change, or SessionBusy during a step."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __enter__(self) -> None:
        if not self._session._lock.acquire(blocking=False):
            raise SessionBusy(f"session {self._session.id} is running a step")
        if self._session.state == "closed":
            self._session._lock.release()
            raise SessionGone(f"session {self._session.id} is closed")

    def __exit__(self, *exc: object) -> None:
        self._session._lock.release()
