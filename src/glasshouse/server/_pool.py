"""The warm pool: sandbox slots prepared ahead, each used once, stale ones recycled.

A background thread keeps up to ``size`` slots ready by calling the backend's
:meth:`~glasshouse.core.execution.Prewarmable.prewarm`. A run takes the oldest fresh slot
(or starts cold when none is ready); the thread then makes a replacement. Slots older than
``max_age_s`` are discarded and replaced, so a slot never carries state (a temp directory
swept by a cleaner, a changed /etc) from long ago. :class:`PooledBackend` puts the pool
behind the ordinary Backend contract, so the Engine needs no change.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from glasshouse.core.execution import (
    Backend,
    BackendError,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    Prewarmable,
    Sink,
)

_log = logging.getLogger("glasshouse.server")
_RETRY_S = 2.0
_BUSY_POLL_S = 0.02


class WarmPool:
    """Keeps ``size`` prewarmed slots of ``backend`` ready. Thread-safe."""

    def __init__(
        self,
        backend: Prewarmable,
        size: int,
        max_age_s: float = 60.0,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.backend = backend
        self.size = size
        self.max_age_s = max_age_s
        #: While this says the host is saturated (every run slot taken), the pool does not
        #: refill: a slot made then only steals CPU from the runs in flight, and the next
        #: run would wait for a worker anyway. (A primed microVM costs ~25 ms more CPU than
        #: one restored for its request, which at saturation is pure loss.)
        self._busy = busy
        self._ready: collections.deque[tuple[float, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.hits = 0
        self.misses = 0
        self.recycled = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._fill, name="glasshouse-pool", daemon=True)

    def start(self) -> None:
        if self.size > 0:
            self._thread.start()

    def take(self) -> Any | None:
        """A fresh slot, or None (the caller starts cold)."""
        now = time.monotonic()
        stale = []
        slot = None
        with self._cond:
            while self._ready:
                born, candidate = self._ready.popleft()
                if now - born <= self.max_age_s:
                    slot = candidate
                    break
                stale.append(candidate)
            if slot is None:
                self.misses += 1
            else:
                self.hits += 1
            self.recycled += len(stale)
            self._cond.notify_all()
        for old in stale:
            self._discard(old)
        return slot

    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    def stats(self) -> dict[str, int | str]:
        with self._cond:
            out: dict[str, int | str] = {
                "size": self.size,
                "ready": len(self._ready),
                "hits": self.hits,
                "misses": self.misses,
                "recycled": self.recycled,
                "failures": self.failures,
                "max_age_s": int(self.max_age_s),
            }
            if self.last_error:
                out["last_error"] = self.last_error
            return out

    def close(self) -> None:
        """Stop refilling and discard every ready slot."""
        with self._cond:
            self._closed = True
            slots = [s for _, s in self._ready]
            self._ready.clear()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for slot in slots:
            self._discard(slot)

    def _discard(self, slot: Any) -> None:
        try:
            self.backend.discard(slot)
        except Exception as exc:  # a slot that cannot be released must not stop the pool
            _log.warning("warm pool: discarding a slot failed: %s", exc)

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    self._recycle_locked()
                    if len(self._ready) < self.size and not self._saturated():
                        break
                    if len(self._ready) < self.size:  # saturated: look again soon
                        self._cond.wait(timeout=_BUSY_POLL_S)
                        continue
                    oldest = self._ready[0][0]
                    wait = max(0.05, oldest + self.max_age_s - time.monotonic())
                    self._cond.wait(timeout=wait)
                if self._closed:
                    return
            try:
                slot = self.backend.prewarm()
            except Exception as exc:
                with self._cond:
                    self.failures += 1
                    self.last_error = str(exc)
                    self._cond.wait(timeout=_RETRY_S)
                continue
            with self._cond:
                if self._closed:
                    closed = True
                else:
                    closed = False
                    self._ready.append((time.monotonic(), slot))
            if closed:
                self._discard(slot)
                return

    def _saturated(self) -> bool:
        if self._busy is None:
            return False
        try:
            return bool(self._busy())
        except Exception:  # a broken probe must not stop the pool
            return False

    def _recycle_locked(self) -> None:
        now = time.monotonic()
        stale = []
        while self._ready and now - self._ready[0][0] > self.max_age_s:
            stale.append(self._ready.popleft()[1])
        self.recycled += len(stale)
        if stale:
            # discarding does file I/O: do it without holding the lock
            self._cond.release()
            try:
                for slot in stale:
                    self._discard(slot)
            finally:
                self._cond.acquire()


class PooledBackend:
    """A Backend that starts runs from the pool's slots when it has one, cold otherwise."""

    def __init__(self, inner: Backend, pool: WarmPool | None) -> None:
        self.inner = inner
        self.pool = pool
        self.name = inner.name
        self.isolation = inner.isolation

    def prepare(self) -> None:
        self.inner.prepare()

    def start(
        self, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        slot = self.pool.take() if self.pool is not None else None
        if slot is None:
            return self.inner.start(spec, stdout, stderr)
        assert isinstance(self.inner, Prewarmable)
        try:
            return self.inner.start_prewarmed(slot, spec, stdout, stderr)
        except BackendError:
            self.pool.failures += 1  # type: ignore[union-attr]
            raise

    def release(self, handle: Handle) -> None:
        self.inner.release(handle)

    def wait(self, handle: Handle) -> ExecutionResult:
        return self.inner.wait(handle)

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        self.inner.kill(handle, reason)

    def cleanup(self, handle: Handle) -> None:
        self.inner.cleanup(handle)
