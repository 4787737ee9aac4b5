"""The host's end of a microVM session's vsock connection to its session agent
(:mod:`glasshouse.guest.vm_session`): frames out under a lock, frames in on a reader thread
that feeds a step's output to its sinks as it arrives and files every other frame as the
answer to the request (or step) whose ``id`` it carries. Also the listener the agent
connects to (Firecracker bridges the guest's connection to host port ``PORT`` onto the
UNIX socket ``v.sock_<PORT>`` beside the VM) and its ``hello``."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glasshouse.guest import vm_session as W

from ._vm import GuestFailure

#: The vsock port the session agent connects to on the host (Firecracker: ``v.sock_53``).
PORT = 53
#: Frames from the guest carry at most this much payload (a file read, an output chunk).
MAX_PAYLOAD = (64 << 20) + (1 << 20)

OutputSink = Callable[[int, bytes], None]


class Link:
    """One connected session agent."""

    def __init__(self, sock: socket.socket, max_payload: int = MAX_PAYLOAD) -> None:
        sock.settimeout(None)
        self._sock = sock
        self._max = max_payload
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._answers: dict[int, tuple[dict[str, Any], bytes]] = {}
        self._sinks: dict[int, OutputSink] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self.why = ""
        self._thread = threading.Thread(target=self._read, name="gh-vm-session", daemon=True)
        self._thread.start()

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, obj: dict[str, Any], data: bytes = b"") -> None:
        if self.closed:
            raise GuestFailure(f"the session's VM is gone ({self.why})")
        try:
            with self._send_lock:
                self._sock.sendall(W.frame(obj, data))
        except OSError as exc:
            self._close(f"send failed: {exc}")
            raise GuestFailure(f"the session's VM is gone ({exc})") from None

    def request(
        self, obj: dict[str, Any], data: bytes = b"", timeout: float = 60.0
    ) -> tuple[dict[str, Any], bytes]:
        """Send ``obj`` with a fresh ``id`` and wait for the frame answering it."""
        ident = self.next_id()
        self.send({**obj, "id": ident}, data)
        answer = self.wait(ident, time.monotonic() + timeout)
        if answer is None:
            if self.closed:
                raise GuestFailure(f"the session's VM is gone ({self.why})")
            raise GuestFailure(f"the session's VM did not answer {obj.get('op')!r} in time")
        return answer

    def wait(self, ident: int, deadline: float | None) -> tuple[dict[str, Any], bytes] | None:
        """The answer filed under ``ident``, or None when ``deadline`` passed or the
        connection closed first."""
        with self._cond:
            while ident not in self._answers and not self.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._answers.pop(ident, None)

    def subscribe(self, ident: int, sink: OutputSink) -> None:
        with self._cond:
            self._sinks[ident] = sink

    def unsubscribe(self, ident: int) -> None:
        with self._cond:
            self._sinks.pop(ident, None)
            self._answers.pop(ident, None)

    def _read(self) -> None:
        try:
            while True:
                obj, data = W.recv(self._sock, self._max)
                ident = obj.get("id")
                if not isinstance(ident, int) or isinstance(ident, bool):
                    continue
                if obj.get("op") == "out":
                    sink = self._sinks.get(ident)
                    if sink is not None and obj.get("s") in (1, 2):
                        sink(int(obj["s"]), data)
                    continue
                with self._cond:
                    self._answers[ident] = (obj, data)
                    self._cond.notify_all()
        except (EOFError, OSError, ValueError, W.FrameError) as exc:
            self._close(str(exc) or type(exc).__name__)

    def _close(self, why: str) -> None:
        with self._cond:
            if not self.closed:
                self.closed, self.why = True, why
            self._cond.notify_all()

    def close(self) -> None:
        self._close("closed by the host")
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def listen(vm: Any) -> tuple[socket.socket, Path]:
    """Listen where Firecracker forwards the guest's connections to host port ``PORT``;
    the jailed VMM (its own uid) is given the socket."""
    path = Path(vm.run_dir) / f"v.sock_{PORT}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    if vm.jailed:
        os.chown(path, vm.uid, vm.uid)
    return sock, path


def accept_hello(
    listener: socket.socket, token: str, vm: Any, timeout: float
) -> tuple[socket.socket, dict[str, Any]]:
    """The agent's connection: the first one whose ``hello`` carries ``token``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if vm.proc is None or vm.proc.poll() is not None:
            break
        listener.settimeout(0.25)
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            hello, _ = W.recv(conn, 0)
        except (EOFError, OSError, ValueError, W.FrameError):
            conn.close()
            continue
        if hello.get("op") == "hello" and hello.get("token") == token:
            return conn, hello
        conn.close()
    raise GuestFailure(f"the session agent did not connect: {vm.console_tail()[-600:]}")
