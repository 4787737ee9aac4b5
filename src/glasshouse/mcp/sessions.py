"""One Glasshouse :class:`~glasshouse.Session` per MCP client, and what the client may read.

:class:`Hub` makes sessions (all from one :class:`~glasshouse.mcp.options.McpOptions` and
one receipt pipeline) and caps how many are open. :class:`Client` is one MCP client's
state: its current session (opened at its first tool call), the receipts it made (the only
ones it may read), the sessions it sealed, and a slim copy of each step's receipt for
``session_summary``. Everything here blocks; the tools call it from worker threads.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from glasshouse.core.errors import GlasshouseError
from glasshouse.mcp import effects
from glasshouse.mcp.options import McpOptions

if TYPE_CHECKING:
    from glasshouse.receipt.log import ReceiptLog
    from glasshouse.receipt.pipeline import ReceiptPipeline


class ClientError(GlasshouseError):
    """A tool call this client cannot make (too many sessions, a receipt not its own...)."""


@dataclass(frozen=True)
class Sealed:
    session_id: str
    receipt_id: str


class Hub:
    """Makes the sessions of one MCP server and counts them against ``max_sessions``."""

    def __init__(
        self,
        options: McpOptions,
        pipeline: ReceiptPipeline,
        log: ReceiptLog,
        observers: list[Any] | None = None,
    ) -> None:
        """``observers``: shared by every session (default: the profile's, loaded once)."""
        self.options = options
        self.pipeline = pipeline
        self.log = log
        self._observers = observers
        self._lock = threading.Lock()
        self._open = 0
        self._clients: set[Client] = set()

    def client(self) -> Client:
        """A new client (no session yet: it opens at the first tool that needs one)."""
        client = Client(self)
        with self._lock:
            self._clients.add(client)
        return client

    def close_all(self, reason: str) -> None:
        """Seal every client's open session (server shutdown)."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close(reason)

    def _open_session(self) -> Any:
        with self._lock:
            if self._open >= self.options.max_sessions:
                raise ClientError(
                    f"this server already has {self._open} sessions open (its limit): "
                    "try again when another client disconnects"
                )
            self._open += 1
        try:
            return self._new_session()
        except BaseException:
            with self._lock:
                self._open -= 1
            raise

    def _new_session(self) -> Any:
        from glasshouse import Limits
        from glasshouse.session import Session

        o = self.options
        with self._lock:
            if self._observers is None:
                self._observers = _observers_for(o.profile)
        return Session(
            o.backend,
            profile=o.profile,
            network=o.network,
            limits=Limits(memory_bytes=o.memory_bytes, pids=o.pids, disk_bytes=o.disk_bytes),
            env=dict(o.env),
            pipeline=self.pipeline,
            backend_options=dict(o.backend_options) or None,
            observers=self._observers,
        )

    def _session_closed(self) -> None:
        with self._lock:
            self._open -= 1

    def _forget(self, client: Client) -> None:
        with self._lock:
            self._clients.discard(client)

    def read_receipt(self, receipt_id: str) -> dict[str, Any] | None:
        try:
            path = self.log.path_for(receipt_id)
        except ValueError as exc:
            raise ClientError(str(exc)) from exc
        try:
            return dict(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None


def _observers_for(profile: str) -> list[Any]:
    """The profile's observers, loaded once for all sessions (fail-open: an observer that
    cannot load is reported in each receipt)."""
    if profile not in ("host", "combined"):
        return []
    from glasshouse.observe import observers_for

    return list(observers_for(profile))


class Client:
    """One MCP client's session, receipts and history (thread-safe)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._lock = threading.Lock()
        self._session: Any = None
        self._steps: list[dict[str, Any]] = []  # effects.slim() of each step's receipt
        self._receipts: list[str] = []  # step receipt ids of the current session
        self._mine: set[str] = set()  # every receipt this client may read
        self.sealed: list[Sealed] = []
        self._gone = False

    @property
    def session(self) -> Any:
        """The current session, opened now if there is none."""
        with self._lock:
            if self._gone:
                raise ClientError("this client has disconnected")
            if self._session is None:
                self._session = self.hub._open_session()
                self._steps, self._receipts = [], []
            return self._session

    def record(self, receipt: dict[str, Any]) -> None:
        """Remember a step's receipt (readable by this client; part of the summary)."""
        with self._lock:
            rid = str(receipt["execution_id"])
            self._mine.add(rid)
            self._receipts.append(rid)
            self._steps.append(effects.slim(receipt))

    def owns(self, receipt_id: str) -> bool:
        with self._lock:
            return receipt_id in self._mine

    def summary_parts(self) -> tuple[list[str], dict[str, Any]]:
        """(step receipt ids, the combined receipt-shaped record of the steps)."""
        with self._lock:
            return list(self._receipts), effects.combine(self._steps)

    def reset(self) -> tuple[Sealed | None, Any]:
        """Seal the current session (if any) and open a new one."""
        sealed = self._seal("reset by the client")
        return sealed, self.session

    def close(self, reason: str = "client disconnected") -> Sealed | None:
        """Seal the session for good: the client is gone."""
        with self._lock:
            self._gone = True
        try:
            return self._seal(reason)
        finally:
            self.hub._forget(self)

    def _seal(self, reason: str) -> Sealed | None:
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return None
        try:
            closed = session.close(reason=reason)
        finally:
            self.hub._session_closed()
        sealed = Sealed(str(session.id), str(closed.receipt_id))
        with self._lock:
            self._mine.add(sealed.receipt_id)
            self.sealed.append(sealed)
        return sealed
