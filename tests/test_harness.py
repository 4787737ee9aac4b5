"""Workload vs harness (issue 14, item 1): a receipt's process_tree, filesystem, network and
syscalls describe the command the user ran and its descendants only; what Glasshouse ran to
set the run up (the process backend's pre-exec code, bwrap, glasshouse-init, runsc) is in
``observation.harness``, counted, never silently dropped. Real BPF, real sandboxes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from _support import ebpf_observer

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine
from glasshouse.observe.ebpf import _decode as d

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "receipt-v0.4.0.schema.json").read_text())
WRITE_NOTES = 'open("notes.txt", "w").write("x")'
#: what the process backend's child does between fork and exec (backends/_spawn.py)
PRE_EXEC = ("setsid", "dup2", "dup3", "close_range", "setresuid", "setgroups")
#: what bwrap does to build the sandbox
BWRAP_SETUP = ("mount", "pivot_root", "unshare", "umount2", "sethostname", "capset")


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


def _run(backend, observer, argv, **kw):
    r = Engine(backend, observers=[observer], profile="host").run(
        ExecutionSpec(argv=argv, timeout=60, **kw)
    )
    assert r.result.exit_code == 0, (r.result.error, r.result.stderr.data)
    jsonschema.validate(r.receipt_data, SCHEMA)
    return r.receipt


def _all_paths(fs) -> list[str]:
    return [
        *fs.reads,
        *fs.writes,
        *fs.deletes,
        *fs.mkdirs,
        *(p for r in fs.renames for p in (r.src, r.dst)),
        *(p for ln in fs.links for p in (ln.target, ln.path)),
    ]


@pytest.mark.root
@pytest.mark.bpf
def test_process_backend_workload_starts_at_the_exec(observer, tmp_path: Path) -> None:
    receipt = _run(create("process"), observer, ["/usr/bin/python3", "-c", WRITE_NOTES],
                   cwd=str(tmp_path))  # fmt: skip
    assert receipt.filesystem.writes == [str(tmp_path / "notes.txt")]
    root = receipt.process_tree[0]
    assert root.argv[0] == "/usr/bin/python3" and root.role is None
    counts = receipt.syscalls.counts
    assert counts["execve"] == 1
    assert not set(PRE_EXEC) & set(counts), counts
    harness = receipt.observation.harness
    assert harness is not None and harness.processes == []  # the child itself is the command


@pytest.mark.root
@pytest.mark.bpf
def test_sandbox_receipt_lists_only_the_workload(observer) -> None:
    receipt = _run(_backend_or_skip("sandbox"), observer, ["python3", "-c", WRITE_NOTES])
    fs = receipt.filesystem
    assert fs.writes == ["/workspace/notes.txt"]
    assert fs.mkdirs == [] and fs.deletes == [] and fs.links == []
    bad = [p for p in _all_paths(fs) if p.startswith(("/proc/", "/newroot", "/oldroot"))]
    assert bad == []
    net = receipt.network
    assert net.binds == [] and net.sends == [] and net.attempts == []
    assert net.bytes_sent == 0 == net.bytes_received  # bwrap's netlink set-up of lo is harness
    tree = receipt.process_tree
    assert [(n.argv[0], n.ns_pid) for n in tree] == [("python3", 2)]
    assert tree[0].exe == os.path.realpath("/usr/bin/python3") and tree[0].exit_code == 0
    assert [p.cmd.split()[0] for p in receipt.processes] == ["python3"]
    counts = receipt.syscalls.counts
    assert counts["execve"] == 1 and not set(BWRAP_SETUP) & set(counts), counts
    # nothing silently dropped: bwrap and glasshouse-init are accounted for as harness
    harness = receipt.observation.harness
    assert harness is not None
    exes = [p.exe for p in harness.processes]
    assert exes[0].endswith("bwrap") and "/.glasshouse-init" in exes, exes
    assert {p.role for p in harness.processes} == {"harness"}
    init = next(p for p in harness.processes if p.exe == "/.glasshouse-init")
    assert tree[0].ppid == init.pid and init.ns_pid == 1
    assert harness.counts.syscalls > 100 and harness.counts.files > 10
    assert harness.counts.network >= 1  # bwrap's netlink bind/send for lo


@pytest.mark.root
@pytest.mark.bpf
def test_receipt_show_names_the_harness(observer, tmp_path: Path) -> None:
    _backend_or_skip("sandbox")
    env = {**os.environ, "GLASSHOUSE_OBSERVER": "ebpf"}
    cli = [sys.executable, "-m", "glasshouse.cli"]
    run = subprocess.run(
        [*cli, "run", "-b", "sandbox", "-q", "--", "true"],
        cwd=tmp_path, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    shown = subprocess.run(
        [*cli, "receipt", "show", "receipt.json"],
        cwd=tmp_path, env={**env, "COLUMNS": "200"}, capture_output=True, timeout=60,
    )  # fmt: skip
    out = shown.stdout.decode()
    assert "harness (not the workload's): bwrap, .glasshouse-init (2 processes;" in out, out


@pytest.mark.root
@pytest.mark.bpf
def test_sandbox_descendants_are_workload(observer) -> None:
    script = "mkdir d && echo x > d/f && sh -c 'rm d/f' && rmdir d"
    receipt = _run(_backend_or_skip("sandbox"), observer, ["sh", "-c", script])
    fs = receipt.filesystem
    assert fs.mkdirs == ["/workspace/d"] and "/workspace/d/f" in fs.writes
    assert fs.deletes == ["/workspace/d/f", "/workspace/d"]
    argv0 = [n.argv[0] for n in receipt.process_tree]
    assert argv0[0] == "sh" and "mkdir" in argv0 and "rm" in argv0 and "rmdir" in argv0
    assert not any(a.endswith(("bwrap", ".glasshouse-init")) for a in argv0)


@pytest.mark.root
@pytest.mark.bpf
def test_sandbox_without_init_starts_at_bwraps_child(observer, tmp_path, monkeypatch) -> None:
    """No C compiler and no cached glasshouse-init: bwrap's own PID 1 runs the command; the
    launcher is then bwrap itself, and the command is still the tree's first node."""
    _backend_or_skip("sandbox")
    bwrap = os.path.realpath(os.popen("command -v bwrap").read().strip())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bwrap").symlink_to(bwrap)
    monkeypatch.setenv("PATH", str(bin_dir))  # no cc, gcc or clang: init cannot be built
    monkeypatch.setenv("GLASSHOUSE_CACHE", str(tmp_path / "cache"))  # and none cached
    monkeypatch.delenv("CC", raising=False)
    backend = create("sandbox")
    backend.prepare()
    receipt = _run(backend, observer, ["/usr/bin/python3", "-c", WRITE_NOTES])
    assert receipt.filesystem.writes == ["/workspace/notes.txt"]
    assert [n.argv[0] for n in receipt.process_tree] == ["/usr/bin/python3"]
    harness = receipt.observation.harness
    assert harness is not None
    exes = {p.exe for p in harness.processes}
    assert "/.glasshouse-init" not in exes and any(e.endswith("bwrap") for e in exes), exes


