"""How the guest init talks to the host: one request in, one result out, framed by
``gh_transport``. On vsock (port 52) when the VM has a vsock device (Firecracker), else on
the serial console as ``GHFRAME`` lines (QEMU). Also the snapshot boot's wait for the
host's wake line.

Only built-in modules at import (termios and tty are loaded when the serial console is
used)."""

from __future__ import annotations

import _socket
import _thread
import os
import time

import gh_transport as T
from gh_system import PRE, console


class Vsock:
    #: Intermediate frames (guest events, output) can be sent ahead of the result.
    streams_events = True
    streams_output = True

    def __init__(self) -> None:
        self._sending = _thread.allocate_lock()  # the output pump sends from its thread
        self._listener = _socket.socket(_socket.AF_VSOCK, _socket.SOCK_STREAM)
        self._listener.bind((_socket.VMADDR_CID_ANY, T.VSOCK_PORT))
        self._listener.listen(1)
        self._conn: _socket.socket | None = None
        self._rest = b""

    def receive(self) -> dict:
        while True:
            if self._conn is not None:  # the next frame on the same connection
                conn = self._conn
            else:
                fd, _ = self._listener._accept()
                conn = _socket.socket(fileno=fd)
                self._rest = b""
            try:
                # One recv usually holds the whole (small) request: every syscall of a
                # restored guest runs through the emulated kernel on kvm_pvm (~5-15 ms).
                # A prime frame and the request may arrive in one read: keep what follows.
                data = self._rest or conn.recv(1 << 16)
                if len(data) < T.HEADER.size:
                    data += recv_exact(conn, T.HEADER.size - len(data))
                length = T.decode_header(data[: T.HEADER.size], T.MAX_REQUEST)
                body = data[T.HEADER.size :]
                if len(body) < length:
                    body += recv_exact(conn, length - len(body))
                body, self._rest = body[:length], body[length:]
            except (OSError, T.ProtocolError) as exc:
                console(f"glasshouse: bad request connection: {exc}".encode())
                conn.close()
                self._conn = None
                continue
            # The listener stays open: this VM serves one request and is destroyed, and
            # closing it would be one more emulated syscall before the user's code runs.
            self._conn = conn
            return T.decode_body(body)

    def send(self, frame: bytes) -> None:
        assert self._conn is not None
        # No shutdown(): the host reads exactly the announced length.
        with self._sending:
            self._conn.sendall(frame)

    def linger(self, seconds: float) -> None:
        """Wait until the host has the result: it closes the connection or kills the VM
        once it read it. sendall() only queues the bytes; a kernel worker moves them to the
        device, and powering off first lost a whole result now and then."""
        assert self._conn is not None
        self._conn.settimeout(seconds)
        try:
            self._conn.recv(1)
        except OSError:
            pass


def recv_exact(conn: _socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return bytes(buf)


class Serial:
    #: One line carries the result: guest events and output travel with it, never ahead.
    streams_events = False
    streams_output = False

    def __init__(self) -> None:
        import termios
        import tty

        self._fd = os.open("/dev/ttyS0", os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._fd)
        attrs = termios.tcgetattr(self._fd)
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)

    def receive(self) -> dict:
        buf = bytearray()
        while True:
            chunk = os.read(self._fd, 65536)
            if not chunk:
                time.sleep(0.01)
                continue
            buf += chunk
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf = bytearray(rest)
                line = line.strip(b"\r")
                if not line.startswith(T.SERIAL_PREFIX):
                    continue
                frame = T.unb64(
                    line[len(T.SERIAL_PREFIX) :].decode("ascii", "replace"),
                    "request",
                    T.MAX_REQUEST + 8,
                )
                length = T.decode_header(frame[: T.HEADER.size], T.MAX_REQUEST)
                return T.decode_body(frame[T.HEADER.size : T.HEADER.size + length])

    def send(self, frame: bytes) -> None:
        data = b"\n" + T.serial_line(frame)
        while data:
            data = data[os.write(self._fd, data) :]
        try:
            import termios

            termios.tcdrain(self._fd)
        except OSError:
            pass

    def linger(self, seconds: float) -> None:
        """Nothing to wait for: send() drained the console."""


def wait_wake() -> None:
    """Announce READY (the host snapshots us now) and block until the wake line."""
    import termios
    import tty

    fd = os.open("/dev/ttyS0", os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: that could drop an early wake line
    console(T.READY_LINE)
    buf = b""
    while T.WAKE_LINE not in buf:
        chunk = os.read(fd, 256)
        buf = (buf + chunk)[-256:]
    PRE["woken"] = time.monotonic()  # fd stays open: no close() syscall after restore
