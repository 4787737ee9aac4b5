"""Issue 14, items 2 and 4, against the real BPF programs under the process and the sandbox
backends: the seed's filesystem fields are complete (every path whose content or existence
changed is a write, every path removed a delete, files with no path are in neither), and
processes are recorded as they happened (the file the kernel executed, exec chains, memfd
exec, orphans). Each case asserts what must appear and that nothing invented does. The
workloads are in tests/observe_corpus/. Needs root, BTF and the built object."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jsonschema
import pytest
from _support import ebpf_observer

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine

pytestmark = [pytest.mark.root, pytest.mark.bpf]

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "observe_corpus"
SCHEMA = json.loads((ROOT / "schemas" / "receipt-v0.4.0.schema.json").read_text())
PY = os.path.realpath(sys.executable)
BACKENDS = ["process", "sandbox"]


@pytest.fixture(scope="module")
def observer():
    with ebpf_observer() as obs:
        yield obs


def _backend(name: str):
    if name == "sandbox":
        from glasshouse.backends import sandbox

        ok, why = sandbox.probe()
        if not ok:
            pytest.skip(f"sandbox unavailable: {why}")
    return create(name)


def run_corpus(observer, backend: str, script: str, tmp_path: Path, *args: str):
    """Run a corpus script with its work dir as first argument: the test's tmp dir for the
    process backend, the workspace (where the script is given) in a sandbox. Returns the
    receipt, the script's stdout and the work dir as the workload saw it."""
    if backend == "process":
        work = str(tmp_path)
        spec = ExecutionSpec(argv=[PY, str(CORPUS / script), work, *args], cwd=work, timeout=60)
    else:
        work = "/workspace"
        spec = ExecutionSpec(
            argv=["python3", f"{work}/{script}", work, *args],
            files={script: (CORPUS / script).read_bytes()},
            timeout=60,
        )
    r = Engine(_backend(backend), observers=[observer], profile="host").run(spec)
    assert r.result.exit_code == 0, (r.result.error, r.result.stderr.data[-2000:])
    jsonschema.validate(r.receipt_data, SCHEMA)
    assert r.observations[0].events_lost == 0
    return r.receipt, r.result.stdout.data.decode(), work


def _seed_paths(fs) -> list[str]:
    return [*fs.reads, *fs.writes, *fs.deletes, *fs.mkdirs]


