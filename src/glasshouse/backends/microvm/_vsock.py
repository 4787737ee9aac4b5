"""The vsock channel to a Firecracker guest's agent, through Firecracker's UNIX-socket
bridge: the request frame out, the guest's events and output frames and its result frame
in, each bounded in size and time (the guest is untrusted)."""

from __future__ import annotations

import socket
import time
from typing import Any

from glasshouse.guest import transport as T

from ._streamed import StreamedOutput
from ._vm import GuestFailure


def readline(sock: socket.socket, limit: int) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        chunk = sock.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


def exchange(
    sock: socket.socket,
    request: bytes,
    limit: int,
    deadline: float | None,
    events: list[list[Any]] | None = None,
    output: StreamedOutput | None = None,
) -> bytes:
    """Send the request frame and read the result frame (body only), bounded in size and
    time. With ``events``, the guest's intermediate events frames before the result are
    validated and appended to it (at most ``T.EVENTS_BYTES`` of them); with ``output``, its
    output frames are validated and fed to it (within each stream's kept prefix). What
    arrived that way survives a run that never sends its result."""
    sock.settimeout(None if deadline is None else max(0.001, deadline - time.monotonic()))
    sock.sendall(request)
    budget = T.EVENTS_BYTES
    while True:
        header = _recv_exact(sock, T.HEADER.size, deadline)
        try:
            length = T.decode_header(header, limit)
        except T.ProtocolError as exc:
            raise GuestFailure(f"guest sent an invalid result: {exc}") from None
        body = _recv_exact(sock, length, deadline)
        if output is not None and body.startswith(T.OUTPUT_FRAME_PREFIX):
            _take_output(body, output)
        elif events is not None and body.startswith(T.EVENTS_FRAME_PREFIX):
            budget -= length
            if budget < 0:
                raise GuestFailure("guest sent more events than the cap")
            try:
                events.extend(T.parse_events_frame(body))
            except T.ProtocolError as exc:
                raise GuestFailure(f"guest sent an invalid events frame: {exc}") from None
        else:
            return body


def _take_output(body: bytes, output: StreamedOutput) -> None:
    try:
        stream, data = T.parse_output_frame(body, output.room())
    except T.ProtocolError as exc:
        raise GuestFailure(f"guest sent an invalid output frame: {exc}") from None
    output.feed(stream, data)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise GuestFailure(
                f"guest closed the connection after {len(buf)} of {n} bytes"
                if n != T.HEADER.size or buf
                else "guest ended without sending a result"
            )
        buf += chunk
    return bytes(buf)
