"""The host's strict reading of a guest result (no VM needed): the guest is untrusted."""

from __future__ import annotations

import hashlib
import json

import pytest

from glasshouse.guest import transport as T


def _stream(data: bytes, *, size: int | None = None, truncated: bool = False) -> dict:
    return {
        "data": T.b64(data),
        "size": len(data) if size is None else size,
        "sha256": hashlib.sha256(data).hexdigest(),
        "truncated": truncated,
    }


def _good(**over: object) -> dict:
    obj = {
        "v": 1,
        "exit_code": 0,
        "signal": None,
        "error": None,
        "stdout": _stream(b"4\n"),
        "stderr": _stream(b""),
        "cpu_time_ms": 3,
        "max_rss_kb": 9000,
        "outputs": {},
        "mode": "inprocess",
        "guest": {"kernel": "6.1"},
    }
    obj.update(over)
    return obj


def _parse(obj: object, cap: int = 100) -> dict:
    return T.parse_result(json.dumps(obj).encode(), output_bytes=cap, outputs_bytes=1000)


def test_valid_result_is_decoded() -> None:
    out = _parse(_good(outputs={"o.txt": T.b64(b"x")}))
    assert out["exit_code"] == 0 and out["stdout"]["data"] == b"4\n"
    assert out["outputs"] == {"o.txt": b"x"}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "not a JSON object"),
        (_good(v=2), "version"),
        (_good(extra=1), "unexpected result fields"),
        (_good(exit_code=256), "exit_code"),
        (_good(exit_code="0"), "exit_code"),
        (_good(exit_code=True), "exit_code"),
        (_good(exit_code=None), "neither"),
        (_good(signal=99), "signal"),
        (_good(stdout={"data": "!!", "size": 1, "sha256": "0" * 64, "truncated": False}), "base64"),
        (_good(stdout=_stream(b"y" * 101)), "cap"),
        (_good(stdout=_stream(b"abc", size=2)), "inconsistent"),
        (_good(stdout={**_stream(b"a"), "sha256": "XYZ"}), "sha256"),
        (_good(stdout={**_stream(b"a"), "more": 1}), "stdout"),
        (_good(outputs={"big": T.b64(b"z" * 1001)}), "cap"),
        (_good(error="e" * 5000), "error"),
        (_good(mode="root"), "mode"),
        (_good(guest={"x": "y" * 5000}), "guest"),
    ],
)
def test_bad_results_are_refused(obj: object, message: str) -> None:
    with pytest.raises(T.ProtocolError, match=message):
        _parse(obj)


def test_not_json_and_not_utf8_are_refused() -> None:
    for body in (b"\xff\xfe", b"{", b"GH1 garbage"):
        with pytest.raises(T.ProtocolError):
            T.parse_result(body, output_bytes=10, outputs_bytes=10)


def test_frame_header_checks_magic_and_cap() -> None:
    frame = T.encode_frame({"a": 1})
    assert T.decode_header(frame[: T.HEADER.size], 100) == len(frame) - T.HEADER.size
    with pytest.raises(T.ProtocolError, match="magic"):
        T.decode_header(b"XX1" + frame[3:7], 100)
    with pytest.raises(T.ProtocolError, match="exceeds"):
        T.decode_header(T.HEADER.pack(T.MAGIC, 1 << 31), 100)
    with pytest.raises(T.ProtocolError, match="short"):
        T.decode_header(b"GH", 100)


def test_result_limit_covers_the_largest_legal_result() -> None:
    cap = 1000
    big = _good(stdout=_stream(b"\xff" * cap, size=5000, truncated=True))
    big["stderr"] = _stream(b"\xff" * cap, size=cap)
    big["outputs"] = {"f": T.b64(b"\xff" * 2000)}
    body = json.dumps(big).encode()
    assert len(body) <= T.result_limit(cap, 2000)
    assert T.parse_result(body, output_bytes=cap, outputs_bytes=2000)["stdout"]["truncated"]
