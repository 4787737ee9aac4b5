"""The sandbox backends (bubblewrap and gVisor) really isolate: real bwrap/runsc, real kernel.

Each test probes from inside the sandbox for something the host has (a sentinel file, a
loopback listener, host processes, interfaces, routes) and asserts it is not there; where a
sandbox option turns the isolation off (``network=True``, ``seccomp=False``) a control run
shows the same probe does see it, so the test can fail. Network probes only ever target
127.0.0.1 on this machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glasshouse.backends import gvisor as gvisor_mod
from glasshouse.backends import sandbox as sandbox_mod
from glasshouse.backends._cgroup import available as cgroups_available
from glasshouse.backends.sandbox import GVisorBackend, SandboxBackend
from glasshouse.core.execution import ExecutionSpec, Limits
from glasshouse.engine import Engine, Run

pytestmark = pytest.mark.root


def _need(probe: tuple[bool, str]) -> None:
    ok, why = probe
    if not ok:
        pytest.skip(why)


@pytest.fixture(scope="module")
def bwrap() -> SandboxBackend:
    _need(sandbox_mod.probe())
    b = SandboxBackend()
    b.prepare()
    return b


@pytest.fixture(scope="module")
def gvisor() -> GVisorBackend:
    _need(gvisor_mod.probe())
    b = GVisorBackend()
    b.prepare()
    return b


@pytest.fixture(params=["bwrap", "gvisor"], scope="module")
def any_sandbox(request: pytest.FixtureRequest) -> SandboxBackend:
    return request.getfixturevalue(request.param)


def run(backend: SandboxBackend, argv: list[str], **kw: object) -> Run:
    kw.setdefault("timeout", 60)
    return Engine(backend).run(ExecutionSpec(argv=argv, **kw))  # type: ignore[arg-type]


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (per-run host uid, cgroups)")


def require_cgroups() -> None:
    ok, why = cgroups_available()
    if not ok:
        pytest.skip(f"needs per-run cgroups: {why}")


@pytest.fixture
def loopback_listener() -> Iterator[int]:
    """A TCP service on the host's 127.0.0.1: echoes what it gets, or answers b"host"."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                data = conn.recv(64)
                conn.sendall(data or b"host")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    srv.close()


def echo_roundtrip(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"ping")
        return s.recv(64)


# -- filesystem -------------------------------------------------------------------------
def test_host_sentinel_files_are_invisible(any_sandbox: SandboxBackend, tmp_path: Path) -> None:
    token, content = secrets.token_hex(8), secrets.token_hex(8)
    places = [Path("/etc"), Path("/var/tmp"), tmp_path, Path("/root"), Path.cwd()]
    sentinels = []
    for d in places:
        if d.is_dir() and os.access(d, os.W_OK):
            p = d / f"glasshouse-sentinel-{token}"
            p.write_text(content)
            sentinels.append(p)
    try:
        code = (
            "import sys\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        print('READ', p, open(p).read())\n"
            "    except OSError as e:\n"
            "        print('DENIED', p, e.errno)\n"
        )
        r = run(any_sandbox, [*py(code), *map(str, sentinels)])
        out = r.result.stdout.data.decode()
        assert r.result.exit_code == 0, r.result
        assert content not in out and "READ" not in out
        assert out.count("DENIED") == len(sentinels) >= 3
    finally:
        for p in sentinels:
            p.unlink()


def test_only_usr_and_minimal_etc_are_visible(bwrap: SandboxBackend) -> None:
    r = run(
        bwrap, py("import os; print(sorted(os.listdir('/'))); print(sorted(os.listdir('/etc')))")
    )
    top, etc = (eval(line) for line in r.result.stdout.data.decode().splitlines())
    assert set(top) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "proc", "sbin", "tmp"} | {
        "usr",
        "workspace",
        ".glasshouse-init",
    }
    for host_only in ("shadow", "ssh", "sudoers", "machine-id"):
        assert host_only not in etc
    assert "passwd" in etc and "ld.so.cache" in etc


