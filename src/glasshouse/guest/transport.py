"""The host <-> guest wire format of the microvm backend (seed 002 ``guest/transport``).

Stdlib only: this very file is copied into the guest rootfs and imported by the guest init.

One request goes in, one result comes out, each a *frame*: ``GH1`` + 4-byte big-endian
length + UTF-8 JSON. A VM restored ahead of its request (the host's warm pool) first gets a
``prime`` frame on the same connection (fresh entropy and the time; no answer: the guest
reports what it did in the result's ``guest.prime``). On vsock a frame is sent as is; on the serial
console (the fallback where no vsock device exists) it travels as one line
``GHFRAME <base64 of the frame>`` between kernel messages.

While the command runs, the guest may send intermediate frames ahead of the result on the
same stream (vsock only): ``events`` (its audit record, in batches) and ``output`` (new bytes
of stdout or stderr as the command writes them, within the kept prefix: a stream's result
then carries only the rest of that prefix and says how much was ``sent`` ahead).

The guest is untrusted: :func:`parse_result` accepts only a result of the exact schema below,
with every size capped, and raises :class:`ProtocolError` on anything else. The request is
trusted by the guest (it comes from the host) but still parsed defensively.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

MAGIC = b"GH1"
HEADER = struct.Struct(">3sI")
#: vsock port the guest agent listens on.
VSOCK_PORT = 52
#: Serial-console line prefix of a framed message.
SERIAL_PREFIX = b"GHFRAME "
#: Printed on the console by the guest when it is ready for a request.
READY_LINE = b"GH-READY"
#: Written by the host to a restored guest's console: "start listening on vsock now".
WAKE_LINE = b"GH-WAKE"
#: Largest request the guest accepts (code, stdin and files).
MAX_REQUEST = 64 << 20


class ProtocolError(ValueError):
    """A frame or result that does not follow the protocol; the message says what is wrong."""


def encode_frame(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return HEADER.pack(MAGIC, len(body)) + body


def decode_header(header: bytes, limit: int) -> int:
    """Length of the frame body announced by ``header``; refuse a bad magic or an oversize."""
    if len(header) != HEADER.size:
        raise ProtocolError(f"short frame header ({len(header)} bytes)")
    magic, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {magic!r}")
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the {limit}-byte cap")
    return length


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    return obj


def serial_line(frame: bytes) -> bytes:
    return SERIAL_PREFIX + base64.b64encode(frame) + b"\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a base64 string")
    if len(value) > (limit + 2) // 3 * 4:
        raise ProtocolError(f"{what} exceeds its {limit}-byte cap")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ProtocolError(f"{what} is not valid base64") from None
    if len(data) > limit:
        raise ProtocolError(f"{what} exceeds its {limit}-byte cap")
    return data


# ----- result schema (guest -> host) ------------------------------------------------------

_STREAM_KEYS = {"data", "size", "sha256", "truncated"}
#: Optional stream key: bytes of the kept prefix already delivered in output frames.
_STREAM_SENT = "sent"
_RESULT_KEYS = {
    "v",
    "exit_code",
    "signal",
    "error",
    "stdout",
    "stderr",
    "cpu_time_ms",
    "max_rss_kb",
    "outputs",
    "mode",
    "guest",
    "events",
    "oom",
}
#: Longest ``oom`` note (how the memory limit stopped the command, the guest's words).
_OOM_NOTE = 400

# ----- guest events (guest -> host; the guest's claims, parsed as strictly as the result) ---

#: Bytes allowed for the guest's events on top of a result (intermediate frames included).
EVENTS_BYTES = 8 << 20
#: Longest path or argument kept from a guest event.
_EVENT_STR = 4096
_EVENT_KINDS: dict[str, tuple[type, ...]] = {
    "open": (str, int),
    "delete": (str,),
    "rename": (str, str),
    "mkdir": (str,),
    "link": (str, str, str),
    "spawn": (str, list),
    "connect": (str, str, str),
    "bind": (str, str, str),
    "process": (int, str, list, object, object),
}
#: The prefix of an intermediate events frame (``{"v":1,"kind":"events","events":[...]}``).
EVENTS_FRAME_PREFIX = b'{"v":1,"kind":"events"'


def _event(value: object) -> list[Any]:
    if not isinstance(value, list) or not value or value[0] not in _EVENT_KINDS:
        raise ProtocolError(f"unknown guest event {str(value)[:80]!r}")
    kinds = _EVENT_KINDS[value[0]]
    args = value[1:]
    if len(args) != len(kinds):
        raise ProtocolError(f"guest event {value[0]!r} needs {len(kinds)} fields")
    for arg, kind in zip(args, kinds, strict=True):
        if kind is object:
            if arg is not None and type(arg) is not int:
                raise ProtocolError(f"guest event {value[0]!r}: a status must be int or null")
        elif kind is int:
            if type(arg) is not int:
                raise ProtocolError(f"guest event {value[0]!r}: expected an integer")
        elif kind is list:
            if not isinstance(arg, list) or len(arg) > 4096:
                raise ProtocolError(f"guest event {value[0]!r}: expected a list of strings")
            if not all(isinstance(a, str) and len(a) <= _EVENT_STR for a in arg):
                raise ProtocolError(f"guest event {value[0]!r}: expected a list of strings")
        elif not isinstance(arg, str) or len(arg) > _EVENT_STR:
            raise ProtocolError(f"guest event {value[0]!r}: expected a string")
    return value


def parse_events(value: object) -> list[list[Any]]:
    """Validate a list of raw guest events (see ``_EVENT_KINDS``)."""
    if not isinstance(value, list):
        raise ProtocolError("guest events must be a list")
    return [_event(v) for v in value]


def parse_events_frame(body: bytes) -> list[list[Any]]:
    """An intermediate ``{"v": 1, "kind": "events", "events": [...]}`` frame."""
    obj = decode_body(body)
    if set(obj) != {"v", "kind", "events"} or obj["v"] != 1 or obj["kind"] != "events":
        raise ProtocolError("an events frame must be exactly {v: 1, kind: events, events}")
    return parse_events(obj["events"])


#: The prefix of an intermediate output frame (``{"v":1,"kind":"output","stream":1,...}``).
OUTPUT_FRAME_PREFIX = b'{"v":1,"kind":"output"'
#: The streams an output frame may carry: 1 = stdout, 2 = stderr.
OUTPUT_STREAMS = (1, 2)


def output_frame(stream: int, data: bytes) -> bytes:
    """The guest's intermediate frame for new bytes of ``stream`` (1 stdout, 2 stderr)."""
    return encode_frame({"v": 1, "kind": "output", "stream": stream, "data": b64(data)})


