"""The command's output, streamed to the host while it runs (vsock only).

The command writes its stdout and stderr to files; :class:`OutputPump` sends what was
appended to them since the last time, in output frames, up to each stream's kept prefix
(past the cap the result's size and digest cover the rest). When the run ends,
:meth:`OutputPump.stop` returns what was sent ahead; the result carries the rest.

Two ways to notice new output, because waking a thread costs tens of milliseconds of
emulated guest kernel on kvm_pvm (a futex, a context switch and the GIL handed over twice):

- an exec'd command (this init waits in ``wait4``, holding no GIL): a thread, started
  before the snapshot, polls the files at an interval that is short while output comes
  and grows while none does;
- an in-process run (the user's code holds the GIL): no thread wakes; the files the
  interpreter's ``sys.stdout``/``sys.stderr`` write through (:class:`StreamingFile`) send
  what is new after each of their writes, i.e. whenever Python flushes them.

Only built-in modules at import (``_thread``, ``io``)."""

from __future__ import annotations

import _thread
import io
import os

import gh_transport as T

#: Largest chunk per output frame.
CHUNK = 256 << 10
#: The polling thread's interval: at first and while output comes, and its ceiling while
#: none does (each wake-up costs the emulated guest kernel milliseconds).
FIRST_S, MAX_S = 0.1, 1.0
#: Called after each write of sys.stdout/sys.stderr during an in-process run (or None).
WRITE_HOOK: list = [None]


class StreamingFile(io.FileIO):
    """The raw file under ``sys.stdout``/``sys.stderr``: after each write it calls
    ``WRITE_HOOK[0]``, if set (never from a fork of this process)."""

    def write(self, b: bytes) -> int | None:
        n = super().write(b)
        hook = WRITE_HOOK[0]
        if hook is not None:
            hook()
        return n


def _no_hook_in_a_fork() -> None:
    WRITE_HOOK[0] = None  # a forked child must not send on this init's connection


os.register_at_fork(after_in_child=_no_hook_in_a_fork)


class OutputPump:
    def __init__(self, fds: tuple[int, int, int]) -> None:
        self._fds = (fds[1], fds[2])
        self._send = _unset
        self._go = _thread.allocate_lock()
        self._go.acquire()
        self._never = _thread.allocate_lock()  # waited on with a timeout: the interval
        self._never.acquire()
        self._busy = _thread.allocate_lock()
        self.sent = [0, 0]
        self.cap = 0
        self.stopped = False
        _thread.start_new_thread(self._loop, ())

    def start(self, send, cap: int, poll: bool) -> None:  # send: a callable (no typing)
        """Stream the run's output through ``send`` (a whole frame per call), ``cap`` bytes
        at most per stream; ``poll``: wake the polling thread (an exec'd command), else
        :meth:`flush` is called by the writes themselves (an in-process run)."""
        self._send, self.cap = send, cap
        if poll:
            self._go.release()

    def flush(self) -> None:
        """Send what is new now (the in-process runs' write hook). Never raises: the user's
        ``print`` must not fail because the host went away."""
        with self._busy:
            if self.stopped:
                return
            try:
                self._flush()
            except BaseException:
                self.stopped = True

    def stop(self) -> list[int]:
        """After this returns no frame is sent; bytes of stdout and stderr sent ahead."""
        with self._busy:
            self.stopped = True
        return list(self.sent)

    def _loop(self) -> None:
        self._go.acquire()
        wait = FIRST_S
        try:
            while not self._never.acquire(True, wait):
                with self._busy:
                    if self.stopped:
                        return
                    moved = self._flush()
                wait = FIRST_S if moved else min(wait * 2, MAX_S)
        except BaseException:  # the host went away: the result will not be read either
            self.stopped = True

    def _flush(self) -> bool:
        moved = False
        for i, fd in enumerate(self._fds):
            while self.sent[i] < self.cap:
                data = os.pread(fd, min(CHUNK, self.cap - self.sent[i]), self.sent[i])
                if not data:
                    break
                self._send(T.output_frame(i + 1, data))
                self.sent[i] += len(data)
                moved = True
        return moved


def _unset(frame: bytes) -> None:
    raise RuntimeError("the output pump was not started")