def test_cannot_write_outside_workspace(any_sandbox: SandboxBackend) -> None:
    token = secrets.token_hex(6)
    code = (
        "import sys\n"
        "for d in ['/usr', '/etc', '/', '/usr/lib', '/proc/sys/kernel']:\n"
        "    try:\n"
        f"        open(d + '/gh-{token}', 'w').write('x'); print('WROTE', d)\n"
        "    except OSError as e:\n"
        "        print('DENIED', d, e.errno)\n"
        f"open('/workspace/ok-{token}', 'w').write('y'); open('/tmp/t-{token}', 'w').write('z')\n"
        "print('WS-OK')\n"
    )
    r = run(any_sandbox, py(code), outputs=[f"ok-{token}"])
    out = r.result.stdout.data.decode()
    assert "WROTE" not in out and out.count("DENIED") == 5 and "WS-OK" in out, out
    assert r.result.outputs == {f"ok-{token}": b"y"}
    for d in ("/usr", "/etc", "/", "/usr/lib", "/tmp", "/var/tmp"):
        assert not Path(d, f"gh-{token}").exists()
        assert not Path(d, f"t-{token}").exists()


def test_workspace_is_fresh_and_removed(bwrap: SandboxBackend) -> None:
    base = bwrap._base
    before = {p.name for p in base.glob("ws-*")}  # (other processes' runs may be live)
    first = run(bwrap, ["sh", "-c", "ls -A; echo secret > left.txt; pwd"])
    assert first.result.stdout.data == b"/workspace\n"
    second = run(bwrap, ["sh", "-c", "ls -A"])
    assert second.result.stdout.data == b""  # nothing of the previous run
    assert {p.name for p in base.glob("ws-*")} <= before


