"""The microvm backend with real VMs (marked ``vm``): skipped, with the probed reason, where
this host cannot boot a guest. Most cases go through snapshot restore (one cold boot builds
the snapshot, cached on disk); QEMU gets one cold boot."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import until

from glasshouse.backends import create
from glasshouse.core import procfs
from glasshouse.core.execution import ExecutionSpec, Limits
from glasshouse.engine import Engine

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def backend():
    from glasshouse.backends import microvm

    ok, why = microvm.probe()
    if not ok:
        pytest.skip(f"this host cannot boot microVM guests: {why}")
    b = create("microvm")
    b.prepare()
    return b


def _py(backend, code: str, **kw):
    return Engine(backend).run(ExecutionSpec(argv=["python3", "-c", code], **kw))


def _vmm_children(parent: int | None = None) -> list[int]:
    """VMM processes (firecracker or qemu) whose parent is ``parent`` (default: us), once
    the background teardown of the VMs killed so far has finished (``close()`` waits)."""
    from glasshouse.backends.microvm import _vm

    assert _vm.REAPER.drain(30)
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or procfs.ppid(int(entry.name)) != parent:
            continue
        try:
            comm = (entry / "comm").read_text()
        except OSError:
            continue
        if "firecracker" in comm or "qemu" in comm or comm.startswith("fc_"):
            found.append(int(entry.name))
    return found


def test_print_from_snapshot_and_receipt_facts(backend) -> None:
    run = _py(backend, "print(2+2)", timeout=30)
    r = run.result
    assert r.exit_code == 0, r.error
    assert r.stdout.data == b"4\n"
    rec = run.receipt
    assert rec.execution.backend == "firecracker"
    assert rec.execution.isolation == "vm"
    details = r.details
    assert details["vm_source"].startswith("snapshot:")
    assert details["guest_kernel_digest"].startswith("sha256:")
    assert details["guest_rootfs_digest"].startswith("sha256:")
    assert details["vmm_pid"] == r.root_pid and r.root_pid is not None
    assert details["guest_reported"]["crng_reseeded"] is True
    assert r.network == "disabled"


def test_vmm_runs_in_a_cgroup_of_its_own(backend) -> None:
    from glasshouse.backends import _cgroup

    ok, why = _cgroup.available()
    if not ok:
        pytest.skip(f"no cgroups here: {why}")
    handle = backend.start(ExecutionSpec(argv=["python3", "-c", "print(1)"], timeout=30))
    try:
        membership = Path(f"/proc/{handle.pid}/cgroup").read_text()
        assert "/glasshouse/vm-" in membership, membership
        backend.release(handle)
        r = backend.wait(handle)
    finally:
        backend.cleanup(handle)
    assert r.stdout.data == b"1\n", r.error
    assert "memory <= 640 MiB" in r.details["vmm_cgroup"], r.details["vmm_cgroup"]
    assert "pids <= 64" in r.details["vmm_cgroup"]
    assert r.details["vmm_cpu_ms"] > 0 and r.details["vmm_peak_memory_kb"] > 0


def test_restored_clones_get_fresh_entropy_and_clock(backend) -> None:
    code = (
        "import os, random, time, uuid;"
        "print(os.urandom(16).hex(), random.getrandbits(64), uuid.uuid4(), time.time())"
    )
    outs = [_py(backend, code, timeout=30).result for _ in range(2)]
    for r in outs:
        assert r.exit_code == 0, r.error
    a, b = (r.stdout.data.split() for r in outs)
    assert a[0] != b[0], "two restores produced the same kernel random bytes"
    assert a[1] != b[1], "two restores produced the same Python random state"
    assert a[2] != b[2]
    for fields in (a, b):
        assert abs(float(fields[3]) - time.time()) < 120, "guest clock was not set on restore"


def test_shell_command_runs_in_guest(backend) -> None:
    run = Engine(backend).run(
        ExecutionSpec(
            argv=["sh", "-c", "cat in.txt; echo out > result.txt; uname -n"],
            files={"in.txt": b"from-host\n"},
            outputs=["result.txt"],
            timeout=60,
        )
    )
    r = run.result
    assert r.exit_code == 0, r.error
    assert r.stdout.data == b"from-host\nglasshouse\n"
    assert r.outputs == {"result.txt": b"out\n"}
    assert r.details["guest_mode"] == "exec"


def test_timeout_kills_the_vm(backend) -> None:
    run = _py(backend, "import time; time.sleep(60)", timeout=1)
    assert run.result.timed_out
    assert run.result.shell_exit_code() == 124
    assert run.result.signal == 9
    assert _vmm_children() == []


def test_guest_that_never_answers(backend) -> None:
    # PID 1 exits without a result: the guest kernel panics and the VMM exits.
    run = _py(backend, "import os; os._exit(0)", timeout=60)
    r = run.result
    assert r.exit_code is None and not r.timed_out
    assert "without sending a result" in (r.error or ""), r.error
    assert run.receipt.outcome.error == r.error


def _forge(payload: str, then: str = "time.sleep(30)") -> str:
    # User code runs inside the guest init's interpreter: it can walk up to the init's frame
    # and write to the vsock connection the result would go to.
    return (
        "import sys, time\n"
        "f = sys._getframe()\n"
        "while f is not None and 'transport' not in f.f_locals:\n"
        "    f = f.f_back\n"
        "conn = f.f_locals['transport']._conn\n"
        f"conn.sendall({payload})\n"
        "conn.shutdown(1)\n"
        f"{then}\n"
    )


@pytest.mark.parametrize(
    ("payload", "then", "message"),
    [
        ("b'GH1' + (5).to_bytes(4, 'big') + b'hello'", "time.sleep(30)", "not UTF-8 JSON"),
        ("b'GH1' + (1 << 31).to_bytes(4, 'big')", "time.sleep(30)", "exceeds"),
        ("b'XXXXXXX'", "time.sleep(30)", "magic"),
        # (the pause lets the guest's kernel worker move the bytes out before PID 1 dies:
        # a guest that dies at once may lose them, which the previous test covers)
        (
            "b'GH1' + (100).to_bytes(4, 'big') + b'{}'",
            "time.sleep(1); os._exit(0)",
            "closed the connection",
        ),
        ("b'GH1' + (2).to_bytes(4, 'big') + b'{}'", "time.sleep(30)", "version"),
    ],
)
def test_guest_garbage_is_refused(backend, payload: str, then: str, message: str) -> None:
    run = _py(backend, "import os\n" + _forge(payload, then), timeout=30)
    r = run.result
    assert r.exit_code is None and not r.timed_out
    assert message in (r.error or ""), r.error
    assert _vmm_children() == []


def test_guest_stalling_mid_frame_times_out(backend) -> None:
    # Half a frame, then nothing: the host waits only until the run's deadline.
    run = _py(backend, _forge("b'GH1' + (100).to_bytes(4, 'big') + b'{}'"), timeout=2)
    assert run.result.timed_out and run.result.signal == 9
    assert _vmm_children() == []


def test_output_flood_is_capped(backend) -> None:
    # 3 MiB: every page the guest writes goes through its (on kvm_pvm, emulated) kernel.
    n = 3 << 20
    run = _py(backend, f"import sys; sys.stdout.write('x' * {n})", limits=Limits(output_bytes=1000))
    out = run.result.stdout
    assert run.result.exit_code == 0, run.result.error
    assert out.truncated and out.size == n and out.data == b"x" * 1000
    assert out.sha256 == hashlib.sha256(b"x" * n).hexdigest()


def test_isolation_host_files_and_network(backend, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("do not leak")
    code = (
        "import os, socket\n"
        f"print(os.path.exists({str(secret)!r}), os.path.exists('/root/.bashrc'))\n"
        "print(sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else [])\n"
        "try:\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "    print('inet')\n"
        "except OSError as e:\n"
        "    print('no-inet', e.errno)\n"
    )
    r = _py(backend, code, timeout=30).result
    assert r.exit_code == 0, r.error
    lines = r.stdout.data.decode().splitlines()
    assert lines[0] == "False False"
    assert lines[1] in ("[]", "['lo']")
    assert lines[2].startswith("no-inet")
    asked = _py(backend, "print(1)", network=True).result
    assert asked.error and "network" in asked.error


def test_concurrent_restores(backend) -> None:
    results = []

    def one(i: int) -> None:
        results.append(_py(backend, f"print({i} * 2)", timeout=60).result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.stdout.data for r in results) == [b"0\n", b"2\n", b"4\n"]


def test_twenty_runs_leave_nothing_behind(backend) -> None:
    from glasshouse.backends import _owner
    from glasshouse.backends.microvm import _vm

    # Other processes on this host may run VMs meanwhile: only what ours leave counts.
    def ours(owner: str) -> bool:
        return owner == _owner.me()

    before_net = set(os.listdir("/sys/class/net"))
    before_dirs = _owned_dirs(_vm.RUN_ROOT, ours)
    before_jails = _jails(ours)
    groups: list[Path] = []
    for i in range(20):
        handle = backend.start(ExecutionSpec(argv=["python3", "-c", f"print({i})"], timeout=30))
        try:
            backend.release(handle)
            r = backend.wait(handle)
        finally:
            backend.cleanup(handle)
        assert r.stdout.data == f"{i}\n".encode(), r.error
        if handle.cgroup is not None:
            groups += handle.cgroup.dirs.values()
    backend.close()  # waits for the background teardown of the 20 VMs
    assert _vmm_children() == []
    assert _owned_dirs(_vm.RUN_ROOT, ours) <= before_dirs  # no sockets or disk links left
    assert set(os.listdir("/sys/class/net")) == before_net  # no tap devices
    assert _jails(ours) <= before_jails  # no jail (chroot, hard links, /dev/kvm node) left
    assert [str(d) for d in groups if d.exists()] == []  # no VMM cgroup left


def _owned_dirs(root: Path, owned: Callable[[str], bool], pattern: str = "*") -> set[str]:
    """VM directories under ``root`` whose owner record passes ``owned``: other processes on
    this host may run VMs of their own meanwhile."""
    from glasshouse.backends.microvm.firecracker import OWNER_NAME

    found = set()
    for path in root.glob(pattern):
        try:
            owner = (path / OWNER_NAME).read_text().strip()
        except OSError:
            owner = ""
        if owned(owner):
            found.add(path.name)
    return found


def _jails(owned: Callable[[str], bool]) -> set[str]:
    from glasshouse.backends.microvm.firecracker import JAIL_BASE

    return _owned_dirs(JAIL_BASE / "firecracker", owned, "gh-*")


def _has_procs(group: Path) -> bool:
    try:
        return bool((group / "cgroup.procs").read_text().strip())
    except OSError:
        return True  # removed meanwhile: not left behind


def _vm_cgroups() -> set[str]:
    from glasshouse.backends import _cgroup

    lay = _cgroup.layout()
    roots = ([lay.v2] if lay.v2 else []) + list(lay.v1.values())
    return {str(p) for root in roots for p in (root / "glasshouse").glob("vm-*")}


@pytest.mark.slow
def test_qemu_cold_boot_runs_python() -> None:
    from glasshouse.backends.microvm import probe, qemu

    ok, why = probe()
    if not ok or qemu.qemu_binary() is None:
        pytest.skip(f"cannot boot guests here: {why}")
    b = create("qemu", boot_timeout=300)
    run = Engine(b).run(ExecutionSpec(argv=["python3", "-c", "print(2+2)"], timeout=60))
    r = run.result
    assert r.exit_code == 0, r.error
    assert r.stdout.data == b"4\n"
    assert run.receipt.execution.backend == "qemu"
    assert r.details["vm_source"] == "cold"
    assert _vmm_children() == []


@pytest.mark.slow
def test_old_snapshot_is_refreshed_in_the_background(backend) -> None:
    # On kvm_pvm a restored guest pays for the snapshot's age (its kernel catches up the
    # clock second by second), so an old snapshot is rebuilt while runs keep being served.
    b = create("microvm", snapshot_max_age_s=0.001)
    b.prepare()
    first = _py(b, "print(1)", timeout=30).result
    assert first.stdout.data == b"1\n", first.error
    refresh = b._refresh
    assert refresh is not None
    refresh.join(900)
    b.snapshot_max_age_s = None  # no further rebuild left running after the test
    second = _py(b, "print(2)", timeout=30).result
    assert second.stdout.data == b"2\n", second.error
    assert second.details["vm_source"] != first.details["vm_source"]
    assert _vmm_children() == []  # no snapshot build left running


def test_vmms_orphaned_by_a_dead_glasshouse_are_swept(backend, tmp_path: Path) -> None:
    # A Glasshouse process that dies without cleanup (SIGKILL, crash) leaves its VMM running
    # and its jail behind; the next prepare() sweeps both, never a VMM whose creator lives.
    import subprocess
    import sys

    from glasshouse.backends.microvm.firecracker import sweep_orphans

    script = (
        "import os\n"
        "from pathlib import Path\n"
        "from glasshouse.backends.microvm import images\n"
        "from glasshouse.backends.microvm.firecracker import FirecrackerVM\n"
        "im = images.GuestImages.load()\n"
        "jailer = im.jailer if os.geteuid() == 0 else None\n"
        "vm = FirecrackerVM(im.firecracker, Path(os.environ['RUN']), im.rootfs, jailer)\n"
        "vm.spawn()\n"
        "print(vm.pid, vm.run_dir, flush=True)\n"
        "os._exit(0)\n"
    )
    run_dir = tmp_path / "vm"
    run_dir.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RUN": str(run_dir)},
        check=True,
    ).stdout.split()
    pid, vm_dir = int(out[0]), Path(out[1])
    assert Path(f"/proc/{pid}").exists()  # orphaned, still running
    if vm_dir == run_dir:  # unjailed: the sweep only looks under its own run root
        pytest.skip("sweep test needs the jailer (root)")
    live = create("microvm")
    live.prepare()
    handle = live.start(ExecutionSpec(argv=["python3", "-c", "print(1)"]))
    try:
        sweep_orphans(min_age_s=0)
        assert handle.pid is not None and Path(f"/proc/{handle.pid}").exists()  # ours: kept
    finally:
        live.kill(handle)
        live.cleanup(handle)
    until(lambda: not procfs.running(pid), what=f"the orphan VMM {pid} killed")
    if procfs.ppid(pid) == os.getpid():  # we are a child subreaper (the process backend
        os.waitpid(pid, 0)  # without cgroups makes us one): the orphan's zombie is ours
    # Otherwise its reaper (pid 1: here a supervisor that reaps every few seconds) does.
    until(lambda: not Path(f"/proc/{pid}").exists(), timeout=60, what=f"VMM {pid} reaped")
    assert not vm_dir.exists()


# ----- the warm pool: VMs restored and primed ahead of their request ------------------------


def _pooled(backend, code: str, **kw):
    from glasshouse.core.execution import ExecutionResult

    slot = backend.prewarm()
    spec = ExecutionSpec(argv=["python3", "-c", code], **kw)
    handle = backend.start_prewarmed(slot, spec)
    try:
        backend.release(handle)
        result: ExecutionResult = backend.wait(handle)
    finally:
        backend.cleanup(handle)
    return result


def test_prewarmed_vm_runs_one_request_with_its_own_entropy(backend) -> None:
    code = (
        "import os, random, time; print(os.urandom(16).hex(), random.getrandbits(64), time.time())"
    )
    a, b = (_pooled(backend, code, timeout=30) for _ in range(2))
    for r in (a, b):
        assert r.exit_code == 0, r.error
        assert r.details["prewarmed"] is True
        guest = r.details["guest_reported"]
        assert guest["prime"]["crng_reseeded"] is True  # at prewarm, not at the request
        assert "crng_reseeded" not in guest
        assert abs(float(r.stdout.data.split()[2]) - time.time()) < 120
    fa, fb = a.stdout.data.split(), b.stdout.data.split()
    assert fa[0] != fb[0], "two prewarmed VMs produced the same kernel random bytes"
    assert fa[1] != fb[1], "two prewarmed VMs produced the same Python random state"
    assert _vmm_children() == []


def test_prewarmed_slot_serves_exactly_one_run(backend) -> None:
    from glasshouse.core.execution import BackendError

    slot = backend.prewarm()
    spec = ExecutionSpec(argv=["python3", "-c", "print(1)"], timeout=30)
    handle = backend.start_prewarmed(slot, spec)
    backend.release(handle)
    assert backend.wait(handle).stdout.data == b"1\n"
    backend.cleanup(handle)
    with pytest.raises(BackendError, match="only once"):
        backend.start_prewarmed(slot, spec)
    # a slot that cannot serve a spec is discarded, never left running
    other = backend.prewarm()
    with pytest.raises(BackendError, match="network"):
        backend.start_prewarmed(other, ExecutionSpec(argv=["true"], network=True))
    unused = backend.prewarm()
    backend.discard(unused)
    backend.discard(unused)
    assert _vmm_children() == []


def test_pooled_vm_through_the_server_pool(backend) -> None:
    # The server's WarmPool drives the same Prewarmable methods: a hit runs in a primed VM.
    from glasshouse.server._pool import PooledBackend, WarmPool

    pool = WarmPool(backend, size=1, max_age_s=60)
    pool.start()
    try:
        until(pool.ready, what="a primed VM in the pool")
        assert pool.ready() == 1, pool.stats()
        run = Engine(PooledBackend(backend, pool)).run(
            ExecutionSpec(argv=["python3", "-c", "print(6*7)"], timeout=30)
        )
    finally:
        pool.close()
    assert run.result.stdout.data == b"42\n", run.result.error
    assert run.result.details["prewarmed"] is True
    assert pool.stats()["hits"] == 1
    assert _vmm_children() == []


# ----- guest events (--profile guest/combined) ----------------------------------------------


def test_guest_profile_records_what_the_code_asked_the_guest(backend) -> None:
    code = (
        "import os, socket, subprocess\n"
        "open('/work/out.txt', 'w').write('x')\n"
        "open('/etc/hostname').read()\n"
        "os.rename('/work/out.txt', '/work/moved.txt')\n"
        "os.remove('/work/moved.txt')\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect('/tmp/nobody-listens')\nexcept OSError:\n    pass\n"
        "try:\n    subprocess.run(['/nonexistent-tool', '-v'])\nexcept OSError:\n    pass\n"
        "for _ in range(1100):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"
        "print('done')\n"
    )
    run = Engine(backend, profile="guest").run(
        ExecutionSpec(argv=["python3", "-c", code], timeout=60)
    )
    assert run.result.stdout.data == b"done\n", run.result.error
    rec = run.receipt
    assert rec.provenance == "guest"
    fs = rec.filesystem
    assert "/work/out.txt" in fs.writes and "/etc/hostname" in fs.reads
    assert [(r.src, r.dst) for r in fs.renames] == [("/work/out.txt", "/work/moved.txt")]
    assert fs.deletes == ["/work/moved.txt"]
    assert [(a.dst, a.family) for a in rec.network.attempts] == [("/tmp/nobody-listens", "unix")]
    argvs = [p.argv for p in rec.process_tree]
    assert argvs[0][:2] == ["python3", "-c"] and ["/nonexistent-tool", "-v"] in argvs
    report = next(o for o in rec.observation.observers if o.name == "guest-audit")
    # > 1100 events: two intermediate frames (512 each) arrived before the result
    assert report.events > 1100 and report.events_lost == 0
    assert "syscalls" in rec.observation.missing


def test_guest_events_past_the_cap_are_counted_lost(backend, monkeypatch) -> None:
    from glasshouse.backends.microvm import _request

    monkeypatch.setattr(_request, "EVENTS_CAP", 600)
    code = "import os\nfor _ in range(1000):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))"
    run = Engine(backend, profile="guest").run(
        ExecutionSpec(argv=["python3", "-c", code], timeout=60)
    )
    assert run.result.exit_code == 0, run.result.error
    report = next(o for o in run.receipt.observation.observers if o.name == "guest-audit")
    assert report.events >= 1000 and report.events_lost >= 400
    assert run.receipt.process_tree[0].argv[:2] == ["python3", "-c"]  # never dropped


def test_host_profile_asks_the_guest_for_nothing(backend) -> None:
    run = _py(backend, "print(1)", timeout=30)
    assert run.result.guest_observation is None
    exec_run = Engine(backend, profile="guest").run(
        ExecutionSpec(argv=["sh", "-c", "echo hi > /work/f"], timeout=60)
    )
    rec = exec_run.receipt
    assert exec_run.result.exit_code == 0, exec_run.result.error
    assert rec.process_tree[0].argv == ["sh", "-c", "echo hi > /work/f"]
    assert rec.process_tree[0].pid > 1 and rec.process_tree[0].exit_code == 0
    assert "guest records its exec and exit only" in rec.observation.missing["filesystem"]


def test_cli_run_leaves_no_vm_behind(backend, tmp_path: Path) -> None:
    # The CLI exits with os._exit right after the receipt: the VM's background teardown
    # (reaping, jail and cgroup removal) must be finished by then.
    import subprocess
    import sys

    from glasshouse.backends import _owner

    before = _jails(lambda owner: True)
    groups = _vm_cgroups()
    cli = [sys.executable, "-m", "glasshouse.cli", "run", "-q", "-b", "microvm", "-p", "disabled"]
    out = subprocess.run(
        [*cli, "--", "python3", "-c", "print(6*7)"],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert _jails(lambda owner: not _owner.alive(owner)) <= before  # none left by the dead CLI
    leaked = {g for g in _vm_cgroups() - groups if not _has_procs(Path(g))}
    assert leaked == set()  # other processes' groups hold their live VMMs
    assert _vmm_children(parent=1) == []  # no VMM orphaned to init


# ----- limits inside the guest -------------------------------------------------------------

_CHUNKS = """
chunks = []
try:
    while True:
        chunks.append(bytearray(16 << 20))
