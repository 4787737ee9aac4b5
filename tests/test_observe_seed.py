"""Issue 14, item 2, against the real BPF programs under the process and the sandbox
backends: the seed's filesystem fields are complete (every path whose content or existence
changed is a write, every path removed a delete, files with no path are in neither). Each
case asserts what must appear and that nothing invented does. The workloads are in
tests/observe_corpus/. Needs root, BTF and the built object."""

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
