"""The server's sessions: live :class:`glasshouse.Session` objects, their owners and deadlines.

Independent of HTTP (``glasshouse.server._session_routes`` is the thin layer over it). Each
session is a library Session over the server's backend, observers and receipt pipeline, so
every step receipt (and the session receipt at the end) goes into the server's log and index,
owned by the tenant that opened the session.

- At most ``--max-sessions`` live at once (paused ones count); beyond, :class:`TooManySessions`.
- ``ttl_s``: the session is closed (reason ``ttl``) that long after it opened, whatever it
  does. ``idle_timeout_s``: a running session with no step, no file transfer and no resume
  for that long is closed (reason ``idle``); a paused one waits for its ttl.
- One step at a time per session (a second one: ``SessionBusy``, 409 on the wire).
- A closed or expired session is remembered (owner, reason, receipt id) until the server
  restarts or :data:`REMEMBERED` later closures push it out: :class:`SessionWasClosed` (410).
- At shutdown every live session is closed with reason ``shutdown``: its receipt is sealed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as _dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from glasshouse.core.errors import SessionBusy, SessionGone, SessionPaused
from glasshouse.core.execution import Limits
from glasshouse.core.session import SessionCapable
from glasshouse.receipt.aggregate import rfc3339
from glasshouse.server import _limits
from glasshouse.server.models import (
    FileEntry,
    SessionInfo,
    SessionRequest,
    SessionUsage,
    StepRequest,
    StepResponse,
)

if TYPE_CHECKING:
    from glasshouse.server._runner import Runner, Streams
    from glasshouse.server._tenancy import Tenant
    from glasshouse.session import Session, StepResult

_log = logging.getLogger("glasshouse.server")

#: Session ids the server hands out (``glasshouse.session.new_session_id``).
SESSION_ID = re.compile(r"^sess-[0-9]{13}-[0-9a-f]{20}$")
#: Closed sessions remembered (410) before the oldest is forgotten (404).
REMEMBERED = 10_000
#: How often the reaper looks at the deadlines (seconds), at most.
_REAP_EVERY_S = 0.5
#: After a session receipt could not be stored, seconds before the reaper tries again.
_RESEAL_AFTER_S = 10.0


class NoSuchSession(LookupError):
    """No session by that id that this tenant may see (404)."""


class SessionWasClosed(LookupError):
    """The session was closed or expired; the server remembers why (410)."""

    def __init__(self, sid: str, gone: Gone) -> None:
        receipt = f"; its session receipt: {gone.receipt_id}" if gone.receipt_id else ""
        super().__init__(f"session {sid} was closed ({gone.reason}) at {gone.closed_at}{receipt}")
        self.gone = gone


class TooManySessions(RuntimeError):
    """``--max-sessions`` are open (429)."""


class SessionsUnavailable(RuntimeError):
    """This server's backend has no sessions (501)."""


class SealFailed(RuntimeError):
    """The session ended but its receipt could not be stored (500); retried later."""


@dataclass(frozen=True)
class Gone:
    owner: str | None
    reason: str
    receipt_id: str | None
    closed_at: str


@dataclass
class Entry:
    """One live session and what the server keeps about it."""

    session: Session
    owner: str | None
    ttl_s: float
    idle_timeout_s: float
    expires_at: _dt.datetime
    deadline: float  # monotonic: the ttl
    active: float  # monotonic: the last step, transfer or resume
    busy: bool = False
    closing: bool = False
    seal_failed_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.session.id

    def idle_deadline(self) -> float:
        return self.active + self.idle_timeout_s


