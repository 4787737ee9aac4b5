"""Output the guest streams out while its command runs (vsock ``output`` frames): each chunk
goes to the run's sinks at once and is kept, so a run that never answers (timed out, killed)
still has its output up to that moment, and the result's streams are this prefix plus what
the result frame itself carries."""

from __future__ import annotations

import hashlib
import threading

from glasshouse.core.execution import Sink, StreamResult


class StreamedOutput:
    """The kept prefix of stdout and stderr received so far, at most ``cap`` bytes each."""

    def __init__(self, cap: int, sinks: tuple[Sink | None, Sink | None] = (None, None)) -> None:
        self.cap = cap
        self.sinks = sinks
        self._kept = (bytearray(), bytearray())
        self._lock = threading.Lock()

    def room(self) -> tuple[int, int]:
        """Bytes each stream may still stream ahead of the result."""
        with self._lock:
            return (self.cap - len(self._kept[0]), self.cap - len(self._kept[1]))

    def feed(self, stream: int, data: bytes) -> None:
        """``data`` arrived for stream 1 (stdout) or 2 (stderr): keep it, pass it on."""
        with self._lock:
            kept = self._kept[stream - 1]
            if len(kept) + len(data) > self.cap:
                raise ValueError("streamed output past the stream's cap")
            kept += data
        _tell(self.sinks[stream - 1], data)

    def sent(self, stream: int) -> bytes:
        with self._lock:
            return bytes(self._kept[stream - 1])

    def join(self, stream: int, sent: int, rest: bytes) -> bytes:
        """The stream's whole kept prefix: the ``sent`` bytes streamed ahead (as the result
        claims; they must be exactly what arrived) and the ``rest`` the result carries."""
        have = self.sent(stream)
        if len(have) != sent:
            raise ValueError(f"the result says {sent} bytes were streamed, {len(have)} arrived")
        return have + rest

    def tell(self, stream: int, data: bytes) -> None:
        """Pass ``data`` of ``stream`` to its sink (the part the result itself carried)."""
        _tell(self.sinks[stream - 1], data)

    def partial(self, stream: int) -> StreamResult:
        """What arrived of ``stream`` for a run that never answered: all the host knows of
        it. At the cap, more may have been written that the guest never streamed."""
        data = self.sent(stream)
        full = len(data) >= self.cap and self.cap > 0
        return StreamResult(data, len(data), hashlib.sha256(data).hexdigest(), full)


def _tell(sink: Sink | None, data: bytes) -> None:
    if sink is not None and data:
        try:
            sink(data)
        except Exception:  # a broken sink must not break the run
            pass
