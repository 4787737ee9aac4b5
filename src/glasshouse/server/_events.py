"""Streamed answers: a run's output as it happens, then its result (SSE or NDJSON).

A client asks with ``Accept: text/event-stream`` (Server-Sent Events) or
``Accept: application/x-ndjson`` (one JSON object per line). The run's reader threads hand
each output chunk to a :class:`OutputChannel`; the answer's async generator turns the chunks
into ``stdout``/``stderr`` events, then sends one ``result`` event (exactly the JSON answer
of the non-streaming call, sent once the receipt is stored) or one ``error`` event (the usual
error body) when the run failed after the 200 went out.

What is streamed of each stream is what the answer keeps: the first ``limits.output`` bytes,
decoded incrementally (a character split across two chunks is not replaced; bytes that are
not UTF-8 are), so the streamed text of a stream, joined, is the result's ``stdout`` or
``stderr``. The receipt's digests cover the raw bytes, all of them. So a client that reads
slowly costs the server at most the kept output per stream, as the non-streaming answer does.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import StreamingResponse

from glasshouse.core.execution import Sink
from glasshouse.server._stream import json_pieces

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
STREAMS = ("stdout", "stderr")
#: The answer's media types, for the OpenAPI document.
STREAM_CONTENT = {
    SSE: {
        "schema": {"type": "string"},
        "example": 'event: stdout\ndata: "4\\n"\n\nevent: result\ndata: {"stdout":"4\\n",...}\n\n',
    },
    NDJSON: {
        "schema": {"type": "string"},
        "example": '{"type":"stdout","data":"4\\n"}\n{"type":"result","data":{"stdout":"4\\n"}}\n',
    },
}


def stream_mode(accept: str | None) -> str | None:
    """The streamed media type ``accept`` asks for (:data:`SSE` or :data:`NDJSON`), else None
    (a plain JSON answer). The first of the two listed with a non-zero q wins."""
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() not in (SSE, NDJSON):
            continue
        if _quality(params) > 0:
            return media.lower()
    return None


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _event(mode: str, kind: str, data_json: str) -> bytes:
    if mode == SSE:
        return f"event: {kind}\ndata: {data_json}\n\n".encode()
    return f'{{"type":"{kind}","data":{data_json}}}\n'.encode()


class OutputChannel:
    """From a run's threads to the answer's generator: chunks, the start, the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._sent = dict.fromkeys(STREAMS, 0)  # bytes forwarded per stream (reader threads)
        self._started = asyncio.Event()

    def sink(self, stream: str) -> Sink:
        """The ``on_stdout``/``on_stderr`` callback for ``stream`` (called from any thread)."""

        def feed(chunk: bytes) -> None:
            room = self._limit - self._sent[stream]
            if room <= 0 or not chunk:
                return
            chunk = chunk[:room]
            self._sent[stream] += len(chunk)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (stream, chunk))

        return feed

    def started(self) -> None:
        """The run passed admission and starts: the 200 may go out (any thread)."""
        self._loop.call_soon_threadsafe(self._started.set)

    async def wait_started(self, done: asyncio.Future[Any]) -> None:
        """Return once the run started; if ``done`` finishes first, raise its exception (a
        run refused before it started gets an ordinary error answer, not a 200)."""
        waiter = asyncio.ensure_future(self._started.wait())
        try:
            await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._started.is_set():
            done.result()  # raises what refused the run
            raise RuntimeError("the run ended without starting")  # (not reached)

    def finish_when(self, done: asyncio.Future[Any]) -> None:
        """Close the chunk queue after ``done``: every chunk was queued before (the run's
        readers finish before its result exists), so the end comes after the last chunk."""

        def end(future: asyncio.Future[Any]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved: a client gone before the end is no error
            self._queue.put_nowait(None)

        done.add_done_callback(end)

    async def chunks(self) -> AsyncIterator[tuple[str, str]]:
        """(stream, text) in arrival order, decoded incrementally; the decoders' tails last."""
        decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in STREAMS}
        while (item := await self._queue.get()) is not None:
            stream, chunk = item
            text = decoders[stream].decode(chunk)
            if text:
                yield stream, text
        for stream in STREAMS:
            tail = decoders[stream].decode(b"", final=True)
            if tail:
                yield stream, tail


async def _events(
    channel: OutputChannel,
    done: asyncio.Future[BaseModel],
    mode: str,
    error_body: Callable[[BaseException], dict[str, Any]],
) -> AsyncIterator[bytes]:
    async for stream, text in channel.chunks():
        yield _event(mode, stream, _dumps(text))
    exc = done.exception()
    if exc is not None:
        yield _event(mode, "error", _dumps(error_body(exc)))
        return
    head = "event: result\ndata: " if mode == SSE else '{"type":"result","data":'
    tail = "\n\n" if mode == SSE else "}\n"
    yield head.encode()
    # the answer may be large: encoded a piece at a time in a worker thread (see _stream)
    async for piece in iterate_in_threadpool(json_pieces(done.result().model_dump(mode="json"))):
        yield piece
    yield tail.encode()


async def stream_answer(
    mode: str,
    limit: int,
    start: Callable[[OutputChannel], concurrent.futures.Future[Any]],
    error_body: Callable[[BaseException], dict[str, Any]],
) -> StreamingResponse:
    """Start a run with ``start(channel)`` (it wires the channel's sinks and ``started``) and
    answer with its events once it has started. ``limit``: bytes streamed per stream.
    Raises what refused the run if it never started; ``error_body`` turns a failure after
    the start into the ``error`` event's body."""
    channel = OutputChannel(asyncio.get_running_loop(), limit)
    done = asyncio.wrap_future(start(channel))
    channel.finish_when(done)
    await channel.wait_started(done)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(channel, done, mode, error_body), media_type=mode, headers=headers
    )