def test_workspaces_of_dead_processes_are_swept(tmp_path: Path) -> None:
    # A Glasshouse process killed mid-run leaves its workspace; the next one removes it,
    # never a live process's.
    import subprocess
    import sys

    from glasshouse.backends import _workspace

    script = (
        "import sys; from pathlib import Path\n"
        "from glasshouse.backends._workspace import Workspace\n"
        "print(Workspace.create(Path(sys.argv[1]), 0, 0).path)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    dead = Path(out.stdout.strip())
    mine = _workspace.Workspace.create(tmp_path, os.getuid(), os.getgid())
    legacy = tmp_path / "ws-0123456789abcdef"
    legacy.mkdir()
    assert dead.is_dir()
    assert _workspace.sweep(tmp_path) == 1
    assert not dead.exists() and mine.path.is_dir() and legacy.is_dir()  # legacy: too young
    os.utime(legacy, (0, 0))
    assert _workspace.sweep(tmp_path) == 1 and not legacy.exists()
    mine.remove()


def test_inputs_in_outputs_back_and_nothing_else(any_sandbox: SandboxBackend) -> None:
    r = run(
        any_sandbox,
        ["sh", "-c", "mkdir -p out && tr a-z A-Z < data/in.txt > out/res.txt; echo x > other"],
        files={"data/in.txt": b"hello\n"},
        outputs=["out/res.txt", "missing.txt"],
    )
    assert r.result.exit_code == 0, r.result
    assert r.result.outputs == {"out/res.txt": b"HELLO\n"}
    assert "missing.txt: missing" in r.receipt.environment.sandbox.details["outputs"]


def test_outputs_never_follow_symlinks_or_block(bwrap: SandboxBackend) -> None:
    secret = Path("/etc/hostname").read_bytes()
    script = (
        "ln -s /etc/hostname link.txt; mkdir d; ln -s /etc d2; mkfifo fifo; "
        "head -c 5000 /dev/zero > big.bin; echo ok > fine.txt"
    )
    backend = SandboxBackend(output_cap=4096)
    r = run(
        backend,
        ["sh", "-c", script],
        outputs=["link.txt", "d2/hostname", "fifo", "big.bin", "fine.txt"],
    )
    assert r.result.outputs == {"fine.txt": b"ok\n"}
    assert secret not in b"".join(r.result.outputs.values())
    status = "\n".join(r.receipt.environment.sandbox.details["outputs"])
    assert "link.txt: a symlink" in status and "d2/hostname: a parent" in status
    assert "fifo: not a regular file" in status and "big.bin: too large" in status


# -- processes --------------------------------------------------------------------------
def test_host_processes_are_invisible(any_sandbox: SandboxBackend) -> None:
    code = (
        "import os\n"
        "pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
        "print(len(pids), max(pids))\n"
        "print(os.getppid() if os.getpid() != 1 else 0, os.getpid())\n"
    )
    r = run(any_sandbox, py(code))
    lines = r.result.stdout.data.decode().split("\n")
    count, biggest = map(int, lines[0].split())
    host_count = len([p for p in os.listdir("/proc") if p.isdigit()])
    assert count <= 4 < host_count  # init, the command (and a helper shell at most)
    assert biggest < 10
    assert os.getpid() > 10 or count <= 4


def test_pid_mapping_host_and_sandbox(bwrap: SandboxBackend) -> None:
    require_root()
    require_cgroups()
    handle = bwrap.start(ExecutionSpec(argv=["sleep", "30"]))
    try:
        bwrap.release(handle)
        pids: list[int] = []
        for _ in range(200):  # bounded: wait until the command exists
            pids = handle.cgroup.pids()  # type: ignore[union-attr]
            if any(_cmdline(p).startswith(b"sleep") for p in pids):
                break
            time.sleep(0.02)
        sleep_pid = next(p for p in pids if _cmdline(p).startswith(b"sleep"))
        status = Path(f"/proc/{sleep_pid}/status").read_text()
        nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid"))
        assert nspid == [str(sleep_pid), "2"]  # host pid, then pid 2 inside the sandbox
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid"))
        assert int(uid) != 0  # an unprivileged host uid
        cap_eff = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
        assert int(cap_eff, 16) == 0
    finally:
        bwrap.kill(handle, "test done")
        bwrap.cleanup(handle)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_no_process_survives_the_run(any_sandbox: SandboxBackend) -> None:
    marker = f"{secrets.randbelow(10**6) + 1000}.{secrets.randbelow(1000)}"
    script = (
        f"sleep {marker} & (setsid sleep {marker} &) ; "
        f"nohup sleep {marker} >/dev/null 2>&1 & echo started"
    )
    r = run(any_sandbox, ["sh", "-c", script])
    assert r.result.stdout.data == b"started\n"
    left = [p for p in os.listdir("/proc") if p.isdigit() and marker.encode() in _cmdline(int(p))]
    assert left == []


def test_identity_inside(bwrap: SandboxBackend) -> None:
    r = run(
        bwrap,
        ["sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; hostname"],
    )
    lines = r.result.stdout.data.decode().split()
    assert lines[0] == "1000"
    assert lines[lines.index("CapEff:") + 1] == "0000000000000000"
    assert lines[lines.index("NoNewPrivs:") + 1] == "1"
    assert lines[lines.index("Seccomp:") + 1] == "2"
    assert lines[-1] == "glasshouse"
    facts = r.receipt.environment.sandbox.details
    assert facts["uid"] == 1000 and facts["capabilities"] == "none"
    assert "net" in facts["namespaces"] and "user" in facts["namespaces"]
    assert r.receipt.execution.backend == "sandbox"
    assert r.receipt.execution.isolation == "namespaces"


# -- network ----------------------------------------------------------------------------
_CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(5)\n"
    "try:\n"
    "    s.connect(('127.0.0.1', int(sys.argv[1])))\n"
    "    s.sendall(b'hi'); print('REACHED', s.recv(8))\n"
    "except OSError as e:\n"
    "    print('BLOCKED', e.errno)\n"
)


