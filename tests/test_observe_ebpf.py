"""The eBPF host observer against real kernels: each corpus workload yields exactly what it
did (tests/observe_corpus/), no phantom entries from unrelated processes, fail-open with the
reason, and loss accounting where zero means zero. Needs root, BTF and the built object."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _support import ebpf_observer

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.core.profiling import ObserverUnavailable
from glasshouse.engine import Engine
from glasshouse.observe import host_observer, unavailable_observer

pytestmark = [pytest.mark.root, pytest.mark.bpf]

CORPUS = Path(__file__).parent / "observe_corpus"
PY = os.path.realpath(sys.executable)
#: an exe is the file the kernel ran, symlinks resolved (/bin/sh is dash on Debian)
SH, ECHO, TRUE = (os.path.realpath(p) for p in ("/bin/sh", "/bin/echo", "/bin/true"))


@pytest.fixture(scope="module")
def observer():
    with ebpf_observer() as obs:
        yield obs


_STDOUT: dict[str, str] = {}


def run(observer, argv, cwd=None, **kw):
    """One run through the Engine with the process backend; keeps stdout for pid checks."""
    engine = Engine(create("process"), observers=[observer], profile="host")
    r = engine.run(ExecutionSpec(argv=argv, cwd=cwd, timeout=60, **kw))
    _STDOUT[r.execution_id] = r.result.stdout.data.decode()
    return r.receipt, r.observations[0]


def receipt_stdout(receipt, tmp_path=None) -> str:
    return _STDOUT[receipt.execution_id]


def corpus(name: str, *args: str) -> list[str]:
    return [PY, str(CORPUS / name), *args]


def by_pid(receipt):
    return {n.pid: n for n in receipt.process_tree}


def test_basic_receipt_sections(observer, tmp_path):
    receipt, obs = run(observer, ["/bin/sh", "-c", "exit 4"], cwd=str(tmp_path))
    assert obs.available and obs.observer == "ebpf"
    assert receipt.outcome.exit_code == 4
    root = receipt.process_tree[0]
    assert root.exe == SH and root.argv == ["/bin/sh", "-c", "exit 4"]
    assert root.working_dir == str(tmp_path) and root.exit_code == 4
    assert receipt.syscalls.counts["execve"] == 1 and receipt.syscalls.counts["exit_group"] == 1
    assert obs.events_lost == 0 and obs.truncations == 0
    assert receipt.observation.collected == [
        "process_tree",
        "filesystem",
        "network",
        "syscalls",
        "resources",
    ]


def test_argv_spaces_unicode_long(observer, tmp_path):
    receipt, obs = run(observer, corpus("argv.py"), cwd=str(tmp_path))
    echo = [n for n in receipt.process_tree if n.exe == ECHO]
    assert len(echo) == 1
    assert echo[0].argv == ["echo", "with space", "ünïcødé ✓", "", "L" * 6000, "--flag=a b"]
    assert not echo[0].argv_truncated and obs.truncations == 0


def test_argv_capture_off(tmp_path):
    from glasshouse.observe.ebpf import EbpfObserver

    try:
        obs = EbpfObserver(capture_argv=False)
    except ObserverUnavailable as exc:
        pytest.skip(str(exc))
    try:
        receipt, o = run(obs, ["/bin/echo", "secret-token"], cwd=str(tmp_path))
    finally:
        obs.close()
    assert receipt.process_tree[0].exe == ECHO
    assert receipt.process_tree[0].argv == []
    assert "argv capture disabled" in (o.reason or "")


def test_fork_without_exec(observer, tmp_path):
    receipt, _ = run(observer, corpus("fork_noexec.py", str(tmp_path)), cwd=str(tmp_path))
    child_pid, code = (int(x) for x in receipt_stdout(receipt, tmp_path).split())
    nodes = by_pid(receipt)
    child = nodes[child_pid]
    assert child.forked_only and child.exit_code == code == 3
    assert child.ppid == receipt.process_tree[0].pid
    assert child.exe == receipt.process_tree[0].exe  # its parent's image
    assert str(tmp_path / "from-child") in receipt.filesystem.writes


def test_threads_are_not_processes(observer, tmp_path):
    receipt, _ = run(observer, corpus("threads.py", str(tmp_path)), cwd=str(tmp_path))
    assert len(receipt.process_tree) == 1
    for i in range(4):
        assert str(tmp_path / f"thread-{i}") in receipt.filesystem.writes
    assert receipt.syscalls.counts.get("clone3", 0) + receipt.syscalls.counts.get("clone", 0) >= 4


def test_double_fork_grandchild_outlives_parent(observer, tmp_path):
    receipt, _ = run(observer, corpus("double_fork.py", str(tmp_path)), cwd=str(tmp_path))
    mid, gc = (int(x) for x in receipt_stdout(receipt, tmp_path).split())
    nodes = by_pid(receipt)
    assert nodes[mid].exit_code == 0 and nodes[mid].ppid == receipt.process_tree[0].pid
    assert nodes[gc].ppid == mid and nodes[gc].exit_code == 7 and nodes[gc].forked_only
    assert nodes[gc].ended_at > nodes[mid].ended_at
    assert str(tmp_path / "grandchild-done.tmp") in receipt.filesystem.writes
    assert {
        "src": str(tmp_path / "grandchild-done.tmp"),
        "dst": str(tmp_path / "grandchild-done"),
    } in [r.model_dump() for r in receipt.filesystem.renames]


def test_shebang_and_sh_chain(observer, tmp_path):
    script = str(CORPUS / "sh_chain.sh")
    receipt, _ = run(observer, [script, str(tmp_path)], cwd=str(tmp_path))
    root = receipt.process_tree[0]
    assert root.exe == SH  # the interpreter that runs, from the #! line
    assert root.argv == ["/bin/sh", script, str(tmp_path)]
    shells = [n for n in receipt.process_tree if n.exe == SH]
    assert any(n.argv[:2] == ["sh", "-c"] and not n.forked_only for n in shells)
    assert any(n.exe and n.exe.endswith("/cat") for n in receipt.process_tree)
    assert any(
        n.exe and n.exe.endswith("/ls") and n.argv == ["ls", "chain-out"]
        for n in receipt.process_tree
    )
    assert str(tmp_path / "chain-out") in receipt.filesystem.writes
    for node in receipt.process_tree:
        assert node.working_dir == str(tmp_path) or node is root


def test_posix_spawn_and_vfork(observer, tmp_path):
    receipt, _ = run(observer, corpus("spawn.py"), cwd=str(tmp_path))
    trues = [n for n in receipt.process_tree if n.exe == TRUE]
    assert sorted(n.argv[1] for n in trues) == ["spawned", "vforked"]
    assert all(n.exit_code == 0 and not n.forked_only for n in trues)
    root = receipt.process_tree[0].pid
    assert all(n.ppid == root for n in trues)


def test_file_operations(observer, tmp_path):
    w = str(tmp_path)
    receipt, obs = run(observer, corpus("files.py", w), cwd="/")
    fs = receipt.filesystem
    p = lambda *parts: os.path.join(w, *parts)  # noqa: E731
    assert p("input.txt") in fs.writes and p("input.txt") in fs.reads
    assert p("created.txt") in fs.writes  # creat + truncate
    assert p("sub", "in-sub.txt") in fs.writes  # relative after chdir
    assert p("sub", "at-dirfd.txt") in fs.writes  # relative to a dirfd
    assert p("sub", "after-fchdir.txt") in fs.writes  # relative after fchdir
    assert set(fs.mkdirs) >= {p("sub"), p("sub", "gone"), p("empty")}
    assert set(fs.deletes) >= {
        p("sub", "renamed-at.txt"),
        p("sub", "gone"),
        p("hard.txt"),
        p("empty"),
    }
    renames = {(r.src, r.dst) for r in fs.renames}
    assert (p("sub", "at-dirfd.txt"), p("sub", "renamed-at.txt")) in renames
    assert (p("input.txt"), p("moved.txt")) in renames
    links = {(ln.target, ln.path, ln.kind) for ln in fs.links}
    assert (p("moved.txt"), p("hard.txt"), "hard") in links
    assert ("moved.txt", p("soft.txt"), "symbolic") in links  # a symlink target stays as given
    failed = {(f.op, f.path, f.errno) for f in fs.failed}
    assert ("openat", p("missing.txt"), "ENOENT") in failed
    assert ("unlink", p("missing-unlink.txt"), "ENOENT") in failed
    assert ("mkdir", p("sub"), "EEXIST") in failed
    assert ("rename", f"{p('missing-src')} -> {p('never-dst')}", "ENOENT") in failed
    # failures are kept apart from successes
    assert p("missing.txt") not in fs.reads and p("never-dst") not in fs.writes
    # every path is absolute and normalized
    for path in fs.reads + fs.writes + fs.deletes + fs.mkdirs:
        assert path.startswith("/") and os.path.normpath(path) == path
    assert obs.events_lost == 0


class _Listeners:
    """Loopback listeners the network test talks to: tcp4 echo-ish, tcp6, udp, unix."""

    def __init__(self, tmp: Path) -> None:
        self.threads: list[threading.Thread] = []
        self.tcp4 = socket.create_server(("127.0.0.1", 0))
        self.tcp6 = None
        try:
            self.tcp6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        except OSError:
            pass
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.closed_port = closed.getsockname()[1]
        closed.close()
        self.unix_path = str(tmp / "listener.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen(4)
        self.tcp4_port = self.tcp4.getsockname()[1]
        self.tcp6_port = self.tcp6.getsockname()[1] if self.tcp6 else 0
        self.udp_port = self.udp.getsockname()[1]
        self._serve(self.tcp4, echo=True)
        if self.tcp6:
            self._serve(self.tcp6)
        self._serve(self.unix)

    def _serve(self, srv: socket.socket, echo: bool = False) -> None:
        def loop() -> None:
            srv.settimeout(30)
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                if echo:
                    conn.settimeout(5)
                    try:
                        data = b""
                        while len(data) < 1000:
                            chunk = conn.recv(1000 - len(data))
                            if not chunk:
                                break
                            data += chunk
                        conn.sendall(b"r" * 500)
                    except OSError:
                        pass
                conn.close()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self.threads.append(t)

    def argv(self, work: str) -> list[str]:
        return [
            work,
            str(self.tcp4_port),
            str(self.tcp6_port),
            str(self.udp_port),
            str(self.closed_port),
            self.unix_path,
        ]

    def close(self) -> None:
        for s in (self.tcp4, self.tcp6, self.udp, self.unix):
            if s is not None:
                s.close()


def test_network(observer, tmp_path):
    lst = _Listeners(tmp_path)
    try:
        receipt, _ = run(observer, corpus("net.py", *lst.argv(str(tmp_path))), cwd=str(tmp_path))
    finally:
        lst.close()
    assert receipt.outcome.exit_code == 0, receipt.outcome
    net = receipt.network
    tcp4 = f"127.0.0.1:{lst.tcp4_port}"
    attempts = {(a.dst, a.protocol, a.result, a.family) for a in net.attempts}
    assert (tcp4, "tcp", "connected", "ipv4") in attempts
    assert (f"127.0.0.1:{lst.closed_port}", "tcp", "refused", "ipv4") in attempts
    # the non-blocking connect is followed to its end: connected (one entry with the first)
    assert [a.result for a in net.attempts if a.dst == tcp4] == ["connected"]
    if lst.tcp6:
        assert (f"[::1]:{lst.tcp6_port}", "tcp", "connected", "ipv6") in attempts
    udp = f"127.0.0.1:{lst.udp_port}"
    assert (udp, "udp", "connected", "ipv4") in attempts
    assert (lst.unix_path, "unix", "connected", "unix") in attempts
    assert (str(tmp_path / "no-such.sock"), "unix", "not_found", "unix") in attempts
    sends = {(s.dst, s.protocol): s.bytes for s in net.sends}
    assert sends[(udp, "udp")] == 42 + 7  # sendto + sendmsg, no connect
    sent = [(a.result, a.bytes) for a in net.attempts if a.dst == udp and a.result == "sent"]
    assert sent == [("sent", 42 + 7)]  # datagrams are attempts too, with their bytes
    listening = [b for b in net.binds if b.listening]
    assert len(listening) == 1 and listening[0].protocol == "tcp"
    assert listening[0].addr.startswith("127.0.0.1:") and not listening[0].addr.endswith(":0")
    # 1000 + 42 + 7 + 8 bytes sent on sockets; 500 received
    assert net.bytes_sent == 1057 and net.bytes_received == 500
    assert all(a.pid == receipt.process_tree[0].pid for a in net.attempts)


def test_no_phantoms_from_unrelated_busy_process(observer, tmp_path):
    busy_dir = tmp_path / "busy"
    busy_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    busy = subprocess.Popen(
        [PY, str(CORPUS / "busy.py"), str(busy_dir), "120"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert busy.stdout.readline() == "ready\n"  # busy before the run starts...
        receipt, obs = run(observer, corpus("files.py", str(work)), cwd="/")
        assert busy.poll() is None  # ...and still busy after it ended: busy throughout
        (busy_dir / "stop").touch()
        assert busy.wait(60) == 0 and busy.stdout.read().startswith("stopped after")
    finally:
        busy.kill()
        busy.wait()
    everything = receipt.model_dump_json()
    assert str(busy_dir) not in everything and "busy-phantom" not in everything
    assert busy.pid not in by_pid(receipt)
    assert receipt.network.attempts == [] and receipt.network.sends == []
    assert obs.events_lost == 0


def test_busy_process_is_seen_when_it_is_the_run(observer, tmp_path):
    """The control for the test above: the same loop, observed, does show up."""
    busy_dir = tmp_path / "busy"
    busy_dir.mkdir()
    receipt, _ = run(observer, corpus("busy.py", str(busy_dir), "0.2"), cwd="/")
    assert receipt_stdout(receipt).startswith("ready\n")
    assert any(w.endswith("busy-phantom.txt") for w in receipt.filesystem.writes)
    assert any(s.dst == "127.0.0.1:9" for s in receipt.network.sends)


def test_concurrent_runs_are_separated(observer, tmp_path):
    dirs = [tmp_path / f"run{i}" for i in range(3)]
    results = {}

    def one(i: int) -> None:
        dirs[i].mkdir()
        results[i] = run(observer, corpus("threads.py", str(dirs[i])), cwd=str(dirs[i]))[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(3):
        writes = results[i].filesystem.writes
        assert all(str(dirs[i]) in w for w in writes if str(tmp_path) in w)
        assert len([w for w in writes if str(tmp_path) in w]) == 4
        assert len(results[i].process_tree) == 1


def test_truncations_are_counted(observer, tmp_path):
    code = "import os\ntry:\n    open('/' + 'a/' * 3000 + 'x')\nexcept OSError:\n    pass\n"
    _, obs = run(observer, [PY, "-c", code], cwd=str(tmp_path))
    assert obs.truncations >= 1


def test_loss_is_counted_never_silent(tmp_path):
    """Stall the consumer with a tiny ring buffer: records the kernel could not hand over are
    counted, so every openat the kernel counted is either a record or a lost event."""
    from glasshouse.observe.ebpf import EbpfObserver

    try:
        obs = EbpfObserver(ringbuf_bytes=1 << 16)
    except ObserverUnavailable as exc:
        pytest.skip(str(exc))
    code = (
        "import os\nfor i in range(3000):\n"
        "    fd = os.open('f%d' % i, os.O_CREAT | os.O_WRONLY, 0o600)\n    os.close(fd)\n"
    )
    try:
        obs._pause_reader(True)
        receipt, o = run(obs, [PY, "-c", code], cwd=str(tmp_path))
    finally:
        obs._pause_reader(False)
        obs.close()
    assert o.events_lost > 0
    written = [w for w in receipt.filesystem.writes if w.startswith(str(tmp_path))]
    assert len(written) < 3000
    assert receipt.syscalls.counts["openat"] <= o.events + o.events_lost
    assert receipt.observation.events_lost == o.events_lost


def test_zero_lost_means_everything_seen(observer, tmp_path):
    code = (
        "import os\nfor i in range(2000):\n"
        "    fd = os.open('f%d' % i, os.O_CREAT | os.O_WRONLY, 0o600)\n    os.close(fd)\n"
    )
    receipt, obs = run(observer, [PY, "-c", code], cwd=str(tmp_path))
    assert obs.events_lost == 0
    written = {w for w in receipt.filesystem.writes if w.startswith(str(tmp_path))}
    assert written == {str(tmp_path / f"f{i}") for i in range(2000)}


# -- fail-open -----------------------------------------------------------------------------


def test_missing_objects_fail_open(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSHOUSE_BPF_DIR", str(tmp_path))
    monkeypatch.setenv("GLASSHOUSE_OBSERVER", "ebpf")
    with pytest.raises(ObserverUnavailable, match=r"exec\.o not found"):
        host_observer(reuse=False)
    receipt, obs = run_unavailable(tmp_path)
    assert not obs.available and "exec.o not found" in obs.reason
    assert receipt.outcome.exit_code == 0  # the run still happened
    assert receipt.observation.observers[0].available is False
    assert "exec.o not found" in receipt.observation.missing["filesystem"]


def run_unavailable(tmp_path):
    try:
        host_observer(reuse=False)
    except ObserverUnavailable as exc:
        reason = str(exc)
    engine = Engine(create("process"), observers=[unavailable_observer(reason)], profile="host")
    result = engine.run(ExecutionSpec(argv=["/bin/true"], cwd=str(tmp_path)))
    return result.receipt, result.observations[0]


BROKEN = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "events.h"
char LICENSE[] SEC("license") = "GPL";
const volatile struct { __u32 a, b, c, d; } cfg = {1, 0, 0, 0};
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, __u32);
         __type(value, struct gh_event); } scratch SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, __u32);
         __type(value, __u8); } maybe SEC(".maps");
SEC("raw_tp/sys_enter")
int gh_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    return *(int *)ctx->args[0]; /* a scalar dereferenced: the verifier must reject this */
}
"""


