"""The receipt's coverage statement against real runs: each condition produced for real where
this host can (a list cap with real eBPF, profile disabled, gVisor and microVM blind spots,
a stalled ring-buffer consumer, a reader that never drained, processes outliving the
observation, real io_uring calls), and the policy rule that requires complete coverage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from _support import ebpf_observer, until

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine

PY = os.path.realpath(sys.executable)
#: io_uring_setup(8, &params) then io_uring_enter(fd, 0, 0, 0, NULL, 0), through libc
IO_URING = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)
print(fd, ctypes.get_errno())
if fd >= 0:
    libc.syscall(426, fd, 0, 0, 0, None, 0)
    os.close(fd)
"""
REQUIRE_COMPLETE = """\
rules:
  - id: complete-observation
    description: the receipt must be able to prove an absence
    match: {coverage: {complete: false}}
"""


@pytest.fixture(scope="module")
def observer():
    with ebpf_observer() as obs:
        yield obs


def _backend_or_skip(name: str):
    from glasshouse.backends import sandbox

    ok, why = sandbox.probe_gvisor() if name == "gvisor" else sandbox.probe()
    if not ok:
        pytest.skip(f"{name} unavailable: {why}")
    return create(name)


def _run(backend, observers, argv, *, profile="host", list_cap=10_000, **spec) -> dict[str, Any]:
    from glasshouse.receipt.model import Receipt

    engine = Engine(backend, observers=observers, profile=profile, list_cap=list_cap)
    run = engine.run(ExecutionSpec(argv=argv, timeout=60, **spec))
    assert run.result.error is None, run.result.error
    Receipt.model_validate(run.receipt_data)
    return run.receipt_data


def _coverage(data: dict[str, Any]) -> dict[str, Any]:
    return data["observation"]["coverage"]


def _reasons(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["code"]: r for r in _coverage(data)["reasons"]}