def parse_output_frame(body: bytes, room: tuple[int, int]) -> tuple[int, bytes]:
    """An intermediate ``{"v": 1, "kind": "output", "stream": 1|2, "data": base64}`` frame:
    ``(stream, bytes)``, the bytes at most ``room[stream - 1]`` (what is left of that
    stream's kept prefix)."""
    obj = decode_body(body)
    if set(obj) != {"v", "kind", "stream", "data"} or obj["v"] != 1 or obj["kind"] != "output":
        raise ProtocolError("an output frame must be exactly {v: 1, kind: output, stream, data}")
    stream = obj["stream"]
    if type(stream) is not int or stream not in OUTPUT_STREAMS:
        raise ProtocolError("an output frame's stream must be 1 (stdout) or 2 (stderr)")
    data = unb64(obj["data"], "output frame", room[stream - 1])
    if not data:
        raise ProtocolError("an output frame must carry at least one byte")
    return stream, data


def result_limit(output_bytes: int, outputs_bytes: int) -> int:
    """The largest result frame a run with these caps can legitimately produce."""
    payload = 2 * output_bytes + outputs_bytes
    return (payload + 2) // 3 * 4 + 64 * 1024


def _int(obj: dict[str, Any], key: str, lo: int, hi: int, *, optional: bool = True) -> int | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"result field {key!r} must be an integer in [{lo}, {hi}]")
    return value


