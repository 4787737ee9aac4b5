"""What both VMM drivers' VMs share: the per-VM directory, the console reader, the VMM
process (spawn, kill, reap) and the interface the backend drives a VM through."""

from __future__ import annotations

import atexit
import collections
import os
import secrets
import select
import shutil
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from glasshouse.core.execution import BackendError
from glasshouse.guest import transport as T

from ._streamed import StreamedOutput

#: Console bytes kept per VM (for error messages); the rest is read and dropped.
CONSOLE_KEEP = 64 * 1024

RUN_ROOT = Path(os.environ.get("GLASSHOUSE_RUN_DIR", "/run/glasshouse/microvm"))


class GuestFailure(BackendError):
    """The guest ended or answered without a valid result (crash, garbage, no answer)."""


class Console:
    """Reads a VMM's serial output in a thread: keeps the tail, signals ``GH-READY``, and
    collects ``GHFRAME`` lines (the serial transport)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._tail = bytearray()
        self.ready = threading.Event()
        self.frame_line: bytes | None = None
        self.frame_event = threading.Event()
        self.closed = threading.Event()
        self._frame_cap = 0
        self._thread = threading.Thread(target=self._pump, name="gh-console", daemon=True)
        self._thread.start()

    def expect_frame(self, cap: int) -> None:
        self._frame_cap = cap

    def _pump(self) -> None:
        pending = bytearray()
        try:
            while True:
                chunk = self._stream.read1(65536) if hasattr(self._stream, "read1") else b""
                if not chunk:
                    break
                pending += chunk
                while True:
                    nl = pending.find(b"\n")
                    if nl < 0:
                        # a line longer than any legal frame is garbage: drop it
                        limit = max(self._frame_cap * 2, CONSOLE_KEEP)
                        if len(pending) > limit:
                            del pending[:]
                        break
                    line = bytes(pending[:nl]).rstrip(b"\r")
                    del pending[: nl + 1]
                    self._line(line)
        except (OSError, ValueError):
            pass
        finally:
            self.closed.set()
            self.frame_event.set()

    def _line(self, line: bytes) -> None:
        if line.startswith(T.SERIAL_PREFIX):
            if self.frame_line is None:
                self.frame_line = line[len(T.SERIAL_PREFIX) :]
                self.frame_event.set()
            return
        if line.strip() == T.READY_LINE:
            self.ready.set()
        self._tail += line[:4096] + b"\n"
        if len(self._tail) > CONSOLE_KEEP:
            del self._tail[: len(self._tail) - CONSOLE_KEEP]

    def tail(self, n: int = 2000) -> str:
        return bytes(self._tail[-n:]).decode("utf-8", "replace")


def make_run_dir(prefix: str) -> Path:
    RUN_ROOT.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = RUN_ROOT / f"{prefix}-{secrets.token_hex(6)}"
    path.mkdir(mode=0o700)
    return path


def remove_run_dir(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


class VMProcess(ABC):
    """What both VMM drivers share: the VMM process (its own session, console on stdout),
    the console reader, and kill/reap. A driver's VM implements the rest of what the
    backend drives a run through (below ``console_tail``)."""

    proc: subprocess.Popen[bytes] | None = None
    console: Console | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _start(self, cmd: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.console = Console(self.proc.stdout)

    def kill(self) -> None:
        kill_process_group(self.proc)

    def close(self) -> None:
        stop_process(self.proc)

    def console_tail(self) -> str:
        return self.console.tail() if self.console is not None else ""

    # ----- the run's interface, implemented by each driver's VM -------------------------

    @property
    def jailed(self) -> bool:
        """Does the VMM run under a jailer (chroot, own uid)?"""
        return False

    @abstractmethod
    def spawn(self) -> None:
        """Start the VMM process."""

    def open_channel(self, timeout: float) -> int | None:
        """Open the channel to the guest agent if this VM has one to open (vsock): the
        attempts it took, or None when there is nothing (left) to open."""
        return None

    def send_prime(self, frame: bytes) -> None:
        """Send a prime frame ahead of the request (a prewarmed VM; no answer comes)."""
        raise BackendError("this VM cannot be primed ahead of its request")

    @abstractmethod
    def exchange(
        self,
        request: bytes,
        limit: int,
        deadline: float | None,
        events: list[list[Any]] | None = None,
        output: StreamedOutput | None = None,
    ) -> bytes:
        """Send the request frame and return the result frame's body, at most ``limit``
        bytes, by ``deadline`` (monotonic; ``TimeoutError`` past it). With ``events`` and
        ``output``, intermediate events and output frames are validated into them where the
        channel carries any (vsock; the serial console brings everything with the result)."""

    def disconnect(self) -> None:
        """Close the channel to the guest agent (the VM is about to be killed)."""
        return None


def kill_process_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a running VMM's whole process group now (reaping is ``stop_process``'s job)."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the VMM and reap it. A VMM holds no state worth a graceful stop."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Sleep until it is gone on a pidfd (the pid is ours until reaped): Popen.wait's
        # timeout polls with growing sleeps, which cost ~25 ms per run.
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            try:
                select.select([pidfd], [], [], 10)
            finally:
                os.close(pidfd)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


class Reaper:
    """Finishes VM teardowns off the run's path. A killed VMM takes 15-20 ms to exit here
    (the kernel tears its KVM VM and guest memory down in the dying process); a run's result
    does not wait for that. One daemon thread runs the queued teardowns in order;
    :meth:`drain` waits for all of them (backend ``close()``, tests, interpreter exit)."""

    def __init__(self) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._busy = 0
        self._thread: threading.Thread | None = None

    def submit(self, teardown: Any) -> None:
        with self._cond:
            self._queue.append(teardown)
            self._busy += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="gh-reaper", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted teardown ran; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if not self._cond.wait(timeout=5.0):
                        self._thread = None
                        return
                teardown = self._queue.popleft()
            try:
                teardown()
            except Exception:  # a teardown that fails must not stop the others
                pass
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


REAPER = Reaper()
atexit.register(REAPER.drain, 10.0)
