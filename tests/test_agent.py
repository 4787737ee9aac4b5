"""glasshouse-agent: execs matching a process name become observed roots in the kernel; a
receipt per root exit. Real BPF (root, BTF, built object)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _support import until

from glasshouse.core.profiling import ObserverUnavailable
from glasshouse.receipt.store import load_receipt

pytestmark = [pytest.mark.root, pytest.mark.bpf]


def _watching(tmp_path: Path, program: str):
    """An agent watching a private copy of ``program`` (a unique comm: nothing else on the
    host matches it), and that copy."""
    from glasshouse.agent.__main__ import Agent

    name = "gh" + secrets.token_hex(4)
    binary = tmp_path / name
    shutil.copy(program, binary)
    try:
        a = Agent(tmp_path / "receipts", [name], [], log=lambda _msg: None)
    except ObserverUnavailable as exc:
        pytest.skip(f"eBPF observer unavailable: {exc}")
    return a, binary


@pytest.fixture
def agent(tmp_path):
    a, binary = _watching(tmp_path, "/bin/sh")
    yield a, binary
    a.stop()


def test_a_receipt_per_watched_root(agent, tmp_path):
    a, binary = agent
    out: list = []
    t = threading.Thread(target=lambda: out.extend(a.run(count=2, duration=30)))
    t.start()
    work = tmp_path / "w"
    work.mkdir()
    # Two roots; the second runs a nested watched binary, which stays part of its tree.
    subprocess.run([str(binary), "-c", f"echo one > {work}/one; exit 3"], check=False)
    subprocess.run([str(binary), "-c", f"{binary} -c 'echo two > {work}/two'; exit 4"], check=False)
    t.join(40)
    assert len(out) == 2
    receipts = sorted((load_receipt(p) for p in out), key=lambda r: r.outcome.exit_code)
    first, second = receipts
    assert first.outcome.exit_code == 3 and first.execution.backend == "agent"
    assert first.process_tree[0].exe == str(binary)
    assert str(work / "one") in first.filesystem.writes
    assert str(work / "two") not in first.filesystem.writes
    assert second.outcome.exit_code == 4
    assert len(second.process_tree) == 2  # the nested watched exec is a child, not a root
    assert second.process_tree[1].ppid == second.process_tree[0].pid
    assert str(work / "two") in second.filesystem.writes
    assert second.observation.events_lost == 0


def test_cli_requires_a_filter(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "glasshouse.agent", "--receipts-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "at least one --comm or --cgroup" in r.stderr


def test_cli_writes_receipts(tmp_path):
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF")
    name = "ghc" + secrets.token_hex(4)
    binary = tmp_path / name
    shutil.copy("/bin/true", binary)
    rdir = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "glasshouse.agent", "--receipts-dir", str(rdir),
         "--comm", name, "--count", "1", "--duration", "30"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stderr.readline()  # "watching ..." once loaded (or the reason it cannot)
    if "unavailable" in line:
        proc.wait()
        pytest.skip(line.strip())
    subprocess.run([str(binary)], check=True)
    proc.wait(40)
    assert proc.returncode == 0
    files = list(Path(rdir).glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["process_tree"][0]["exe"] == str(binary) and data["exit_code"] == 0


def test_cgroup_filter(tmp_path):
    """A process that joins a watched cgroup (v2) and then execs becomes a root."""
    from glasshouse.agent.__main__ import Agent

    base = next((p for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup") if _is_v2(p)), None)
    if base is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    cg = Path(base) / f"glasshouse-agent-test-{secrets.token_hex(3)}"
    try:
        cg.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup: {exc}")
    try:
        try:
            a = Agent(tmp_path / "receipts", [], [str(cg)], log=lambda _msg: None)
        except ObserverUnavailable as exc:
            pytest.skip(f"eBPF observer unavailable: {exc}")
        out: list = []
        t = threading.Thread(target=lambda: out.extend(a.run(count=1, duration=30)))
        t.start()
        marker = tmp_path / "in-cgroup"
        subprocess.run(
            ["/bin/sh", "-c", f"echo $$ > {cg}/cgroup.procs && exec /bin/touch {marker}"],
            check=True,
        )
        t.join(40)
        a.stop()
        assert len(out) == 1
        receipt = load_receipt(out[0])
        assert receipt.process_tree[0].exe == os.path.realpath("/bin/touch")
        assert str(marker) in receipt.filesystem.writes
        assert receipt.execution.details["filter"] == f"cgroup={cg}"
    finally:
        cg.rmdir()


def _is_v2(path: str) -> bool:
    return os.path.exists(os.path.join(path, "cgroup.controllers"))


def test_roots_beyond_the_slots_are_counted(tmp_path):
    """With every session slot busy a watched exec is not observed, and that is counted."""
    a, binary = _watching(tmp_path, "/bin/sleep")
    procs = []
    try:
        procs = [subprocess.Popen([str(binary), "30"]) for _ in range(66)]
        until(lambda: a.observer.skipped_roots() >= 3, what="3 watched execs past the slots")
        assert a.observer.skipped_roots() == 3  # 66 roots, 63 slots
    finally:
        for p in procs:
            p.kill()
            p.wait()
        a.run(duration=0.5)
    assert a.skipped == 3


def test_receipts_go_through_the_pipeline_signed_and_redacted(tmp_path):
    """The agent finishes receipts like the CLI and the server: redaction, then a signature."""
    from glasshouse.agent.__main__ import Agent
    from glasshouse.receipt.sign import generate_keypair, load_public_key, verify_envelope
    from glasshouse.runner import pipeline_for

    key, pub = generate_keypair(tmp_path / "keys")
    name = "gh" + secrets.token_hex(4)
    binary = tmp_path / name
    shutil.copy("/bin/sh", binary)
    pipeline = pipeline_for(redact=True, signing_key=key)
    try:
        a = Agent(tmp_path / "receipts", [name], [], log=lambda _msg: None, pipeline=pipeline)
    except ObserverUnavailable as exc:
        pytest.skip(f"eBPF observer unavailable: {exc}")
    out: list = []
    t = threading.Thread(target=lambda: out.extend(a.run(count=1, duration=30)))
    t.start()
    subprocess.run([str(binary), "-c", "true --password hunter2"], check=False)
    t.join(40)
    assert len(out) == 1
    text = out[0].read_text()
    assert "hunter2" not in text and "REDACTED" in text
    envelope = json.loads(out[0].with_suffix(".dsse.json").read_text())
    assert verify_envelope(envelope, load_public_key(pub), receipt=json.loads(text)) is not None