def test_cannot_reach_host_loopback_service(
    any_sandbox: SandboxBackend, loopback_listener: int
) -> None:
    r = run(any_sandbox, [*py(_CONNECT), str(loopback_listener)])
    assert b"BLOCKED" in r.result.stdout.data, r.result
    assert r.receipt.environment.sandbox.network == "loopback"


def test_network_opt_in_reaches_host_loopback(
    any_sandbox: SandboxBackend, loopback_listener: int
) -> None:
    """The control for the test above: with network=True the same probe gets through."""
    r = run(any_sandbox, [*py(_CONNECT), str(loopback_listener)], network=True)
    assert b"REACHED b'hi'" in r.result.stdout.data, r.result
    assert r.receipt.environment.sandbox.network == "enabled"
    if any_sandbox.runtime == "bwrap":
        assert "net" not in r.receipt.environment.sandbox.details["namespaces"]


_NET_VIEW = (
    "def rows(p):\n"
    "    try:\n"
    "        return open(p).read().splitlines()\n"
    "    except OSError:\n"
    "        return []\n"
    "ifaces = [l.split(':')[0].strip() for l in rows('/proc/net/dev')[2:]]\n"
    "routes = rows('/proc/net/route')[1:]\n"
    "v6 = [l.split()[-1] for l in rows('/proc/net/if_inet6')]\n"
    "v6routes = [l for l in rows('/proc/net/ipv6_route') if not l.rstrip().endswith('lo')]\n"
    "print(repr((sorted(ifaces), len(routes), sorted(set(v6)), len(v6routes))))\n"
)


def test_only_loopback_interface_and_no_route(any_sandbox: SandboxBackend) -> None:
    host_ifaces = [
        line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]
    ]
    r = run(any_sandbox, py(_NET_VIEW))
    ifaces, routes, v6, v6routes = eval(r.result.stdout.data.decode())
    assert ifaces == ["lo"], ifaces
    assert routes == 0 and v6routes == 0
    assert set(v6) <= {"lo"}
    if set(host_ifaces) != {"lo"}:  # the probe can tell: the host has more
        assert sorted(host_ifaces) != ifaces


# -- seccomp ----------------------------------------------------------------------------
_SYSCALLS = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def call(name, nr, *args):\n"  # each probe in its own child: no state carries over
    "    pid = os.fork()\n"
    "    if pid:\n"
    "        os.waitpid(pid, 0)\n"
    "        return\n"
    "    rc = libc.syscall(nr, *args)\n"
    "    if rc == 0 and name.startswith('clone'):\n"
    "        os._exit(0)  # the raw clone's child\n"
    "    err = ctypes.get_errno()\n"
    "    if rc > 0 and name.startswith('clone'):\n"
    "        os.waitpid(rc, 0)\n"
    "    print(name, 'ok' if rc >= 0 else os.strerror(err), flush=True)\n"
    "    os._exit(0)\n"
    "call('unshare-user', 272, 0x10000000)\n"
    "call('ptrace-traceme', 101, 0, 0, 0, 0)\n"
    "call('bpf', 321, 0, 0, 0)\n"
    "call('keyctl', 250, 0, 0, 0)\n"
    "call('perf_event_open', 298, 0, 0, -1, -1, 0)\n"
    "call('userfaultfd', 323, 0)\n"
    "call('mount', 165, b'none', b'/tmp', b'tmpfs', 0, 0)\n"
    "call('clone-newnet', 56, 0x40000000 | 17, 0, 0, 0, 0)\n"
)


def _syscall_results(backend: SandboxBackend) -> dict[str, str]:
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers in this test are x86_64's")
    r = run(backend, py(_SYSCALLS))
    assert r.result.exit_code == 0, r.result
    return dict(line.split(" ", 1) for line in r.result.stdout.data.decode().splitlines())


