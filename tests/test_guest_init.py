"""The guest init's pure parts, on the host (no VM, no root): the request's fields, the
workspace path check, files in and outputs out, stream capture, guest events. Each result
or event the guest builds is read back with the host's strict parser, as in a real run."""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from glasshouse.backends.microvm import _request
from glasshouse.core.execution import ExecutionSpec, Limits
from glasshouse.guest import transport as T

INIT_DIR = Path(__file__).resolve().parents[1] / "src" / "glasshouse" / "guest" / "init"


def _guest(name: str) -> ModuleType:
    """Import guest init module ``name`` as the guest does: beside ``gh_transport`` (in the
    guest, a copy of glasshouse/guest/transport.py)."""
    sys.modules.setdefault("gh_transport", T)
    if str(INIT_DIR) not in sys.path:
        sys.path.append(str(INIT_DIR))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def ws() -> ModuleType:
    return _guest("gh_workspace")


# ----- the request ------------------------------------------------------------------------


def test_host_request_reads_back_in_the_guest(ws: ModuleType) -> None:
    spec = ExecutionSpec(
        argv=["python3", "-c", "print(1)"],
        env={"A": "1"},
        cwd="sub",
        stdin=b"in",
        files={"d/f.txt": b"data"},
        outputs=["o.txt"],
        limits=Limits(output_bytes=123, pids=5),
        guest_events=True,
    )
    frame = T.encode_frame(_request.build_request(spec))
    req = T.decode_body(frame[T.HEADER.size :])
    got = ws.parse_request(req)
    assert got["argv"] == ["python3", "-c", "print(1)"]
    assert got["env"] == {"A": "1"}
    assert got["cwd"] == "/work/sub"
    assert got["stdin"] == b"in"
    assert got["outputs"] == ["o.txt"]
    assert got["output_bytes"] == 123 and got["outputs_bytes"] == _request.OUTPUTS_BYTES
    assert got["limits"]["pids"] == 5
    assert got["events_cap"] == _request.EVENTS_CAP
    assert T.unb64(req["files"]["d/f.txt"], "f", 100) == b"data"