def _gh(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


# -- eBPF on the process backend ---------------------------------------------------------------

WRITE_THREE = "for n in 'abc': open(n, 'w').close()"


@pytest.mark.root
@pytest.mark.bpf
def test_a_plain_run_is_complete(observer, tmp_path: Path) -> None:
    data = _run(create("process"), [observer], [PY, "-c", WRITE_THREE], cwd=str(tmp_path))
    statement = {k: _coverage(data)[k] for k in ("status", "complete", "reasons")}
    assert statement == {"status": "complete", "complete": True, "reasons": []}
    assert _coverage(data)["attached"]["before_start"] is True


@pytest.mark.root
@pytest.mark.bpf
def test_a_list_cap_of_one_is_incomplete(observer, tmp_path: Path) -> None:
    data = _run(
        create("process"), [observer], [PY, "-c", WRITE_THREE], cwd=str(tmp_path), list_cap=1
    )
    assert _coverage(data)["status"] == "incomplete"
    capped = _reasons(data)["list_capped"]
    omitted = data["observation"]["omitted"]
    assert capped["detail"] == omitted and capped["count"] == sum(omitted.values())
    assert omitted["filesystem.writes"] >= 2 and len(data["filesystem"]["writes"]) == 1
    assert "filesystem" in capped["sections"]


@pytest.mark.root
@pytest.mark.bpf
def test_a_stalled_consumer_loses_events_and_says_why(tmp_path: Path) -> None:
    from glasshouse.core.profiling import ObserverUnavailable
    from glasshouse.observe.ebpf import EbpfObserver

    try:
        obs = EbpfObserver(ringbuf_bytes=1 << 16)
    except ObserverUnavailable as exc:
        pytest.skip(str(exc))
    code = (
        "import os\nfor i in range(3000):\n"
        "    os.close(os.open('f%d' % i, os.O_CREAT | os.O_WRONLY, 0o600))\n"
    )
    try:
        obs._pause_reader(True)
        data = _run(create("process"), [obs], [PY, "-c", code], cwd=str(tmp_path))
    finally:
        obs._pause_reader(False)
        obs.close()
    lost = _reasons(data)["events_lost"]
    assert lost["observer"] == "ebpf"
    assert lost["count"] == data["observation"]["events_lost"] > 0
    assert lost["detail"]["kernel"] > 0  # the ring buffer had no room
    assert sum(lost["detail"].values()) == lost["count"]


class _HeldLock:
    """Stands in for the observer's fold lock, held by the test until :meth:`release`:
    whoever enters it blocks there, and says so (``waiting``: the threads blocked)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.waiting: list[int] = []

    def __enter__(self) -> None:
        self.waiting.append(threading.get_ident())
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def release(self) -> None:
        self._lock.release()


@pytest.mark.root
@pytest.mark.bpf
def test_a_run_that_ended_before_the_reader_drained(tmp_path: Path) -> None:
    """The reader thread is stuck folding (fault injection: it waits on a lock the test
    holds) when the run ends: the drain gives up, and the receipt says so."""
    with ebpf_observer() as obs:
        obs.drain_timeout_s = 0.2
        held = _HeldLock()
        obs._fold_lock = held
        go = tmp_path / "go"
        os.mkfifo(go)
        code = f"{WRITE_THREE}\nimport sys\nopen(sys.argv[1]).read()\n"
        out: dict[str, Any] = {}

        def run() -> None:
            out["data"] = _run(create("process"), [obs], [PY, "-c", code, str(go)],
                               cwd=str(tmp_path))  # fmt: skip

        worker = threading.Thread(target=run)
        worker.start()
        try:
            until(lambda: obs._thread.ident in held.waiting, what="the reader stuck folding")
            with open(go, "w") as f:
                f.write("end")  # the workload ends; its session stops and drains
            until(lambda: not obs._sessions, what="the drain to give up")
        finally:
            held.release()
            worker.join(60)
    reasons = _reasons(out["data"])
    assert "not_drained" in reasons and reasons["not_drained"]["observer"] == "ebpf"
    assert _coverage(out["data"])["status"] == "incomplete"


@pytest.mark.root
@pytest.mark.bpf
def test_processes_outliving_the_observation(tmp_path: Path) -> None:
    """Agent mode: the root exits, its background child runs on; the receipt is written
    then, and says that child was no longer observed."""
    from test_agent import _watching

    from glasshouse.receipt.store import load_receipt

    agent, binary = _watching(tmp_path, "/bin/sh")
    written: list[Path] = []
    t = threading.Thread(target=lambda: written.extend(agent.run(count=1, duration=30)))
    t.start()
    subprocess.run([str(binary), "-c", "sleep 60 &"], check=True, stdout=subprocess.DEVNULL)
    t.join(40)
    receipt = load_receipt(written[0]).model_dump(mode="json")
    sleeper = [n["pid"] for n in receipt["process_tree"] if n["exe"] == "/usr/bin/sleep"]
    for pid in sleeper:
        os.kill(pid, signal.SIGKILL)
    survivors = _reasons(receipt)["survivors_unobserved"]
    assert survivors["count"] == 1 and survivors["observer"] == "ebpf"
    assert str(sleeper[0]) in survivors["message"]


@pytest.mark.root
@pytest.mark.bpf
def test_io_uring_the_observer_decodes_is_no_blind_spot(observer, tmp_path: Path) -> None:
    data = _run(create("process"), [observer], [PY, "-c", IO_URING], cwd=str(tmp_path))
    counts = data["syscalls"]["counts"]
    if counts.get("io_uring_setup", 0) == 0:
        pytest.skip("io_uring_setup was not reached")
    if "io_uring operations" in observer.unobserved:
        blind = _reasons(data)["blind:io_uring"]  # the kernel hides the ring: stated
        assert blind["sections"] == ["filesystem", "network"]
        return
    uring = data["syscalls"]["io_uring"]
    assert uring["observed"] and uring["not_decoded"] == [] and uring["unfinished"] == 0
    assert "blind:io_uring" not in _reasons(data), _coverage(data)


def test_io_uring_ops_the_observer_cannot_show_are_a_stated_gap() -> None:
    from glasshouse.observe.ebpf import _uring_gaps
    from glasshouse.receipt.model import IoUring, Syscalls

    seen = Syscalls(
        io_uring=IoUring(ops={"uring_cmd": 2, "read": 1}, not_decoded=["uring_cmd"], unfinished=1)
    )
    (gap,) = _uring_gaps(seen)
    assert gap.code == "blind:io_uring" and gap.count == 2
    assert dict(gap.detail) == {"not_decoded": 1, "unfinished": 1}
    assert _uring_gaps(Syscalls(io_uring=IoUring(ops={"read": 1}))) == []
    (blind,) = _uring_gaps(Syscalls(io_uring=IoUring(observed=False)))
    assert "could not be observed" in blind.message


@pytest.mark.root
@pytest.mark.bpf
def test_io_uring_refused_by_the_sandbox_is_no_blind_spot(observer) -> None:
    data = _run(_backend_or_skip("sandbox"), [observer], ["python3", "-c", IO_URING])
    assert data["environment"]["sandbox"]["details"]["seccomp_denied"]
    assert "blind:io_uring" not in _reasons(data)
    assert _coverage(data)["status"] == "complete", _coverage(data)


# -- backends the host cannot see into ---------------------------------------------------------


@pytest.mark.root
@pytest.mark.bpf
def test_gvisor_is_blind(observer) -> None:
    data = _run(_backend_or_skip("gvisor"), [observer], ["python3", "-c", WRITE_THREE])
    blind = _reasons(data)["blind:gvisor"]
    assert blind["sections"] == ["process_tree", "filesystem", "network", "syscalls"]
    assert _coverage(data)["status"] == "incomplete"


@pytest.fixture(scope="module")
def microvm():
    from glasshouse.backends import microvm

    ok, why = microvm.probe()
    if not ok:
        pytest.skip(f"this host cannot boot microVM guests: {why}")
    backend = create("microvm")
    backend.prepare()
    return backend


@pytest.mark.vm
@pytest.mark.root
@pytest.mark.bpf
def test_microvm_is_blind_unless_the_guest_covered_it(observer, microvm) -> None:
    argv = ["python3", "-c", "open('x', 'w').write('1')"]
    data = _run(microvm, [observer], argv)
    blind = _reasons(data)["blind:vm_guest"]
    assert blind["sections"] == ["process_tree", "filesystem", "network", "syscalls"]
    # the guest's own record covers the user's Python code, all but the syscall counts
    data = _run(microvm, [observer], argv, profile="combined")
    assert _reasons(data)["blind:vm_guest"]["sections"] == ["syscalls"]
    assert any(w.endswith("/x") for w in data["filesystem"]["writes"])


# -- the command line --------------------------------------------------------------------------


def test_profile_disabled_cli(tmp_path: Path) -> None:
    p = _gh("run", "-p", "disabled", "--receipt", "r.json", "--", "true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "coverage none (disabled)" in p.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert _coverage(data)["status"] == "none" and list(_reasons(data)) == ["disabled"]
    shown = _gh("receipt", "show", "r.json", cwd=tmp_path)
    assert "coverage" in shown.stdout and "none: disabled" in shown.stdout


@pytest.mark.root
@pytest.mark.bpf
def test_policy_requiring_complete_coverage_on_real_runs(observer, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(REQUIRE_COMPLETE)
    env = {**os.environ, "GLASSHOUSE_OBSERVER": "ebpf"}
    argv = ["--policy", "p.yaml", "--", "sh", "-c", "echo a > a; echo b > b; exit 3"]
    p = _gh("run", "--receipt", "full.json", *argv, cwd=tmp_path, env=env)
    assert p.returncode == 3, p.stderr  # the verdict never changes the exit code
    full = json.loads((tmp_path / "full.json").read_text())
    assert _coverage(full)["status"] == "complete" and full["policy"]["passed"] is True
    p = _gh("run", "--max-list", "1", "--receipt", "capped.json", *argv, cwd=tmp_path, env=env)
    assert p.returncode == 3, p.stderr
    assert "coverage incomplete (list_capped)" in p.stderr
    capped = json.loads((tmp_path / "capped.json").read_text())
    assert capped["policy"]["violations"] == ["complete-observation"]
    assert "complete-observation: list_capped" in capped["filesystem"]["policy_violations"]
    check = _gh("policy", "check", "--policy", "p.yaml", "full.json", "capped.json", cwd=tmp_path)
    assert check.returncode == 1 and "complete-observation" in check.stdout