finally:
    print(len(chunks), "chunks", flush=True)
"""


def test_memory_limit_ends_an_in_process_run_with_oom(backend) -> None:
    # 16 MiB at a time until the limit: the fourth does not fit in 64 MiB. Prompt (the
    # pages come from the heap the snapshot pre-faulted) and the VM answers.
    run = _py(backend, _CHUNKS, timeout=120, limits=Limits(memory_bytes=64 << 20))
    r = run.result
    assert not r.timed_out and r.exit_code == 1, r.error
    assert r.stdout.data == b"3 chunks\n" and b"MemoryError" in r.stderr.data
    assert r.oom_killed and r.details["guest_reported"]["steps_ms"]
    assert r.error == "memory limit exceeded (oom): " + r.details["oom"]
    assert r.details["oom"] == "MemoryError: the run's memory limit (64 MiB) was reached"
    assert run.receipt.outcome.error == r.error


def test_a_limit_above_the_guests_memory_ends_at_the_guests_memory(backend) -> None:
    # The server's default (512 MiB) is more than an in-process run can get in the VM: the
    # run stops at what the guest gives it, still promptly, and says so.
    r = _py(backend, _CHUNKS, timeout=120, limits=Limits(memory_bytes=512 << 20)).result
    assert not r.timed_out and r.exit_code == 1, r.error
    assert r.oom_killed and b"MemoryError" in r.stderr.data
    assert r.details["oom"].startswith("MemoryError: the guest's memory for this run")
    chunks = int(r.stdout.data.split()[0])
    assert 8 <= chunks < 32  # a 256 MiB heap and a little: more than 128 MiB, less than 512


def test_threads_start_under_the_memory_cap(backend) -> None:
    # The cap is address space (RLIMIT_DATA): thread stacks count whole, and it keeps room.
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(8) as ex:\n"
        "    print(sum(ex.map(lambda x: x * x, range(100))))\n"
    )
    r = _py(backend, code, timeout=120, limits=Limits(memory_bytes=64 << 20)).result
    assert r.exit_code == 0, (r.error, r.stderr.data)
    assert r.stdout.data == b"328350\n"


_FORKS = """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(600)  # each child holds its place in the count
        n += 1