def test_seccomp_denies_dangerous_syscalls(bwrap: SandboxBackend) -> None:
    results = _syscall_results(bwrap)
    assert results == dict.fromkeys(results, "Operation not permitted")
    assert len(results) == 8


def test_without_seccomp_the_probe_sees_the_difference() -> None:
    """Control: unshare(CLONE_NEWUSER) and PTRACE_TRACEME do succeed without the filter,
    so the test above really measures seccomp, not some other restriction."""
    _need(sandbox_mod.probe())
    results = _syscall_results(SandboxBackend(seccomp=False))
    assert results["unshare-user"] == "ok", results
    assert results["ptrace-traceme"] == "ok", results


def test_seccomp_program_matches_debian_binding() -> None:
    """Our ctypes binding emits exactly what python3-seccomp emits for the same rules."""
    from glasshouse.backends import _seccomp

    script = Path(__file__).with_name("seccomp_reference.py")
    try:
        out = subprocess.run(
            ["/usr/bin/python3", str(script)], capture_output=True, timeout=60, check=False
        )
    except OSError as exc:
        pytest.skip(f"/usr/bin/python3 unavailable: {exc}")
    if out.returncode == 3:
        pytest.skip("python3-seccomp is not installed for /usr/bin/python3")
    assert out.returncode == 0, out.stderr
    assert out.stdout == _seccomp.program().bpf


# -- resource exhaustion ----------------------------------------------------------------
def _while_running(backend: SandboxBackend, spec: ExecutionSpec, port: int) -> tuple[Run, int]:
    """Run ``spec``; meanwhile check the host still answers loopback echoes."""
    box: dict[str, Run] = {}
    t = threading.Thread(target=lambda: box.setdefault("run", Engine(backend).run(spec)))
    t.start()
    answered = 0
    time.sleep(0.5)
    while t.is_alive() and answered < 20:
        assert echo_roundtrip(port) == b"ping"
        answered += 1
        time.sleep(0.1)
    t.join(120)
    assert not t.is_alive()
    return box["run"], answered


_FORK_BOMB = (
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
)


