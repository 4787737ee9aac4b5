"""The guest init's pure parts, on the host (no VM, no root): the request's fields, the
workspace path check, files in and outputs out, stream capture, guest events. Each result
or event the guest builds is read back with the host's strict parser, as in a real run."""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from _support import until

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


def test_a_stream_streamed_ahead_is_captured_without_its_sent_part(
    ws: ModuleType, tmp_path: Path
) -> None:
    data = b"0123456789"
    path = tmp_path / "stdout"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = ws.capture(fd, 8, sent=3)
    finally:
        os.close(fd)
    assert base64.b64decode(out["data"]) == b"34567" and out["sent"] == 3
    assert out["size"] == 10 and out["truncated"]
    assert out["sha256"] == hashlib.sha256(data).hexdigest()  # the digest covers it all
    body = T.encode_frame({"v": 1, "exit_code": 0, "stdout": out, "stderr": ws.empty_stream()})
    parsed = T.parse_result(body[T.HEADER.size :], output_bytes=8, outputs_bytes=0)
    assert parsed["stdout"]["sent"] == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the guest's nobody needs root")
def test_files_for_a_run_as_nobody_are_its_own(ws: ModuleType, tmp_path: Path) -> None:
    root = str(tmp_path.resolve())
    ws.write_files({"a/b/c.txt": T.b64(b"x"), "top.txt": T.b64(b"y")}, root, owner=(65534, 65534))
    for rel in ("a", "a/b", "a/b/c.txt", "top.txt"):
        st = (tmp_path / rel).stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534), rel
    assert tmp_path.stat().st_uid == 0  # the workspace itself is not the file's to own


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


# ----- output streamed while the command runs ---------------------------------------------


def test_output_pump_streams_new_output_up_to_the_cap(tmp_path: Path) -> None:
    stream = _guest("gh_stream")
    fds = tuple(os.open(tmp_path / n, os.O_RDWR | os.O_CREAT, 0o600) for n in ("in", "out", "err"))
    frames: list[bytes] = []
    try:
        pump = stream.OutputPump(fds)
        os.write(fds[1], b"abc")
        pump.start(frames.append, 5, poll=True)
        until(lambda: len(frames) == 1, what="the first output frame")
        os.write(fds[2], b"E")
        os.write(fds[1], b"defgh")  # past the cap of 5: only "de" is streamed
        until(lambda: pump.sent == [5, 1], what="stdout up to its cap and stderr")
        assert pump.stop() == [5, 1]
        os.write(fds[2], b"late")
        got = [T.parse_output_frame(f[T.HEADER.size :], (5, 5)) for f in frames]
        assert b"".join(d for s, d in got if s == 1) == b"abcde"
        assert b"".join(d for s, d in got if s == 2) == b"E"
        time.sleep(2 * stream.MAX_S)  # (nothing to wait for: after stop() nothing is sent)
        assert len(frames) == len(got)
    finally:
        for fd in fds:
            os.close(fd)


def test_python_writes_stream_without_a_thread(tmp_path: Path) -> None:
    # An in-process run: each write of the interpreter's stdout streams what is new, fd-level
    # writes in between included, in file order; the polling thread is never woken.
    stream = _guest("gh_stream")
    fds = tuple(os.open(tmp_path / n, os.O_RDWR | os.O_CREAT, 0o600) for n in ("in", "out", "err"))
    frames: list[bytes] = []
    try:
        pump = stream.OutputPump(fds)
        pump.start(frames.append, 100, poll=False)
        out = stream.StreamingFile(fds[1], "w", closefd=False)
        stream.WRITE_HOOK[0] = pump.flush
        os.write(fds[1], b"fd ")  # e.g. a subprocess writing to the inherited fd 1
        out.write(b"python\n")
        assert [T.parse_output_frame(f[T.HEADER.size :], (100, 100)) for f in frames] == [
            (1, b"fd python\n")
        ]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - reports through the pipe
            os.write(write, b"none" if stream.WRITE_HOOK[0] is None else b"set")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 8) == b"none"  # a fork's writes never stream
        time.sleep(2 * stream.FIRST_S)  # (nothing to wait for: no thread was woken)
        assert len(frames) == 1 and pump.stop() == [10, 0]
    finally:
        stream.WRITE_HOOK[0] = None
        for fd in fds:
            os.close(fd)


# ----- the run's limits -------------------------------------------------------------------