@pytest.mark.root
@pytest.mark.bpf
def test_gvisor_host_sees_only_the_harness(observer) -> None:
    receipt = _run(_backend_or_skip("gvisor"), observer, ["python3", "-c", WRITE_NOTES])
    obs = receipt.observation
    for section in ("process_tree", "filesystem", "network", "syscalls"):
        assert section not in obs.collected and "gVisor" in obs.missing[section]
    assert receipt.process_tree == [] and receipt.filesystem.writes == []
    assert obs.harness is not None and obs.harness.counts.syscalls > 0
    assert any((p.exe or "").endswith("runsc") for p in obs.harness.processes)


# -- the decoder: the kernel's role flag splits the tree, each role with its own cap ------


def _proc_rec(etype: int, tgid: int, nr: int, harness: bool) -> bytes:
    flags = d.F_HARNESS if harness else 0
    return d.HDR.pack(etype, flags, 1, tgid, tgid, 1, 0, nr, 0, 0, 0, 0, 0, 0)


def test_decoder_splits_by_role_with_a_cap_each() -> None:
    f = d.Folder(10, 1, {}, list_cap=5)
    f.feed([_proc_rec(d.EV_EXEC, 10, 1, True)])  # the root exec'd the launcher
    f.feed(_proc_rec(d.EV_FORK, 10, 100 + i, True) for i in range(8))  # harness children
    f.feed([_proc_rec(d.EV_EXEC, 100, 10, False)])  # one of them exec'd the command
    f.feed(_proc_rec(d.EV_FORK, 100, 200 + i, False) for i in range(8))  # its children
    f.feed([_proc_rec(d.EV_EXIT, 10, 0, True)])
    tree, *_, harness = f.result({d.STAT_HARNESS_SYS: 7, d.STAT_HARNESS_FILE: 3})
    assert [n.pid for n in tree] == [100, 200, 201, 202, 203]
    assert all(n.role is None for n in tree)
    assert [n.pid for n in harness.processes] == [10, 101, 102, 103]
    assert {n.role for n in harness.processes} == {"harness"}
    assert (harness.counts.syscalls, harness.counts.files, harness.counts.network) == (7, 3, 0)
    assert f.omitted() == {"process_tree": 4, "observation.harness.processes": 4}
    assert len(f.procs) <= 2 * 5 + 1  # bounded: a cap per role (+ the one that changed role)


def test_workload_nodes_dump_without_role() -> None:
    f = d.Folder(10, 1, {})
    f.feed([_proc_rec(d.EV_EXEC, 10, 1, False)])
    tree, *_ = f.result({})
    assert "role" not in tree[0].model_dump()
