"""The host's end of a session sandbox's control sockets (SOCK_SEQPACKET, JSON + fds).

The other end is :mod:`glasshouse.guest.step_agent`, inside the sandbox and so untrusted:
every message is size-capped, parsed defensively, and waited for with a deadline.
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
import time
from collections.abc import Sequence
from typing import Any

from glasshouse.core.execution import BackendError

_MAX_MSG = 1 << 16
_MAX_FDS = 8


class ChannelClosed(BackendError):
    """The sandbox side of a control socket is gone (the sandbox or interpreter died)."""


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(host end, sandbox end); both close-on-exec (a spawn passes the sandbox's on)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Channel:
    """Messages on one socket; answers to other requests read meanwhile are kept by id."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.kept: list[dict[str, Any]] = []
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = json.dumps(message).encode()
        anc = []
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        try:
            self.sock.sendmsg([data], anc)
        except OSError as exc:
            self.closed = True
            raise ChannelClosed(f"the sandbox's control socket is closed: {exc}") from None

    def read_one(self) -> dict[str, Any] | None:
        """Read one waiting message into :attr:`kept` (call when the socket is readable);
        None at EOF. Fds sent by the sandbox are closed: the host never takes any."""
        fds = array.array("i")
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(
                _MAX_MSG, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize)
            )
        except OSError:
            data, anc = b"", []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        for fd in fds:
            os.close(fd)
        if not data:
            self.closed = True
            return None
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            message = {"op": "garbage"}
        self.kept.append(message)
        return message

    def take(self, ident: int, ops: Sequence[str]) -> dict[str, Any] | None:
        """A kept message for request ``ident`` with one of ``ops``, removed from the kept."""
        for i, message in enumerate(self.kept):
            if message.get("id") == ident and message.get("op") in ops:
                return self.kept.pop(i)
        return None

    def wait_for(self, ident: int, ops: Sequence[str], timeout: float) -> dict[str, Any]:
        """Block until the answer to ``ident`` arrives; ChannelClosed at EOF, BackendError
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.take(ident, ops)
            if found is not None:
                return found
            if self.closed:
                raise ChannelClosed("the sandbox's step agent is gone")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"the sandbox did not answer within {timeout:g} s")
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                self.read_one()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
