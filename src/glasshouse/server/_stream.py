"""A JSON answer of any size, encoded a piece at a time, off the event loop.

A run's stdout and stderr may each be ``--max-output`` bytes, and JSON escaping can grow
them sixfold (a control byte becomes ``\\u0001``). Encoded in one go on the event loop, a
16 MiB output held ~200 MB at once and stalled every other request (``/health``) while it
was built. Here the answer is a generator, which Starlette advances in a worker thread: a
long string is escaped a slice at a time, and each piece is sent only when the client has
taken the previous ones (uvicorn's flow control), so the memory beyond the run's own result
is a few pieces whatever the output size. The bytes are those ``JSONResponse`` would send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel
from starlette.responses import StreamingResponse

#: Characters of a long string escaped per piece, and bytes gathered before a piece is sent.
PIECE = 1 << 16


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _parts(data: Mapping[str, Any], piece: int) -> Iterator[str]:
    yield "{"
    for i, (key, value) in enumerate(data.items()):
        yield ("," if i else "") + _dumps(key) + ":"
        if isinstance(value, str) and len(value) > piece:
            yield '"'
            for start in range(0, len(value), piece):
                # a slice of a str never splits a character: each escapes on its own
                yield _dumps(value[start : start + piece])[1:-1]
            yield '"'
        else:
            yield _dumps(value)
    yield "}"


def json_pieces(data: Mapping[str, Any], piece: int = PIECE) -> Iterator[bytes]:
    """``data`` as compact JSON, in UTF-8 pieces of about ``piece`` bytes (the last smaller)."""
    pending: list[bytes] = []
    size = 0
    for part in _parts(data, piece):
        encoded = part.encode("utf-8")
        pending.append(encoded)
        size += len(encoded)
        if size >= piece:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _model_pieces(model: BaseModel) -> Iterator[bytes]:
    yield from json_pieces(model.model_dump(mode="json"))


def json_stream(model: BaseModel, status_code: int = 200) -> StreamingResponse:
    """``model`` as a streamed ``application/json`` answer (chunked transfer encoding)."""
    return StreamingResponse(
        _model_pieces(model), status_code=status_code, media_type="application/json"
    )