def _stream(value: object, name: str, cap: int) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {_STREAM_SENT} != _STREAM_KEYS:
        raise ProtocolError(f"result field {name!r} must be an object with {sorted(_STREAM_KEYS)}")
    sent = _int(value, _STREAM_SENT, 0, cap) or 0
    data = unb64(value["data"], f"{name}.data", cap - sent)
    size = _int(value, "size", 0, 1 << 62, optional=False)
    digest = value["sha256"]
    if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ProtocolError(f"{name}.sha256 must be 64 lowercase hex digits")
    if type(value["truncated"]) is not bool:
        raise ProtocolError(f"{name}.truncated must be a boolean")
    assert size is not None
    kept = sent + len(data)
    if kept > size or (not value["truncated"] and kept != size):
        raise ProtocolError(f"{name}: kept {kept} bytes is inconsistent with size {size}")
    return {
        "data": data,
        "size": size,
        "sha256": digest,
        "truncated": value["truncated"],
        "sent": sent,
    }


def parse_result(body: bytes, *, output_bytes: int, outputs_bytes: int) -> dict[str, Any]:
    """Validate a guest result strictly. Returns plain data with bytes decoded."""
    obj = decode_body(body)
    extra = set(obj) - _RESULT_KEYS
    if extra:
        raise ProtocolError(f"unexpected result fields {sorted(extra)}")
    if obj.get("v") != 1:
        raise ProtocolError(f"unsupported result version {obj.get('v')!r}")
    out: dict[str, Any] = {
        "exit_code": _int(obj, "exit_code", 0, 255),
        "signal": _int(obj, "signal", 1, 64),
        "cpu_time_ms": _int(obj, "cpu_time_ms", 0, 1 << 40),
        "max_rss_kb": _int(obj, "max_rss_kb", 0, 1 << 40),
    }
    error = obj.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > 4096):
        raise ProtocolError("result field 'error' must be a string of at most 4096 characters")
    out["error"] = error
    oom = obj.get("oom")
    if oom is not None and (not isinstance(oom, str) or not oom or len(oom) > _OOM_NOTE):
        raise ProtocolError(
            f"result field 'oom' must be a string of at most {_OOM_NOTE} characters"
        )
    out["oom"] = oom
    if out["exit_code"] is None and out["signal"] is None and error is None:
        raise ProtocolError("result has neither exit_code, signal nor error")
    out["stdout"] = _stream(obj.get("stdout"), "stdout", output_bytes)
    out["stderr"] = _stream(obj.get("stderr"), "stderr", output_bytes)
    outputs = obj.get("outputs", {})
    if not isinstance(outputs, dict):
        raise ProtocolError("result field 'outputs' must be an object")
    budget = outputs_bytes
    decoded: dict[str, bytes] = {}
    for name, value in outputs.items():
        if not isinstance(name, str) or not name or len(name) > 4096:
            raise ProtocolError("result output names must be non-empty strings")
        data = unb64(value, f"outputs[{name!r}]", budget)
        budget -= len(data)
        decoded[name] = data
    out["outputs"] = decoded
    mode = obj.get("mode", "")
    if mode not in ("", "inprocess", "exec"):
        raise ProtocolError(f"result field 'mode' has unknown value {mode!r}")
    out["mode"] = mode
    guest = obj.get("guest", {})
    if not isinstance(guest, dict) or len(json.dumps(guest)) > 4096:
        raise ProtocolError("result field 'guest' must be a small object")
    out["guest"] = guest
    events = obj.get("events")
    if events is not None:
        if not isinstance(events, dict) or set(events) != {"events", "count", "lost"}:
            raise ProtocolError("result field 'events' must be {events, count, lost}")
        out["events"] = {
            "events": parse_events(events["events"]),
            "count": _int(events, "count", 0, 1 << 40, optional=False),
            "lost": _int(events, "lost", 0, 1 << 40, optional=False),
        }
    else:
        out["events"] = None
    return out
