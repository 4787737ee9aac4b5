"""``artifacts.workspace`` (issue 14 item 7): what a run left in its workspace, with digests,
from real runs (bubblewrap, gVisor, process) and a real directory walk (caps, symlinks,
FIFOs); and ``observation.coverage.attached``/``scope`` (item 6) from real runs."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from glasshouse.backends import create
from glasshouse.backends import sandbox as sandbox_mod
from glasshouse.backends._written import scan
from glasshouse.backends.sandbox import GVisorBackend, SandboxBackend
from glasshouse.backends.sandbox import gvisor as gvisor_mod
from glasshouse.core.execution import ExecutionResult, ExecutionSpec
from glasshouse.core.profiling import Attachment, Observation
from glasshouse.core.version import RECEIPT_VERSION
from glasshouse.engine import Engine
from glasshouse.observe import unavailable_observer
from glasshouse.receipt.aggregate import build_receipt
from glasshouse.receipt.canonical import compute_digest
from glasshouse.receipt.intoto import predicate_problems, runtime_trace_predicate
from glasshouse.receipt.model import Receipt

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / f"receipt-{RECEIPT_VERSION}.schema.json"

#: writes a.txt and sub/b.bin, changes one input, leaves two alone, writes then deletes
#: tmp.txt, makes a symlink out of the workspace and a FIFO.
SCRIPT = (
    "printf hello > a.txt; mkdir -p sub/deep; printf '\\001\\002' > sub/b.bin; "
    "printf changed > changed.txt; cat same.txt >/dev/null; printf gone > tmp.txt; "
    "rm tmp.txt; ln -s /etc/passwd out-link; mkfifo pipe"
)
INPUTS = {"changed.txt": b"original", "same.txt": b"unchanged", "dir/in.txt": b"nested"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _need(probe: tuple[bool, str]) -> None:
    ok, why = probe
    if not ok:
        pytest.skip(why)


@pytest.fixture(params=["bwrap", "gvisor"], scope="module")
def backend(request: pytest.FixtureRequest) -> SandboxBackend:
    if os.geteuid() != 0:
        pytest.skip("needs root (per-run host uid)")
    if request.param == "bwrap":
        _need(sandbox_mod.probe())
        b: SandboxBackend = SandboxBackend()
    else:
        _need(gvisor_mod.probe())
        b = GVisorBackend()
    b.prepare()
    return b


def _run(backend: Any, argv: list[str], **kw: Any) -> dict[str, Any]:
    engine = Engine(backend, list_cap=kw.pop("list_cap", 10_000))
    run = engine.run(ExecutionSpec(argv=argv, timeout=60, **kw))
    data = run.receipt_data
    Receipt.model_validate(data)
    jsonschema.validate(json.loads(json.dumps(data)), json.loads(SCHEMA.read_text()))
    return data


def _files(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in data["artifacts"]["workspace"]["files"]}


def test_a_sandbox_run_lists_what_it_wrote_with_exact_digests(backend: SandboxBackend) -> None:
    data = _run(backend, ["sh", "-c", SCRIPT], files=INPUTS)
    assert data["outcome"]["exit_code"] == 0, data["outcome"]
    ws = data["artifacts"]["workspace"]
    assert ws["collected"] is True and ws["root"] == "/workspace" and ws["reason"] is None
    files = _files(data)
    # tmp.txt (written, then deleted) and the unchanged inputs are absent. gVisor keeps a
    # FIFO made in the sandbox in its sentry (none on the host): only bubblewrap's is listed.
    fifo = set() if isinstance(backend, GVisorBackend) else {"pipe"}
    assert set(files) == {"a.txt", "sub/b.bin", "changed.txt", "out-link"} | fifo
    assert files["a.txt"] == {
        "path": "a.txt",
        "kind": "file",
        "status": "created",
        "size": 5,
        "sha256": _sha(b"hello"),
        "unhashed": None,
        "target": None,
    }
    assert files["sub/b.bin"]["sha256"] == _sha(b"\x01\x02")
    assert files["changed.txt"]["status"] == "modified"
    assert files["changed.txt"]["sha256"] == _sha(b"changed")
    # a symlink is listed with its target, never followed (no digest of /etc/passwd)
    link = files["out-link"]
    assert (link["kind"], link["target"], link["sha256"]) == ("symlink", "/etc/passwd", None)
    # a FIFO is listed, never opened (the receipt was written: nothing blocked)
    if fifo:
        assert (files["pipe"]["kind"], files["pipe"]["size"]) == ("fifo", None)
    # the inputs themselves are recorded with the digests given
    assert {i["path"]: i["sha256"] for i in data["artifacts"]["inputs"]} == {
        name: _sha(v) for name, v in INPUTS.items()
    }
    assert ws["unhashed"] == 0 and data["observation"]["omitted"] == {}


def test_caps_flag_and_count_what_is_not_hashed_or_listed() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (per-run host uid)")
    _need(sandbox_mod.probe())
    b = SandboxBackend(hash_file_cap=100, hash_total_cap=150)
    script = "head -c 200 /dev/zero > big; head -c 90 /dev/zero > a; head -c 90 /dev/zero > b"
    data = _run(b, ["sh", "-c", script])
    files = _files(data)
    assert files["big"]["sha256"] is None and files["big"]["unhashed"] == "file_cap"
    assert files["big"]["size"] == 200
    assert files["a"]["sha256"] == _sha(bytes(90))  # walked in name order: a, then b
    assert (files["b"]["sha256"], files["b"]["unhashed"]) == (None, "total_cap")
    assert data["artifacts"]["workspace"]["unhashed"] == 2
    # the list cap: what is cut is counted
    data = _run(b, ["sh", "-c", "for i in 1 2 3 4 5; do echo $i > f$i; done"], list_cap=2)
    assert [f["path"] for f in data["artifacts"]["workspace"]["files"]] == ["f1", "f2"]
    assert data["observation"]["omitted"] == {"artifacts.workspace.files": 3}


def test_the_process_backend_says_it_has_no_workspace(tmp_path: Path) -> None:
    data = _run(create("process"), ["sh", "-c", "echo x > written"], cwd=str(tmp_path))
    assert (tmp_path / "written").exists()
    ws = data["artifacts"]["workspace"]
    assert ws["collected"] is False and ws["files"] == []
    assert "process backend has no workspace" in ws["reason"]


# -- the walk itself, on a real directory -------------------------------------------------------


def test_walk_never_follows_a_symlinked_directory_nor_blocks_on_a_fifo(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "escape").symlink_to(outside)
    os.mkfifo(ws / "fifo")  # no writer: opening it for reading would block
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(scan(ws, {}, shown_as="/w")), daemon=True)
    t.start()
    t.join(30)
    assert done, "the walk blocked"
    got = {f.path: f for f in done[0].files}
    assert set(got) == {"escape", "fifo"}
    assert got["escape"].kind == "symlink" and got["escape"].target == str(outside)


def test_walk_bounds_count_depth_and_reads_inputs_back(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"x")
    (tmp_path / "in").write_bytes(b"given")
    deep = tmp_path / "d1" / "d2" / "d3"
    deep.mkdir(parents=True)
    (deep / "hidden").write_bytes(b"h")
    out = scan(tmp_path, {"in": b"given", "gone": b"x"}, shown_as="/w", max_files=3, max_depth=2)
    # f0..f4 in name order, cut at 3; the unchanged input and the vanished one not listed;
    # d1/d2/d3 is past the depth bound (said so in the reason)
    assert [f.path for f in out.files] == ["f0", "f1", "f2"]
    assert out.omitted == 2
    assert "deeper than 2 levels" in (out.reason or "")
    changed = scan(tmp_path, {"in": b"other"}, shown_as="/w")
    assert {f.path: f.status for f in changed.files}["in"] == "modified"
    assert {f.path for f in changed.files} >= {"d1/d2/d3/hidden"}
    assert changed.reason is None


# -- coverage: attached and scope ---------------------------------------------------------------


def test_attached_and_scope_of_a_sandbox_run(backend: SandboxBackend) -> None:
    from glasshouse.observe import host_observer

    try:
        observer = host_observer(fallback=False)
    except Exception as exc:  # no eBPF here
        pytest.skip(f"eBPF observer unavailable: {exc}")
    run = Engine(backend, [observer], profile="host").run(ExecutionSpec(argv=["true"], timeout=60))
    cov = run.receipt_data["observation"]["coverage"]
    assert cov["attached"]["before_start"] is True and cov["attached"]["how"] == "gated"
    [entry] = cov["attached"]["observers"]
    assert entry["observer"] == "ebpf" and str(run.result.root_pid) in entry["detail"]
    scope = cov["scope"]
    assert scope["root_pid"] == run.result.root_pid
    assert scope["cgroup"].startswith("/glasshouse/run-") and isinstance(scope["cgroup_id"], int)
    host_ns = os.stat("/proc/self/ns/pid").st_ino
    if isinstance(backend, GVisorBackend):
        assert scope["workload_start"] == "none" and scope["pid_namespace"] is None
        assert "sentry" in scope["note"]
    else:
        assert scope["workload_start"] == "launcher"
        sandbox_ns = run.receipt_data["environment"]["sandbox"]["details"]["pid_namespace"]
        assert scope["pid_namespace"] == sandbox_ns != host_ns
    Receipt.model_validate(run.receipt_data)


def test_an_observer_that_never_attached_is_stated() -> None:
    run = Engine(create("process"), [unavailable_observer("no BPF here")], profile="host").run(
        ExecutionSpec(argv=["true"])
    )
    attached = run.receipt_data["observation"]["coverage"]["attached"]
    assert attached["before_start"] is False and attached["how"] == "never"
    assert "no BPF here" in attached["observers"][0]["detail"]
    scope = run.receipt_data["observation"]["coverage"]["scope"]
    assert scope["workload_start"] == "root_exec" and scope["root_pid"] == run.result.root_pid
    assert scope["pid_namespace"] == os.stat("/proc/self/ns/pid").st_ino


def test_attached_late_is_a_coverage_reason() -> None:
    obs = Observation("ebpf", "host", attached=Attachment(False, "late", "attached after release"))
    data = build_receipt(
        execution_id="exec-x",
        spec=ExecutionSpec(argv=["true"]),
        result=ExecutionResult(exit_code=0, root_pid=1),
        observations=[obs],
        profile="host",
        backend=create("process"),
    )
    cov = data["observation"]["coverage"]
    assert "attached_late" in [r["code"] for r in cov["reasons"]]
    assert cov["attached"]["before_start"] is False and cov["status"] == "incomplete"
    Receipt.model_validate(data)


# -- model and in-toto --------------------------------------------------------------------------


def _receipt_data() -> dict[str, Any]:
    data = Engine(create("process")).run(ExecutionSpec(argv=["true"])).receipt_data
    data["artifacts"]["inputs"] = [
        {"path": "same.txt", "size": 1, "sha256": _sha(b"s")},
        {"path": "changed.txt", "size": 1, "sha256": _sha(b"c")},
    ]
    data["artifacts"]["workspace"] = {
        "collected": True,
        "reason": None,
        "root": "/workspace",
        "files": [
            {"path": "changed.txt", "kind": "file", "status": "modified", "size": 1,
             "sha256": _sha(b"C"), "unhashed": None, "target": None},
            {"path": "out.txt", "kind": "file", "status": "created", "size": 1,
             "sha256": _sha(b"o"), "unhashed": None, "target": None},
            {"path": "big", "kind": "file", "status": "created", "size": 10**9,
             "sha256": None, "unhashed": "file_cap", "target": None},
        ],
        "unhashed": 1, "hashed_bytes": 2, "file_cap": 1, "total_cap": 2,
    }  # fmt: skip
    data["filesystem"]["reads"] = ["/workspace/same.txt", "/workspace/changed.txt"]
    data["filesystem"]["writes"] = ["/workspace/out.txt", "/workspace/changed.txt", "/workspace/t"]
    return data


def test_in_toto_file_accesses_carry_the_digests() -> None:
    pred = runtime_trace_predicate(_receipt_data())
    assert predicate_problems(pred) == []
    by_access: dict[tuple[str, str], dict[str, Any]] = {}
    for d in pred["monitorLog"]["fileAccess"]:
        by_access[(d["annotations"]["access"], d.get("uri") or d["name"])] = d
    read_same = by_access[("read", "file:///workspace/same.txt")]
    assert read_same["digest"] == {"sha256": _sha(b"s")}
    assert read_same["annotations"]["digestOf"] == "input"
    # the run changed it: what was read is not known to be the input
    assert "digest" not in by_access[("read", "file:///workspace/changed.txt")]
    write = by_access[("write", "file:///workspace/changed.txt")]
    assert write["digest"] == {"sha256": _sha(b"C")}
    assert write["annotations"]["digestOf"] == "runEnd"
    assert "digest" not in by_access[("write", "file:///workspace/t")]  # gone at the end
    written = by_access[("written", "out.txt")]
    assert written["digest"] == {"sha256": _sha(b"o")}
    big = by_access[("written", "file:///workspace/big")]
    assert big["annotations"]["unhashed"] == "file_cap" and "digest" not in big


def test_the_model_keeps_older_receipts_digests() -> None:
    data = _receipt_data()
    Receipt.model_validate(data)
    older = copy.deepcopy(data)
    del older["artifacts"]["workspace"]
    del older["observation"]["coverage"]["attached"]
    del older["observation"]["coverage"]["scope"]
    older["digest"] = compute_digest(older)
    dumped = Receipt.model_validate(older).model_dump(mode="json")
    assert "workspace" not in dumped["artifacts"]
    assert "attached" not in dumped["observation"]["coverage"]
    assert compute_digest(dumped) == older["digest"]
    v030 = copy.deepcopy(data)
    v030["version"] = "v0.3.0"
    with pytest.raises(ValueError, match=r"v0\.4\.0 field"):
        Receipt.model_validate(v030)


def test_a_microvm_receipt_says_the_workspace_was_not_listed() -> None:
    from glasshouse.backends import microvm

    ok, why = microvm.probe()
    if not ok:
        pytest.skip(f"this host cannot boot microVM guests: {why}")
    vm = create("microvm")
    try:
        run = Engine(vm).run(ExecutionSpec(argv=["sh", "-c", "echo x > f"], timeout=60))
    finally:
        vm.close()  # type: ignore[attr-defined]
    data = run.receipt_data
    assert data["outcome"]["exit_code"] == 0, data["outcome"]
    ws = data["artifacts"]["workspace"]
    assert ws["collected"] is False and "guest does not send back" in ws["reason"]
    scope = data["observation"]["coverage"]["scope"]
    assert scope["root_pid"] == run.result.root_pid and scope["workload_start"] == "none"
    assert scope["pid_namespace"] is None and "VM guest" in scope["note"]
    Receipt.model_validate(data)
