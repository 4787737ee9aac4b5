"""uvicorn's h11 protocol with the deadlines and the connection cap it lacks.

uvicorn arms no timer while it reads a request (its keep-alive timer runs only between
requests), and ``limit_concurrency`` acts only once a complete request head has arrived,
by answering 503: a connection that never finishes its head is never timed, counted or
closed. ~20k such connections (no token needed) took every file descriptor of the server,
and then ``/health``, ``/run`` and the runs' own pipes failed. This subclass of uvicorn's
``H11Protocol`` (the pure-Python parser uvicorn uses when httptools is absent, as here)
adds, per connection:

- a **header deadline**: ``header_timeout_s`` to deliver a request's head, from the moment
  the server is ready for it (the connection opened, or the previous response was sent);
- a **body deadline**: ``body_timeout_s`` from the end of the head to the end of the body;
- a **write deadline**: a response whose client stops reading (the transport's buffer stays
  above its high-water mark) for ``write_timeout_s`` is dropped, its buffer freed;

and per server a **connection cap** (:class:`ConnectionGuard`), kept below the descriptor
limit by :func:`http_limits`. At the cap a new connection evicts the oldest one that has
not completed its request (idle keep-alive connections included); one that is waiting for
its answer is never evicted. So ``/health`` and ``/run`` still get in under a flood,
which only ever displaces the flood's own connections. A deadline or an eviction aborts
the connection (no answer is written: a stalled client would not read one).

asyncio accepts up to ``backlog`` connections per loop turn before any protocol sees them;
uvicorn's backlog is set to :data:`ACCEPT_BATCH` and that headroom is kept free too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_log = logging.getLogger("glasshouse.server.http")

#: Connections asyncio may accept in one loop turn, per listening socket (uvicorn's backlog,
#: which is also the listen queue: a flood beyond it waits in SYN retries, not in our fds).
ACCEPT_BATCH = 32
#: Listening sockets budgeted for ("localhost" binds 127.0.0.1 and ::1).
LISTENERS = 2
#: Descriptors a running run and a warm-pool slot hold in the server, with margin (measured
#: at 6-10 per run and 3-5 per slot for the sandbox, microvm and process backends, eBPF
#: on or off), and a reserve for the rest (log files, the index, the loop's own).
FDS_PER_RUN = 16
FDS_PER_SLOT = 8
#: Descriptors an open session holds in the server (7 measured idle by bench/sessions.py:
#: control sockets, pidfd, workspace), with room for a step's pipes.
FDS_PER_SESSION = 12
FDS_RESERVE = 32
#: Below this many connections the server refuses to start (raise ``ulimit -n``).
MIN_CONNECTIONS = 16
_WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float
    body_timeout_s: float
    write_timeout_s: float
    max_connections: int


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def derived_cap(max_concurrency: int, pool_size: int, max_sessions: int = 0) -> tuple[int, int]:
    """(connection cap, RLIMIT_NOFILE soft limit): the limit minus the descriptors open now,
    those the runs, pool slots and sessions need, the accept headroom and a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    reserve = (
        open_fds()
        + FDS_PER_RUN * max_concurrency
        + FDS_PER_SLOT * pool_size
        + FDS_PER_SESSION * max_sessions
        + ACCEPT_BATCH * LISTENERS
        + FDS_RESERVE
    )
    return soft - reserve, soft


def http_limits(config: Any) -> HttpLimits:
    """The HTTP limits of a :class:`~glasshouse.server._runner.ServerConfig`; the cap is
    ``config.max_connections`` or derived (:func:`derived_cap`). Raises ValueError when the
    descriptor limit leaves too little room."""
    cap, soft = derived_cap(config.max_concurrency, config.pool_size, config.max_sessions)
    if config.max_connections is not None:
        if config.max_connections > cap:
            _log.warning(
                "--max-connections %d is above the %d that RLIMIT_NOFILE (%d) leaves after "
                "the runs' needs: a flood may exhaust descriptors",
                config.max_connections,
                cap,
                soft,
            )
        cap = config.max_connections
    elif cap < MIN_CONNECTIONS:
        raise ValueError(
            f"the descriptor limit (ulimit -n = {soft}) leaves room for {max(cap, 0)} "
            f"connections after what {config.max_concurrency} runs, {config.pool_size} pool "
            f"slots and {config.max_sessions} sessions need (at least {MIN_CONNECTIONS}): raise "
            "ulimit -n, lower --max-concurrency/--pool-size/--max-sessions, or set "
            "--max-connections"
        )
    return HttpLimits(
        config.header_timeout_s, config.body_timeout_s, config.write_timeout_s, max(1, cap)
    )


class ConnectionGuard:
    """The server's open connections, oldest first, at most ``cap`` of them."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[GuardedH11Protocol, None] = {}
        self.evicted = 0
        self._warned_at = -_WARN_EVERY_S

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Register ``conn``; at the cap, evict the oldest connection still sending its
        request first. False (``conn`` is to be closed) if every one is being answered."""
        if len(self._open) >= self.cap:
            victim = next((c for c in self._open if c.evictable()), None)
            self._warn()
            if victim is None:
                return False
            self.drop(victim)
            victim.abort("evicted at the connection cap")
            self.evicted += 1
        self._open[conn] = None
        return True

    def drop(self, conn: GuardedH11Protocol) -> None:
        self._open.pop(conn, None)

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            _log.warning(
                "connection cap %d reached (%d evicted so far): the oldest connections that "
                "had not sent a complete request are closed",
                self.cap,
                self.evicted,
            )


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with read and write deadlines and the connection cap (see module)."""

    limits: ClassVar[HttpLimits]
    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_phase: object = None  # h11.IDLE (head), h11.SEND_BODY (body) or None
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    # -- the cap ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            self.abort("refused at the connection cap: every connection is being answered")
            return
        self._watch_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.drop(self)
        self._cancel_timers()
        super().connection_lost(exc)

    def evictable(self) -> bool:
        """Still sending its request (or idle between requests): nothing is owed to it."""
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def abort(self, why: str) -> None:
        _log.debug("%s: %s", self.client, why)
        self._cancel_timers()
        if not self.transport.is_closing():
            self.transport.abort()

    # -- read deadlines -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_reading()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_reading()

    def _watch_reading(self) -> None:
        """Arm the deadline of the request part being read (head or body), when it changes."""
        state = self.conn.their_state
        phase = state if state in (h11.IDLE, h11.SEND_BODY) else None
        if self.transport.is_closing():
            phase = None
        if phase is self._read_phase:
            return
        self._read_phase = phase
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if phase is h11.IDLE:
            delay, what = self.limits.header_timeout_s, "request head"
        elif phase is h11.SEND_BODY:
            delay, what = self.limits.body_timeout_s, "request body"
        else:
            return
        self._read_timer = self.loop.call_later(
            delay, self.abort, f"{what} not received within {delay:g}s"
        )

    # -- write deadline -----------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            delay = self.limits.write_timeout_s
            self._write_timer = self.loop.call_later(
                delay, self.abort, f"the client read nothing of its answer for {delay:g}s"
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _cancel_timers(self) -> None:
        for timer in (self._read_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._read_timer = self._write_timer = None
        self._read_phase = None


def protocol_class(limits: HttpLimits) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with its own guard."""
    attrs = {"limits": limits, "guard": ConnectionGuard(limits.max_connections)}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attrs)
