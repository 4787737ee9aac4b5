"""The strace fallback observer: attaches to the gated root, fills the same sections (at
lower fidelity) and says so in the receipt. Uses real strace; a subset of the corpus."""

from __future__ import annotations

import os
import shutil
import socket

import pytest
from test_observe_ebpf import CORPUS, PY, receipt_stdout, run

from glasshouse.core.profiling import ObserverUnavailable
from glasshouse.observe import host_observer


@pytest.fixture(scope="module")
def observer():
    from glasshouse.observe.strace import StraceObserver

    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    return StraceObserver(fallback_reason="test")


def test_labeled_lower_fidelity(observer, tmp_path):
    receipt, obs = run(observer, ["/bin/sh", "-c", "exit 3"], cwd=str(tmp_path))
    assert obs.available and obs.observer == "strace"
    report = receipt.observation.observers[0]
    assert report.name == "strace" and "lower fidelity" in report.reason
    root = receipt.process_tree[0]
    assert root.exe == "/bin/sh" and root.argv == ["/bin/sh", "-c", "exit 3"]
    assert root.exit_code == 3 and receipt.outcome.exit_code == 3
    assert root.started_at and root.ended_at and root.started_at <= root.ended_at
    # the gated child's own pre-exec code is not the workload's
    assert receipt.syscalls.counts["execve"] == 1


def test_files_and_fork(observer, tmp_path):
    w = str(tmp_path)
    receipt, _ = run(observer, [PY, str(CORPUS / "files.py"), w], cwd="/")
    fs = receipt.filesystem
    p = lambda *parts: os.path.join(w, *parts)  # noqa: E731
    assert p("input.txt") in fs.writes and p("sub", "in-sub.txt") in fs.writes
    assert p("sub", "at-dirfd.txt") in fs.writes
    assert (p("input.txt"), p("moved.txt")) in {(r.src, r.dst) for r in fs.renames}
    assert ("moved.txt", p("soft.txt"), "symbolic") in {
        (ln.target, ln.path, ln.kind) for ln in fs.links
    }
    assert ("openat", p("missing.txt"), "ENOENT") in {(f.op, f.path, f.errno) for f in fs.failed}

    receipt, _ = run(observer, [PY, str(CORPUS / "fork_noexec.py"), w], cwd=w)
    child_pid, code = (int(x) for x in receipt_stdout(receipt).split())
    child = {n.pid: n for n in receipt.process_tree}[child_pid]
    assert child.forked_only and child.exit_code == code == 3


def test_network_connect(observer, tmp_path):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port})); s.sendall(b'x' * 10); s.close()\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"u.sendto(b'y' * 5, ('127.0.0.1', {port}))\n"
    )
    try:
        receipt, _ = run(observer, [PY, "-c", code], cwd=str(tmp_path))
    finally:
        srv.close()
    attempts = {(a.dst, a.protocol, a.result) for a in receipt.network.attempts}
    assert (f"127.0.0.1:{port}", "tcp", "connected") in attempts
    assert {(s.dst, s.protocol, s.bytes) for s in receipt.network.sends} == {
        (f"127.0.0.1:{port}", "udp", 5)
    }
    assert receipt.network.bytes_sent == 15


def test_forced_strace_via_env(monkeypatch):
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    monkeypatch.setenv("GLASSHOUSE_OBSERVER", "strace")
    obs = host_observer(reuse=False)
    assert obs.name == "strace"


def test_fallback_when_bpf_unavailable(monkeypatch, tmp_path):
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    monkeypatch.setenv("GLASSHOUSE_BPF_DIR", str(tmp_path))  # no exec.o there
    obs = host_observer(reuse=False)
    assert obs.name == "strace" and "exec.o not found" in obs.reason
    monkeypatch.setenv("GLASSHOUSE_OBSERVER", "bogus")
    with pytest.raises(ObserverUnavailable, match="expected ebpf or strace"):
        host_observer(reuse=False)


def test_seed_filesystem_fields(observer, tmp_path):
    """The strace fallback fills the seed's writes and deletes like the eBPF observer for
    namespace calls (it does not resolve opens through /proc/self/fd: lower fidelity)."""
    w = str(tmp_path)
    receipt, _ = run(observer, [PY, str(CORPUS / "seed_files.py"), w], cwd=w)
    assert receipt.outcome.exit_code == 0
    fs = receipt.filesystem
    p = lambda *parts: os.path.join(w, *parts)  # noqa: E731
    assert set(fs.deletes) == {p("new.txt"), p("d/hard2"), p("d/moved"), p("d/sub")}
    made = ["old.txt", "left", "right", "fifo2", "tmp-proc", "alias", "d", "d/sub", "d/fifo"]
    made += ["d/sock", "d/sym", "d/hard", "d/hard2", "d/moved"]
    assert set(fs.writes) >= {p(x) for x in made}
    assert set(fs.mkdirs) == {p("d"), p("d/sub")}
    assert (p("left"), p("right"), True) in {(r.src, r.dst, r.exchange) for r in fs.renames}
    assert w not in fs.writes and not [x for x in fs.writes if "(deleted)" in x or "/#" in x]