except BlockingIOError:
    print("forks:", n, flush=True)
    raise
"""


@pytest.mark.parametrize(
    ("argv", "stopped"),
    [
        (["python3", "-c", _FORKS], b"forks: 4\n"),  # the init's own interpreter forks
        (["sh", "-c", "i=0; while :; do sleep 600 & i=$((i+1)); echo $i; done"], b"1\n2\n3\n4\n"),
    ],
    ids=["inprocess", "exec"],
)
def test_pids_limit_stops_a_fork_bomb(backend, argv: list[str], stopped: bytes) -> None:
    # Five processes in all: the run's own and four children; the fifth fork fails.
    r = Engine(backend).run(ExecutionSpec(argv=argv, timeout=240, limits=Limits(pids=5))).result
    assert not r.timed_out and r.exit_code not in (None, 0), r.error
    assert r.stdout.data == stopped
    assert b"BlockingIOError" in r.stderr.data or b"fork" in r.stderr.data.lower()


_FILL = """
import os
open("before.txt", "wb").write(b"a" * 300_000)
try:
    with open("big", "wb") as f:
        for _ in range(64):
            f.write(b"b" * 65536)
    print("no error")
except OSError as exc:
    print("errno", exc.errno)
print(open("before.txt", "rb").read() == b"a" * 300_000)
"""


def test_disk_limit_gives_enospc_in_the_guest(backend) -> None:
    spec = ExecutionSpec(
        argv=["python3", "-c", _FILL],
        timeout=120,
        limits=Limits(disk_bytes=1 << 20),
        outputs=("before.txt",),
    )
    run = Engine(backend).run(spec)
    r = run.result
    assert r.stdout.data == b"errno 28\nTrue\n", (r.error, r.stderr.data)
    assert r.outputs["before.txt"] == b"a" * 300_000
    assert "1048576 bytes; writes past it get ENOSPC" in r.details["disk_limit"]
    assert "full after the run" in r.details["disk_limit"]
    details = run.receipt.execution.details
    assert details["disk_limit"] == r.details["disk_limit"]


def test_a_fork_in_python_code_does_not_answer_for_the_init(backend) -> None:
    # The child of os.fork() ends with the user's code; it must not go on as the init and
    # answer the host before the parent is done.
    code = (
        "import os\npid = os.fork()\nprint('child' if pid == 0 else 'parent', flush=True)\n"
        "if pid:\n    os.waitpid(pid, 0)\n    print('parent done', flush=True)\n"
    )
    r = _py(backend, code, timeout=240).result
    assert r.exit_code == 0, (r.error, r.stderr.data)
    assert sorted(r.stdout.data.splitlines()) == [b"child", b"parent", b"parent done"]


# ----- output streamed out of the guest ----------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["python3", "-c", "import time\nprint('first', flush=True)\ntime.sleep(600)"],
        ["sh", "-c", "echo first; exec sleep 600"],
    ],
    ids=["inprocess", "exec"],
)
def test_output_streams_out_while_the_command_runs(backend, argv: list[str]) -> None:
    # The command prints, then blocks for good: only its first chunk, seen by the sink while
    # it runs, can end this run (the sink kills it; the deadline is far away).
    seen: list[bytes] = []
    handles: list = []

    def sink(data: bytes) -> None:
        seen.append(data)
        backend.kill(handles[0], "the test saw the first chunk")

    handle = backend.start(ExecutionSpec(argv=argv, timeout=300), sink, None)
    handles.append(handle)
    try:
        backend.release(handle)
        r = backend.wait(handle)
    finally:
        backend.cleanup(handle)
    assert seen == [b"first\n"]
    assert r.error == "killed: the test saw the first chunk" and not r.timed_out
    assert r.stdout.data == b"first\n"  # the output up to the kill is kept
    assert r.stdout.sha256 == hashlib.sha256(b"first\n").hexdigest()


def test_a_timed_out_run_keeps_its_output(backend) -> None:
    code = "import sys, time\nprint('out', flush=True)\nprint('err', file=sys.stderr)\n"
    code += "time.sleep(600)"
    run = _py(backend, code, timeout=20)
    r = run.result
    assert r.timed_out and r.signal == 9
    assert (r.stdout.data, r.stderr.data) == (b"out\n", b"err\n")
    assert run.receipt.artifacts.stdout_hash == hashlib.sha256(b"out\n").hexdigest()
