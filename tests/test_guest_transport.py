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


def test_guest_events_are_read_strictly() -> None:
    good = [
        ["open", "/work/a", 0o1101],
        ["delete", "/work/a"],
        ["rename", "/work/a", "/work/b"],
        ["mkdir", "/work/d"],
        ["link", "/work/a", "/work/l", "symbolic"],
        ["spawn", "/bin/true", ["true"]],
        ["connect", "unix", "tcp", "/tmp/s"],
        ["bind", "inet", "udp", "0.0.0.0:53"],
        ["process", 1, "/usr/bin/python3", ["python3", "-c", "x"], 0, None],
    ]
    assert T.parse_events(good) == good
    for bad in [
        {"open": 1},
        [["exec", "/bin/sh"]],  # unknown kind
        [["open", "/a"]],  # missing flags
        [["open", "/a", "r"]],  # flags not an int
        [["open", "x" * 5000, 0]],  # path over the cap
        [["spawn", "/bin/true", "true"]],  # argv not a list
        [["spawn", "/bin/true", [1]]],
        [["process", 1, "/p", [], "0", None]],  # exit code not an int
        [["process", True, "/p", [], 0, None]],  # a bool is not a pid
    ]:
        with pytest.raises(T.ProtocolError):
            T.parse_events(bad)
    frame = json.dumps({"v": 1, "kind": "events", "events": good}, separators=(",", ":"))
    assert frame.encode().startswith(T.EVENTS_FRAME_PREFIX)
    assert T.parse_events_frame(frame.encode()) == good
    with pytest.raises(T.ProtocolError, match="exactly"):
        T.parse_events_frame(json.dumps({"v": 1, "kind": "events", "events": [], "x": 1}).encode())


def test_result_carries_events_checked() -> None:
    events = {"events": [["delete", "/work/a"]], "count": 3, "lost": 2}
    out = _parse(_good(events=events))
    assert out["events"] == events
    assert _parse(_good())["events"] is None
    for bad in [{"events": []}, {**events, "lost": -1}, {**events, "events": [["nope"]]}]:
        with pytest.raises(T.ProtocolError):
            _parse(_good(events=bad))


def test_guest_events_fold_into_a_guest_observation() -> None:
    from glasshouse.backends.microvm import _events

    raw = [
        ["open", "/etc/hostname", 0o2000000],  # O_RDONLY | O_CLOEXEC
        ["open", "/work/out", 0o1101],  # O_WRONLY | O_CREAT | O_TRUNC
        ["open", "/work/rw", 0o2],  # O_RDWR
        ["open", "<fd 3>", 0],
        ["open", "/etc/hostname", 0],
        ["delete", "/work/tmp"],
        ["rename", "/work/a", "/work/b"],
        ["spawn", "/nonexistent", ["/nonexistent", "-x"]],
        ["connect", "unix", "tcp", "/tmp/s"],
        ["process", 1, "/usr/bin/python3", ["python3", "-c", "..."], 0, None],
    ]
    obs = _events.fold(raw, count=12, lost=2, mode="inprocess", complete=True)
    assert obs.provenance == "guest" and obs.available
    assert (obs.events, obs.events_lost) == (12, 2)
    assert obs.filesystem.reads == ["/etc/hostname", "/work/rw"]
    assert obs.filesystem.writes == ["/work/out", "/work/rw"]
    assert obs.filesystem.deletes == ["/work/tmp"]
    assert [(r.src, r.dst) for r in obs.filesystem.renames] == [("/work/a", "/work/b")]
    assert [(a.dst, a.family, a.result) for a in obs.network.attempts] == [
        ("/tmp/s", "unix", "requested")
    ]
    root, spawned = obs.process_tree
    assert (root.pid, root.argv[0], root.exit_code) == (1, "python3", 0)
    assert (spawned.pid, spawned.ppid, spawned.argv) == (0, 1, ["/nonexistent", "-x"])
    assert "syscalls" in obs.missing
    # An exec'd command: the guest vouches only for its own process.
    only = _events.fold(raw[-1:], count=1, lost=0, mode="exec", complete=True)
    assert only.filesystem is None and "filesystem" in only.missing


# ----- output streamed ahead of the result ---------------------------------------------------


def test_output_frames_are_read_strictly() -> None:
    frame = T.output_frame(2, b"err\n")
    body = frame[T.HEADER.size :]
    assert body.startswith(T.OUTPUT_FRAME_PREFIX)
    assert T.parse_output_frame(body, (10, 10)) == (2, b"err\n")
    bad = [
        ({"v": 1, "kind": "output", "stream": 3, "data": T.b64(b"x")}, "stream"),
        ({"v": 1, "kind": "output", "stream": True, "data": T.b64(b"x")}, "stream"),
        ({"v": 1, "kind": "output", "stream": 1, "data": ""}, "at least one byte"),
        ({"v": 1, "kind": "output", "stream": 1, "data": "!!"}, "base64"),
        ({"v": 1, "kind": "output", "stream": 1, "data": T.b64(b"x"), "y": 1}, "exactly"),
        ({"v": 1, "kind": "events", "stream": 1, "data": T.b64(b"x")}, "exactly"),
    ]
    for obj, message in bad:
        with pytest.raises(T.ProtocolError, match=message):
            T.parse_output_frame(json.dumps(obj).encode(), (10, 10))
    # each stream has its own room: what is left of its kept prefix
    with pytest.raises(T.ProtocolError, match="cap"):
        T.parse_output_frame(T.output_frame(1, b"abc")[T.HEADER.size :], (2, 10))
    assert T.parse_output_frame(T.output_frame(2, b"abc")[T.HEADER.size :], (2, 10))[0] == 2


def test_a_stream_streamed_ahead_carries_the_rest() -> None:
    whole = b"0123456789"
    digest = hashlib.sha256(whole).hexdigest()
    rest = {**_stream(whole[6:]), "sent": 6, "size": 10, "sha256": digest}
    out = _parse(_good(stdout=rest), cap=10)["stdout"]
    assert (out["data"], out["sent"], out["size"]) == (whole[6:], 6, 10)
    assert _parse(_good())["stdout"]["sent"] == 0  # a guest that streamed nothing
    for bad, message in [
        ({**rest, "sent": 5}, "inconsistent"),  # 5 + 4 kept is not the size
        ({**rest, "sent": 11}, "sent"),  # more than the cap streamed
        ({**rest, "sent": -1}, "sent"),
        ({**rest, "sent": "6"}, "sent"),
        ({**_stream(whole), "sent": 6}, "cap"),  # 6 sent + 10 kept is over the cap of 10
    ]:
        with pytest.raises(T.ProtocolError, match=message):
            _parse(_good(stdout=bad), cap=10)


def test_an_oom_note_is_a_short_string() -> None:
    assert _parse(_good(oom="MemoryError: the run's memory limit (64 MiB) was reached"))["oom"]
    assert _parse(_good())["oom"] is None
    for bad in ["", 1, "x" * 401, ["a"]]:
        with pytest.raises(T.ProtocolError, match="oom"):
            _parse(_good(oom=bad))