def _limited_backend(runtime: str, **options: object) -> SandboxBackend:
    require_root()
    require_cgroups()
    _need(sandbox_mod.probe() if runtime == "bwrap" else gvisor_mod.probe())
    return SandboxBackend(runtime=runtime, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", ["bwrap", "gvisor"])
def test_fork_bomb_is_contained(runtime: str, loopback_listener: int) -> None:
    backend = _limited_backend(runtime, cpu_cores=0.5)
    spec = ExecutionSpec(argv=py(_FORK_BOMB), limits=Limits(pids=32), timeout=4)
    r, answered = _while_running(backend, spec, loopback_listener)
    assert answered >= 1  # the host served while the bomb ran
    assert r.result.timed_out
    if runtime == "bwrap":  # (gVisor enforces the limit in its own kernel: RLIMIT_NPROC)
        assert r.result.details.get("pids_limit_hit") is True
    assert echo_roundtrip(loopback_listener) == b"ping"
    left = [p for p in os.listdir("/proc") if p.isdigit() and b"os.fork" in _cmdline(int(p))]
    assert left == []


@pytest.mark.parametrize("runtime", ["bwrap", "gvisor"])
def test_memory_hog_is_killed(runtime: str, loopback_listener: int) -> None:
    backend = _limited_backend(runtime)
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n"
    spec = ExecutionSpec(argv=py(hog), limits=Limits(memory_bytes=96 << 20), timeout=60)
    r, _ = _while_running(backend, spec, loopback_listener)
    assert r.result.oom_killed and not r.result.timed_out
    assert r.result.exit_code != 0
    assert echo_roundtrip(loopback_listener) == b"ping"


# -- errors and receipts ----------------------------------------------------------------
def test_command_not_found_is_127(bwrap: SandboxBackend) -> None:
    r = run(bwrap, ["no-such-command-here"])
    assert r.result.exit_code == 127 and "not found in the sandbox" in (r.result.error or "")
    r = run(bwrap, ["/root/anything"])  # exists or not on the host, it is not in the sandbox
    assert r.result.exit_code == 127


def test_sandbox_setup_failure_is_reported(bwrap: SandboxBackend) -> None:
    r = run(bwrap, ["true"], cwd="no/such/dir")
    assert r.result.error and r.result.error.startswith("sandbox setup failed: bwrap:")
    assert r.result.shell_exit_code() == 125
    assert r.receipt.outcome.error == r.result.error


def test_exit_128_plus_n_is_not_a_signal(any_sandbox: SandboxBackend) -> None:
    """glasshouse-init tells ``exit 137`` from ``kill -9``: bwrap/runsc alone could not."""
    r = run(any_sandbox, ["sh", "-c", "exit 137"])
    assert r.result.exit_code == 137 and r.result.signal is None
    r = run(any_sandbox, ["sh", "-c", "kill -SEGV $$"])
    assert r.result.signal == 11 and r.result.exit_code is None


def test_gvisor_receipt_says_what_host_observation_sees(gvisor: GVisorBackend) -> None:
    r = run(gvisor, ["true"])
    assert r.receipt.execution.backend == "gvisor"
    assert r.receipt.execution.isolation == "gvisor"
    assert "sentry" in r.receipt.environment.sandbox.details["observation"]
    assert "sentry" in str(r.receipt.execution.details["observation_note"])


def test_runtime_option_selects_gvisor() -> None:
    b = SandboxBackend(runtime="gvisor")
    assert (b.name, b.isolation) == ("gvisor", "gvisor")
    with pytest.raises(Exception, match="unknown sandbox runtime"):
        SandboxBackend(runtime="docker")


def test_prepared_run_is_single_use(bwrap: SandboxBackend) -> None:
    prepared = bwrap.prepare_run()
    handle = bwrap.start(ExecutionSpec(argv=["true"]), run=prepared)
    bwrap.release(handle)
    assert bwrap.wait(handle).exit_code == 0
    bwrap.cleanup(handle)
    with pytest.raises(Exception, match="only once"):
        bwrap.start(ExecutionSpec(argv=["true"]), run=prepared)
    assert not prepared.workspace.path.exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_without_init_the_sandbox_still_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No compiler and an empty cache: bwrap's own PID 1 is used, and the receipt says a
    signal death may read as exit 128+N."""
    _need(sandbox_mod.probe())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bwrap").symlink_to(shutil.which("bwrap") or "/usr/bin/bwrap")
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("GLASSHOUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    backend = SandboxBackend()
    backend.prepare()
    assert backend._init is None and "no C compiler" in backend._init_reason
    r = run(backend, ["sh", "-c", "echo hi; kill -9 $$"], env={"PATH": "/usr/bin:/bin"})
    assert r.result.stdout.data == b"hi\n"
    assert r.result.exit_code == 137 and r.result.signal is None
    assert "may mean the command was killed" in str(r.result.details["exit_status_note"])


def test_probe_says_no_where_user_namespaces_are_refused(tmp_path: Path) -> None:
    """In a chroot the kernel refuses CLONE_NEWUSER whatever the sysctls say; the probe must
    try it (fresh-check's chroot once made every sandbox test fail instead of skip)."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    from glasshouse.backends.sandbox import _userns_allowed

    ok, why = _userns_allowed()
    if not ok:  # the control half: here, outside a chroot, it must work
        pytest.skip(f"user namespaces are already refused here: {why}")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            os.chroot(tmp_path)
            ok, why = _userns_allowed()
            os.write(w, f"{ok}|{why}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    ok, _, why = os.read(r, 4096).decode().partition("|")
    os.close(r)
    assert ok == "False" and "cannot create a user namespace" in why