def _nothing_invented(fs, work: str) -> None:
    """No path in the seed lists that no file has: magic links, nameless files, the root."""
    for path in _seed_paths(fs):
        assert not path.startswith("/proc/"), path
        assert "(deleted)" not in path and "memfd:" not in path and "/#" not in path, path
    assert "/" not in fs.writes and work not in fs.writes  # an O_TMPFILE open writes no dir


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_filesystem_fields_are_complete(observer, backend, tmp_path):
    receipt, out, w = run_corpus(observer, backend, "seed_files.py", tmp_path)
    allowed = json.loads(out)
    fs = receipt.filesystem
    p = lambda *parts: os.path.join(w, *parts)  # noqa: E731
    written = {
        *("old.txt", "new.txt", "left", "right", "fifo2", "tmp-proc", "target.txt", "alias"),
        *("d", "d/sub", "d/fifo", "d/sock", "d/sym", "d/hard", "d/hard2", "d/moved"),
        *("d/via-opath-dir.txt", "by-handle.txt"),
        *(("tmp-empty",) if allowed["linkat_empty_path"] else ()),
    }
    assert set(fs.writes) == {p(x) for x in written}
    assert set(fs.deletes) == {p("new.txt"), p("d/hard2"), p("d/moved"), p("d/sub")}
    assert set(fs.mkdirs) == {p("d"), p("d/sub")}
    # reads in the work dir: the dir opened as a dirfd, target.txt through the symlink to
    # /proc/self/fd/N, the file opened by handle; the script itself, in a sandbox
    read = {p("d"), p("target.txt")} | (
        {p("by-handle.txt")} if allowed["open_by_handle_at"] else set()
    )
    if backend == "sandbox":
        read.add(p("seed_files.py"))
    assert {r for r in fs.reads if r.startswith(w + "/")} == read
    renames = {(r.src, r.dst, r.exchange) for r in fs.renames}
    assert renames == {
        (p("new.txt"), p("old.txt"), False),
        (p("left"), p("right"), True),
        (p("d/hard2"), p("d/moved"), False),
    }
    links = {(ln.path, ln.kind) for ln in fs.links}
    assert links >= {(p("d/sym"), "symbolic"), (p("d/hard"), "hard"), (p("tmp-proc"), "hard")}
    if allowed["linkat_empty_path"]:
        tmp = next(ln for ln in fs.links if ln.path == p("tmp-empty"))
        assert tmp.target.startswith(p("#")) and tmp.target.endswith(" (deleted)")
    failed = {(f.op, f.path, f.errno) for f in fs.failed}
    assert ("openat", p("target.txt"), "ENOENT") in failed  # openat(O_PATH fd, ""): refused
    if not allowed["open_by_handle_at"]:
        assert any(f[0] == "open_by_handle_at" for f in failed)
    _nothing_invented(fs, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exec_chain_keeps_each_image_with_the_file_the_kernel_ran(observer, backend, tmp_path):
    receipt, out, w = run_corpus(observer, backend, "exec_chain.py", tmp_path)
    first = PY if backend == "process" else os.path.realpath("/usr/bin/python3")
    later = out.splitlines()[0].split()  # realpath of /proc/self/exe, of sh in PATH, of say
    assert len(receipt.process_tree) == 1
    root = receipt.process_tree[0]
    assert [i.exe for i in root.execs] == [first, *later]
    assert later[1] == os.path.realpath("/bin/sh") and later[2] == os.path.realpath("/bin/echo")
    script = root.execs[0].argv[1]
    assert [i.argv[1:] for i in root.execs] == [
        [script, w],
        [script, w, "1"],
        ["-c", 'exec "$0" chained', f"{w}/say"],
        ["chained"],
    ]
    assert [i.argv[0] for i in root.execs[2:]] == ["sh", f"{w}/say"]
    assert (root.exe, root.argv) == (later[2], [f"{w}/say", "chained"])
    times = [i.started_at for i in root.execs]
    assert times == sorted(times) and None not in times
    assert root.exit_code == 0 and not root.forked_only
    assert f"{w}/say" in receipt.filesystem.writes


@pytest.mark.parametrize("backend", BACKENDS)
def test_memfd_exec_is_named_by_the_memfd(observer, backend, tmp_path):
    receipt, out, _ = run_corpus(observer, backend, "memfd_exec.py", tmp_path)
    assert out == "from-memfd\n"
    root = receipt.process_tree[0]
    assert root.exe == "memfd:payload" and root.argv == ["payload", "from-memfd"]
    assert [i.exe for i in root.execs][-1] == "memfd:payload" and len(root.execs) == 2
    _nothing_invented(receipt.filesystem, "/nonexistent")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_orphan_is_observed_until_the_run_ends(observer, backend, tmp_path):
    receipt, out, w = run_corpus(observer, backend, "orphan_exec.py", tmp_path)
    mid, gc = (int(x) for x in out.split())  # as the workload saw them (its pid namespace)
    nodes = {n.ns_pid or n.pid: n for n in receipt.process_tree}
    root = receipt.process_tree[0]
    assert nodes[mid].ppid == root.pid and nodes[mid].exit_code == 0
    orphan = nodes[gc]
    # its creator stays its parent (reparenting is not a new parent in the tree)...
    assert orphan.ppid == nodes[mid].pid
    # ...and it is observed after its parent's exit and the root's: both execs, its file,
    # its end (killed with the run, still running when the root exited)
    sh, sleep = os.path.realpath("/bin/sh"), os.path.realpath("/bin/sleep")
    assert [(i.exe, i.argv[0]) for i in orphan.execs] == [(sh, "sh"), (sleep, "sleep")]
    assert orphan.exe == sleep and orphan.argv == ["sleep", "30"] and not orphan.forked_only
    assert orphan.signal == 9 and orphan.ended_at > root.ended_at
    assert f"{w}/reparented" in receipt.filesystem.writes
    assert f"{w}/reparented.tmp" in receipt.filesystem.deletes  # mv: the old name is gone