class SessionManager:
    """Opens, finds, runs, reaps and closes the server's sessions. Thread-safe."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.config = runner.config
        self.available = isinstance(runner.inner, SessionCapable) and self.config.max_sessions > 0
        self._lock = threading.Lock()
        self._live: dict[str, Entry] = {}
        self._reserved = 0  # sessions being opened
        self._gone: collections.OrderedDict[str, Gone] = collections.OrderedDict()
        self._draining = False
        self._stop = threading.Event()
        # steps, transfers, opening and closing: blocking work, off the event loop; at most
        # one step per session, so max_sessions bounds the steps at once
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, 2 * self.config.max_sessions + 2),
            thread_name_prefix="glasshouse-session",
        )
        self._reaper = threading.Thread(
            target=self._reap_loop, name="glasshouse-reaper", daemon=True
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.available:
            self._reaper.start()

    def begin_shutdown(self) -> None:
        with self._lock:
            self._draining = True

    def close_all(self, reason: str = "shutdown") -> int:
        """Close every live session (their receipts record ``reason``); return how many."""
        self.begin_shutdown()
        self._stop.set()
        if self._reaper.is_alive():
            self._reaper.join(timeout=10)
        with self._lock:
            entries = list(self._live.values())
        closed = 0
        for entry in entries:
            try:
                self.close(entry, reason)
                closed += 1
            except Exception as exc:
                _log.error("session %s not sealed at shutdown: %s", entry.id, exc)
        self.executor.shutdown(wait=True, cancel_futures=True)
        return closed

    def count(self) -> int:
        with self._lock:
            return len(self._live)

    # -- opening and finding --------------------------------------------------------------
    def open(self, owner: str | None, request: SessionRequest) -> Entry:
        """Open a session for ``owner`` (blocking: call off the event loop)."""
        if self.config.max_sessions == 0:
            raise SessionsUnavailable("sessions are off on this server (--max-sessions 0)")
        if not self.available:
            raise SessionsUnavailable(
                f"the {self.runner.backend_name} backend has no sessions (they run on: sandbox)"
            )
        self._admit()
        try:
            self.runner.check_store()
            entry = self._open(owner, request)
        except BaseException:
            with self._lock:
                self._reserved -= 1
            raise
        with self._lock:
            self._reserved -= 1
            self._live[entry.id] = entry
        return entry

    def _admit(self) -> None:
        with self._lock:
            if self._draining:
                raise self.runner.draining_error()
            if len(self._live) + self._reserved >= self.config.max_sessions:
                raise TooManySessions(
                    f"{len(self._live) + self._reserved} sessions open (--max-sessions "
                    f"{self.config.max_sessions}): close one, or retry later"
                )
            self._reserved += 1

    def _open(self, owner: str | None, request: SessionRequest) -> Entry:
        from glasshouse.session import Session

        config = self.config
        ttl = request.ttl_s if request.ttl_s is not None else config.session_ttl_s
        idle = request.idle_timeout_s
        idle = min(ttl, config.session_idle_timeout_s if idle is None else idle)
        wanted = _limits.limits_for(request, config)
        session = Session(
            self.runner.inner,
            profile=config.profile,
            network=request.network,
            limits=Limits(
                memory_bytes=wanted.memory_bytes,
                pids=wanted.pids,
                disk_bytes=wanted.disk_bytes,
                output_bytes=config.output_limit,
            ),
            env=request.env,
            files=dict(request.files),
            pipeline=self.runner.library.pipeline,
            observers=self.runner.observers,
            list_cap=config.max_list,
            max_file_bytes=config.max_file_bytes,
        )
        now = time.monotonic()
        return Entry(
            session=session,
            owner=owner,
            ttl_s=ttl,
            idle_timeout_s=idle,
            expires_at=session.created + _dt.timedelta(seconds=ttl),
            deadline=now + ttl,
            active=now,
        )

    def get(self, sid: str, tenant: Tenant) -> Entry:
        """The live session ``sid`` if ``tenant`` may see it; else NoSuchSession, or
        SessionWasClosed while the server remembers it."""
        with self._lock:
            entry = self._live.get(sid)
            gone = self._gone.get(sid)
        if entry is not None and tenant.may_see(entry.owner):
            return entry
        if gone is not None and tenant.may_see(gone.owner):
            raise SessionWasClosed(sid, gone)
        raise NoSuchSession(f"no session {sid}")

    def visible(self, tenant: Tenant) -> list[Entry]:
        with self._lock:
            entries = list(self._live.values())
        return [e for e in entries if tenant.may_see(e.owner)]

    def info(self, entry: Entry) -> SessionInfo:
        data = entry.session.info()
        idle_left = entry.idle_deadline() - time.monotonic()
        idle_at = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=idle_left)
        return SessionInfo(
            id=entry.id,
            backend=str(data["backend"]),
            isolation=str(data["isolation"]),
            created=str(data["created"]),
            expires_at=rfc3339(entry.expires_at),
            state=str(data["state"]),
            steps=int(data["steps"]),
            last_active=str(data["last_active"]),
            idle_timeout_s=entry.idle_timeout_s,
            idle_expires_at=rfc3339(idle_at),
            busy=entry.busy,
            usage=SessionUsage(**(data.get("usage") or {})),
        )

    # -- steps ----------------------------------------------------------------------------
    def submit_step(
        self, entry: Entry, request: StepRequest, streams: Streams | None = None
    ) -> concurrent.futures.Future[StepResponse]:
        """Start a step, or raise at once why it cannot (busy, paused, gone, draining, the
        store): so a streamed answer's 200 goes out only for a step that runs."""
        with self._lock:
            if self._draining:
                raise self.runner.draining_error()
        self.runner.check_store()
        with entry.lock:
            if entry.closing or entry.session.state == "closed":
                raise SessionGone(f"session {entry.id} is closed")
            if entry.busy:
                raise SessionBusy(f"session {entry.id} is already running a step")
            if entry.session.state == "paused":
                raise SessionPaused(f"session {entry.id} is paused: resume it first")
            entry.busy = True
            entry.active = time.monotonic()
        try:
            return self.executor.submit(self._step, entry, request, streams)
        except RuntimeError:  # executor shut down
            with entry.lock:
                entry.busy = False
            raise self.runner.draining_error() from None

    def _step(self, entry: Entry, request: StepRequest, streams: Streams | None) -> StepResponse:
        started = time.monotonic()
        try:
            if streams is not None:
                streams.started()
            result = self._run(entry.session, request, streams)
        except (SessionBusy, SessionPaused, SessionGone):
            raise
        except Exception as exc:
            if self.runner.log.failure is not None:  # the step ran; its receipt is not stored
                self.runner.metrics.receipt_error()
                raise self.runner.write_error(exc) from exc
            raise
        finally:
            with entry.lock:
                entry.busy = False
                entry.active = time.monotonic()
        self.runner.index_stored(result.receipt, entry.owner)
        self.runner.observe(result.execution, time.monotonic() - started, result.receipt)
        return _answer(result)

    def _run(self, session: Session, request: StepRequest, streams: Streams | None) -> StepResult:
        options: dict[str, Any] = {
            "stdin": request.stdin,
            "env": request.env,
            "cwd": request.cwd,
            "timeout": _limits.timeout_for(request, self.config),
            "output_bytes": self.config.output_limit,
        }
        if streams is not None:
            options["on_stdout"] = streams.sink("stdout")
            options["on_stderr"] = streams.sink("stderr")
        if request.code is not None:
            return session.run_code(request.code, **options)
        if request.shell is not None:
            return session.run_shell(request.shell, **options)
        return session.run_command(list(request.command or []), **options)

    # -- files ----------------------------------------------------------------------------
    def write_file(self, entry: Entry, path: str, data: bytes) -> FileEntry:
        info = self._touching(entry, lambda: entry.session.files.write(path, data))
        return FileEntry(**info.as_dict())

    def read_file(self, entry: Entry, path: str) -> bytes:
        limit = self.config.max_file_bytes
        data: bytes = self._touching(entry, lambda: entry.session.files.read(path, limit))
        return data

    def list_files(self, entry: Entry, path: str) -> list[FileEntry]:
        infos = entry.session.files.list(path)
        return [FileEntry(**info.as_dict()) for info in infos]

    def delete_file(self, entry: Entry, path: str) -> None:
        self._touching(entry, lambda: entry.session.files.delete(path))

    def _touching(self, entry: Entry, action: Callable[[], Any]) -> Any:
        try:
            return action()
        finally:
            entry.active = time.monotonic()

    # -- pause, resume, close -------------------------------------------------------------
    def pause(self, entry: Entry) -> str:
        return entry.session.pause()

    def resume(self, entry: Entry) -> None:
        entry.session.resume()
        entry.active = time.monotonic()

    def close(self, entry: Entry, reason: str) -> str:
        """Close ``entry``'s session (a step in flight is killed first), seal and index its
        receipt, remember it; return the session receipt's id. Idempotent."""
        entry.closing = True
        try:
            closed = entry.session.close(reason)
        except Exception as exc:
            entry.seal_failed_at = time.monotonic()
            _log.error("session %s: its receipt could not be stored: %s", entry.id, exc)
            if self.runner.log.failure is not None:
                self.runner.metrics.receipt_error()
            raise SealFailed(f"the session receipt could not be stored: {exc}") from exc
        with self._lock:
            first = self._live.pop(entry.id, None) is not None
            if first:
                self._remember(entry, closed.reason, closed.receipt_id)
        if first:
            self.runner.index_stored(closed.receipt, entry.owner)
        return closed.receipt_id

    def _remember(self, entry: Entry, reason: str, receipt_id: str | None) -> None:
        self._gone[entry.id] = Gone(entry.owner, reason, receipt_id, rfc3339(_now()))
        while len(self._gone) > REMEMBERED:
            self._gone.popitem(last=False)

    # -- the reaper -----------------------------------------------------------------------
    def _reap_loop(self) -> None:
        while not self._stop.wait(_REAP_EVERY_S):
            try:
                self.reap()
            except Exception:  # the reaper must outlive a bad session
                _log.exception("session reaper")

    def reap(self, now: float | None = None) -> list[str]:
        """Close what is past its ttl, or idle past its timeout; return their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entries = list(self._live.values())
        due = []
        for entry in entries:
            why = self._expired(entry, now)
            if why is not None and not entry.closing:
                due.append((entry, why))
            elif entry.seal_failed_at is not None and now - entry.seal_failed_at > _RESEAL_AFTER_S:
                due.append((entry, "closed"))
        for entry, why in due:
            entry.closing = True
            try:
                self.executor.submit(self._reap_one, entry, why)
            except RuntimeError:  # shutting down: close_all seals it
                return []
        return [e.id for e, _ in due]

    def _reap_one(self, entry: Entry, why: str) -> None:
        try:
            self.close(entry, why)
            _log.info("session %s closed: %s", entry.id, why)
        except Exception as exc:
            _log.error("session %s (%s) not closed: %s", entry.id, why, exc)

    @staticmethod
    def _expired(entry: Entry, now: float) -> str | None:
        if now >= entry.deadline:
            return "ttl"
        state = entry.session.state
        if state == "running" and not entry.busy and now >= entry.idle_deadline():
            return "idle"
        return None


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _answer(result: StepResult) -> StepResponse:
    execution = result.execution
    data = result.receipt.get("execution") or {}
    return StepResponse(
        stdout=result.stdout.decode("utf-8", errors="replace"),
        stderr=result.stderr.decode("utf-8", errors="replace"),
        exit_code=result.returncode,
        duration_ms=execution.duration_ms,
        receipt_id=result.execution_id,
        timed_out=execution.timed_out,
        truncated=execution.stdout.truncated or execution.stderr.truncated,
        backend=str(data.get("backend", "")),
        isolation=str(data.get("isolation", "")),
        error=execution.error,
        step=result.step,
        interpreter_restarted=result.interpreter_restarted,
    )