_HEAP_CAP = """
import ctypes, sys
sys.path.insert(0, sys.argv[1])
import gh_limits
libc = ctypes.CDLL(None)
libc.mallopt(-4, 0)        # M_MMAP_MAX: every block on the heap, as the warm-up does
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep what was freed
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[2] == "prefaulted":
    libc.free(libc.malloc(256 << 20))  # a 256 MiB free heap, as after the warm-up
    assert gh_limits.heap_free()[0] >= 256 << 20
cap = gh_limits.HeapCap(int(sys.argv[3]) << 20)
import _thread, threading
_thread.stack_size(1 << 20)  # as the warm-up sets it
workers = [threading.Thread(target=lambda: None) for _ in range(4)]
for w in workers:
    w.start()  # a stack each: the cap keeps room for them
for w in workers:
    w.join()
chunks = []
try:
    while True:
        chunks.append(bytearray(16 << 20))
except MemoryError:
    print(len(chunks), cap.note())
cap.release()
chunks.append(bytearray(64 << 20))  # released: the heap may grow again
print("after release", len(chunks))
"""


@pytest.mark.parametrize(("heap", "limit", "chunks"), [("prefaulted", 64, 3), ("fresh", 40, 2)])
def test_heap_cap_ends_an_in_process_run_with_memory_error(
    heap: str, limit: int, chunks: int
) -> None:
    # A pre-faulted free heap far larger than the limit is fenced off; a fresh one may grow
    # up to the limit and no further (RLIMIT_DATA). In a child: the cap is process-wide.
    out = subprocess.run(
        [sys.executable, "-c", _HEAP_CAP, str(INIT_DIR), heap, str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == f"{chunks} MemoryError: the run's memory limit ({limit} MiB) was reached"
    assert second == f"after release {chunks + 1}"


_SPAWN = """
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import gh_limits
gh_limits.NOBODY = int(sys.argv[2])  # a uid nothing else on this host runs as
spawn = gh_limits.SpawnLimits({"pids": 4, "file_size_bytes": 1000})
try:
    proc = subprocess.Popen(["sh", "-c", sys.argv[3]], stdout=subprocess.PIPE)
finally:
    spawn.restore()
spawn.harden(proc.pid)
out, _ = proc.communicate(timeout=60)
print(os.getresuid(), os.getresgid(), out.decode().split(), proc.returncode)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged uid needs root")
def test_spawn_limits_bind_the_command_from_its_start(tmp_path: Path) -> None:
    uid = 0x6D000000 + os.getpid()
    script = (
        "id -u; ulimit -f; head -c 5000 /dev/zero > big 2>/dev/null; wc -c < big;"
        "i=0; while [ $i -lt 10 ]; do sleep 5 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned"
    )
    tmp_path.chmod(0o777)  # the command, as the unprivileged uid, writes here
    out = subprocess.run(
        [sys.executable, "-c", _SPAWN, str(INIT_DIR), str(uid), script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    # The init is root again; the command ran as the uid, its file stopped at 1000 bytes
    # (ulimit -f counts 512-byte blocks), and its fourth fork failed: no "spawned", exit 2.
    assert out.stdout == f"(0, 0, 0) (0, 0, 0) ['{uid}', '1', '1000'] 2\n"


_FORK = """
import os, sys
sys.path.insert(0, sys.argv[1])
import glasshouse.guest.transport
sys.modules["gh_transport"] = glasshouse.guest.transport
import gh_runners
report = os.dup(1)
fds = tuple(os.open(os.path.join(sys.argv[2], n), os.O_RDWR | os.O_CREAT, 0o600)
            for n in ("in", "out", "err"))
code = "import os\\npid = os.fork()\\nprint('child' if pid == 0 else 'parent', flush=True)\\n"
code += "if pid: os.waitpid(pid, 0)"
outcome = gh_runners.run_inprocess({}, code, [], dict(os.environ), sys.argv[2], fds)
os.write(report, b"returned %d %d\\n" % (os.getpid(), outcome["exit_code"]))
"""


def test_a_fork_of_the_init_ends_with_the_users_code(tmp_path: Path) -> None:
    # The forked child must not go on as the init (in a VM: answer the host a second time
    # on the same connection, garbling the result).
    out = subprocess.run(
        [sys.executable, "-c", _FORK, str(INIT_DIR), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"returned {out.stdout.split()[1]} 0\n"  # the init alone returned
    assert sorted((tmp_path / "out").read_text().split()) == ["child", "parent"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_workspace_limit_gives_enospc(tmp_path: Path) -> None:
    limits = _guest("gh_limits")
    ws = tmp_path / "work"
    ws.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "nosuid,nodev", "gh-test", str(ws)]
    assert subprocess.run(mount).returncode == 0
    try:
        assert limits.limit_workspace(None, str(ws)) is None
        assert limits.limit_workspace(1 << 20, str(ws)) == 1 << 20
        assert not limits.workspace_full(str(ws))
        with pytest.raises(OSError) as caught, open(ws / "big", "wb") as f:
            f.write(b"x" * (2 << 20))
            f.flush()
        assert caught.value.errno == errno.ENOSPC
        assert limits.workspace_full(str(ws))
    finally:
        subprocess.run(["umount", "-l", str(ws)])