def test_request_defaults(ws: ModuleType) -> None:
    got = ws.parse_request({"v": 1, "argv": ["true"]})
    assert got["env"] == ws.DEFAULT_ENV and got["cwd"] == "/work"
    assert got["stdin"] == b"" and got["outputs"] == [] and got["limits"] == {}
    assert got["events_cap"] is None
    assert ws.parse_request({"v": 1, "argv": ["true"], "events": True})["events_cap"] == 10000
    assert ws.parse_request({"v": 1, "argv": ["true"], "cwd": "/tmp"})["cwd"] == "/tmp"


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"argv": ["true"]}, "version"),
        ({"v": 2, "argv": ["true"]}, "version"),
        ({"v": 1}, "argv"),
        ({"v": 1, "argv": []}, "argv"),
        ({"v": 1, "argv": "true"}, "argv"),
        ({"v": 1, "argv": ["a", 1]}, "argv"),
        ({"v": 1, "argv": ["true"], "env": ["A=1"]}, "env"),
        ({"v": 1, "argv": ["true"], "cwd": 3}, "cwd"),
        ({"v": 1, "argv": ["true"], "outputs": "o.txt"}, "outputs"),
        ({"v": 1, "argv": ["true"], "limits": [1]}, "limits"),
        ({"v": 1, "argv": ["true"], "stdin": "!!"}, "base64"),
    ],
)
def test_bad_requests_are_refused(ws: ModuleType, req: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ws.parse_request(req)


# ----- the workspace ----------------------------------------------------------------------


def test_workspace_path_stays_in_the_workspace(ws: ModuleType, tmp_path: Path) -> None:
    root = str(tmp_path.resolve())
    assert ws.workspace_path("a/b.txt", root) == os.path.join(root, "a/b.txt")
    assert ws.workspace_path("a/../b.txt", root) == os.path.join(root, "a/../b.txt")
    (tmp_path / "out").symlink_to("/etc")
    for bad in ["../escape", "a/../../escape", "/etc/passwd", "", ".", "out/passwd", "a\x00b"]:
        with pytest.raises(ValueError, match="bad workspace path"):
            ws.workspace_path(bad, root)


def test_files_in_and_outputs_out(ws: ModuleType, tmp_path: Path) -> None:
    root = str(tmp_path.resolve())
    ws.write_files({"d/in.txt": T.b64(b"hello"), "top": T.b64(b"")}, root)
    assert (tmp_path / "d" / "in.txt").read_bytes() == b"hello"
    with pytest.raises(ValueError, match="bad workspace path"):
        ws.write_files({"../x": T.b64(b"no")}, root)
    assert not (tmp_path.parent / "x").exists()
    (tmp_path / "big").write_bytes(b"z" * 10)
    names = ["d/in.txt", "missing", "../etc/passwd", "top", "big", "d/in.txt"]
    got = ws.read_outputs(names, 12, root)
    # missing and bad names are skipped; the first file over the budget ends the list
    assert got == {"d/in.txt": T.b64(b"hello"), "top": ""}


def test_captured_streams_are_what_the_host_accepts(ws: ModuleType, tmp_path: Path) -> None:
    big = b"0123456789" * 200_000  # over one 1 MiB read
    path = tmp_path / "stdout"
    path.write_bytes(big)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = ws.capture(fd, 1000)
    finally:
        os.close(fd)
    assert out["size"] == len(big) and out["truncated"]
    assert out["sha256"] == hashlib.sha256(big).hexdigest()
    assert base64.b64decode(out["data"]) == big[:1000]
    result = {"v": 1, "exit_code": 0, "stdout": out, "stderr": ws.empty_stream()}
    body = T.encode_frame(result)[T.HEADER.size :]
    parsed = T.parse_result(body, output_bytes=1000, outputs_bytes=0)
    assert parsed["stdout"]["size"] == len(big)
    _request.check_streams(parsed)


def test_a_broken_request_still_gets_a_valid_answer(ws: ModuleType) -> None:
    try:
        ws.parse_request({"v": 1, "argv": []})
    except ValueError as exc:
        answer = ws.error_result(exc)
    body = T.encode_frame(answer)[T.HEADER.size :]
    parsed = T.parse_result(body, output_bytes=10, outputs_bytes=10)
    assert parsed["error"].startswith("guest init: ValueError: argv")
    assert parsed["exit_code"] is None and parsed["stdout"]["size"] == 0


# ----- guest events -----------------------------------------------------------------------


def test_audit_events_are_what_the_host_accepts(tmp_path: Path) -> None:
    audit = _guest("gh_audit")
    cwd = os.getcwd()
    raw = [
        audit.AUDITED["open"](("rel.txt", "w", os.O_WRONLY | os.O_CREAT)),
        audit.AUDITED["open"]((3, "r", 0)),
        audit.AUDITED["open"]((b"/b", "r", None)),
        audit.AUDITED["os.rename"](("/a", "/b", -1, -1)),
        audit.AUDITED["os.symlink"](("target", "/l", -1)),
        audit.AUDITED["subprocess.Popen"](("/bin/ls", ["ls", "-l"], None, None)),
        audit.AUDITED["os.system"]((b"echo hi",)),
    ]
    assert audit.AUDITED["open"]((None, "r", 0)) is None
    assert raw[0] == ["open", os.path.join(cwd, "rel.txt"), os.O_WRONLY | os.O_CREAT]
    assert raw[1] == ["open", "<fd 3>", 0] and raw[2] == ["open", "/b", 0]
    assert raw[4] == ["link", "target", "/l", "symbolic"]
    assert raw[6] == ["spawn", "/bin/sh", ["/bin/sh", "-c", "echo hi"]]
    assert T.parse_events(raw) == raw


def test_audit_socket_addresses() -> None:
    import socket

    audit = _guest("gh_audit")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        assert audit.AUDITED["socket.connect"]((s, ("::1", 53))) == [
            "connect",
            "inet6",
            "udp",
            "[::1]:53",
        ]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        assert audit.AUDITED["socket.bind"]((s, "/tmp/s")) == ["bind", "unix", "tcp", "/tmp/s"]


def test_events_past_the_cap_are_counted_lost() -> None:
    audit = _guest("gh_audit")
    events = audit.GuestEvents(None, 3)  # no channel: events go with the result
    for i in range(5):
        events.add(["delete", f"/work/{i}"])
    assert len(events.events) == 3 and events.count == 5 and events.lost == 2


def test_kernel_command_line_options() -> None:
    system = _guest("gh_system")
    words = ["console=ttyS0", "gh.warm=1", "gh.transport=serial", "gh.flag", "quiet"]
    assert system.cmdline_options(words) == {"gh.warm": "1", "gh.transport": "serial"}


def test_which_commands_run_in_the_warm_interpreter() -> None:
    runners = _guest("gh_runners")
    assert runners.runs_inprocess(["python3", "-c", "print(1)", "arg"])
    assert runners.runs_inprocess(["/usr/bin/python3.11", "-c", ""])
    assert not runners.runs_inprocess(["python3", "script.py"])
    assert not runners.runs_inprocess(["python3", "-c"])
    assert not runners.runs_inprocess(["/opt/python3", "-c", "x"])