def test_broken_object_fail_open(tmp_path, monkeypatch):
    if not shutil.which("clang") or not shutil.which("bpftool"):
        pytest.skip("clang/bpftool not installed")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF")
    src = Path(__file__).parents[1] / "src/glasshouse/observe/ebpf"
    (tmp_path / "broken.bpf.c").write_text(BROKEN)
    with open(tmp_path / "vmlinux.h", "w") as f:
        subprocess.run(
            ["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
            stdout=f,
            check=True,
        )
    subprocess.run(
        ["clang", "-g", "-O2", "-target", "bpf", f"-I{tmp_path}", f"-I{src}", "-c",
         str(tmp_path / "broken.bpf.c"), "-o", str(tmp_path / "exec.o")],
        check=True,
    )  # fmt: skip
    monkeypatch.setenv("GLASSHOUSE_BPF_DIR", str(tmp_path))
    monkeypatch.setenv("GLASSHOUSE_OBSERVER", "ebpf")
    receipt, obs = run_unavailable(tmp_path)
    assert receipt.outcome.exit_code == 0
    assert "load exec.o" in obs.reason and "invalid mem access" in obs.reason, obs.reason


def test_host_observer_reuses_one_loaded_observer(observer):
    a = host_observer()
    b = host_observer()
    assert a is b and a.name in ("ebpf", "strace")


def test_signal_and_leftover_children(observer, tmp_path):
    # the root kills itself; a background child it left is killed by the backend at the
    # end of the run and its exit is still recorded (by signal)
    receipt, _ = run(
        observer, ["/bin/sh", "-c", "sleep 30 & sleep 0.2; kill -9 $$"], cwd=str(tmp_path)
    )
    root = receipt.process_tree[0]
    assert root.signal == 9 and root.exit_code is None
    sleeper = [n for n in receipt.process_tree if n.argv == ["sleep", "30"]]
    assert len(sleeper) == 1 and sleeper[0].signal == 9 and sleeper[0].ppid == root.pid
    assert "process_tree" not in receipt.observation.missing


def test_capture_argv_env(monkeypatch):
    from glasshouse.observe.ebpf import capture_argv_from_env

    monkeypatch.delenv("GLASSHOUSE_CAPTURE_ARGV", raising=False)
    assert capture_argv_from_env() is True
    for off in ("0", "false", "off", "no"):
        monkeypatch.setenv("GLASSHOUSE_CAPTURE_ARGV", off)
        assert capture_argv_from_env() is False
    monkeypatch.setenv("GLASSHOUSE_CAPTURE_ARGV", "1")
    assert capture_argv_from_env() is True


def test_doctor_checks(observer, tmp_path, monkeypatch):
    from glasshouse.observe import doctor_checks

    checks = {c.name: c for c in doctor_checks()}
    assert checks["kernel BTF"].ok and checks["BPF load + attach"].ok
    assert "attached in" in checks["BPF load + attach"].detail
    assert "tracefs" in checks and "strace fallback" in checks
    monkeypatch.setenv("GLASSHOUSE_BPF_DIR", str(tmp_path))
    checks = {c.name: c for c in doctor_checks()}
    assert not checks["BPF object"].ok and "exec.o not found" in checks["BPF object"].detail
    assert checks["BPF object"].disables == "eBPF host observation"


def test_no_privileges_fail_open(tmp_path):
    """As an unprivileged user the load fails with the reason; the run still happens."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    code = (
        "import os, sys\n"
        "os.environ['GLASSHOUSE_OBSERVER'] = 'ebpf'\n"
        "from glasshouse.backends import create\n"
        "from glasshouse.core.execution import ExecutionSpec\n"
        "from glasshouse.engine import Engine\n"
        "from glasshouse.core.profiling import ObserverUnavailable\n"
        "from glasshouse.observe import host_observer, unavailable_observer\n"
        "try:\n    obs = host_observer()\n"
        "except ObserverUnavailable as e:\n    obs = unavailable_observer(str(e))\n"
        "r = Engine(create('process', cgroups=False), observers=[obs], profile='host')"
        ".run(ExecutionSpec(argv=['/bin/true']))\n"
        "print(r.receipt.outcome.exit_code, r.receipt.observation.observers[0].reason)\n"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    if out.returncode != 0 and "Permission denied" in out.stderr:
        pytest.skip(f"the unprivileged user cannot read the checkout: {out.stderr[-200:]}")
    assert out.returncode == 0, out.stderr
    code, reason = out.stdout.split(" ", 1)
    assert code == "0"
    assert "Operation not permitted" in reason and "CAP_BPF" in reason


def test_processes_left_running_are_named(observer):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        session = observer.start(sleeper.pid)
        obs = session.stop(linger=0)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert f"[{sleeper.pid}]" in obs.reason and "no longer observed" in obs.reason
    assert sleeper.pid not in observer._tracked_of(session.slot)
