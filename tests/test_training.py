"""Training export: records, labels, first-seen behaviours, determinism, schema."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import jsonschema
import pytest
from trust_helpers import real_receipt

from glasshouse.core.execution import new_execution_id
from glasshouse.policy import parse_policy
from glasshouse.receipt.canonical import seal_data
from glasshouse.receipt.log import ReceiptLog
from glasshouse.receipt.model import Receipt
from glasshouse.training import ExportError, export, label_for, record_for
from glasshouse.training.export import exec_category, file_category, net_category

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "schemas" / "training-record-v1.schema.json").read_text()
)


def _observed(base: dict) -> dict:
    data = copy.deepcopy(base)
    data["execution_id"] = new_execution_id()
    data["process_tree"] = [
        {
            "pid": 1,
            "ppid": 0,
            "exe": "/usr/bin/python3.11",
            "argv": ["python3"],
            "working_dir": "/w",
        },
        {"pid": 2, "ppid": 1, "exe": "/usr/bin/curl", "argv": ["curl", "http://x"]},
        {"pid": 3, "ppid": 1, "exe": "/bin/bash", "argv": ["bash"]},
    ]
    data["filesystem"].update(
        reads=["/etc/hosts", "/w/in.txt", "rel.txt", "/usr/lib/x.so"],
        writes=["/tmp/a", "/w/out"],
        deletes=["/home/u/.bashrc"],
    )
    data["network"]["attempts"] = [
        {"dst": "127.0.0.1:80", "protocol": "tcp", "result": "connected"},
        {"dst": "10.1.2.3:53", "protocol": "udp", "result": "attempted"},
        {"dst": "8.8.8.8:443", "protocol": "tcp", "result": "attempted"},
    ]
    data["filesystem"]["failed"] = [{"op": "openat", "path": "/etc/shadow", "errno": "EACCES"}]
    data["syscalls"]["counts"] = {"openat": 10, "clone": 2}
    return data


@pytest.fixture(scope="module")
def receipts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of real receipts (success, failure, timeout, not found) plus an observed one."""
    d = tmp_path_factory.mktemp("receipts")
    log = ReceiptLog(d)
    runs = [
        (["true"], {}),
        (["sh", "-c", "exit 3"], {}),
        (["sleep", "5"], {"timeout": 0.3}),
        (["/nonexistent/binary"], {}),
    ]
    base = None
    for argv, kw in runs:
        data = real_receipt(argv, **kw)
        base = base or data
        log.append(Receipt.model_validate(data))
    log.append(Receipt.model_validate(_observed(base)))
    (d / "garbage.json").write_text("{nope")
    (d / "other.json").write_text('{"version": "v9"}')
    return d


def _export(d: Path, **kw) -> tuple[list[dict], object]:
    buf = io.StringIO()
    stats = export(d, buf, **kw)
    return [json.loads(line) for line in buf.getvalue().splitlines()], stats


def test_export_records_validate_and_label(receipts: Path) -> None:
    records, stats = _export(receipts)
    assert stats.records == 5 and stats.skipped == 2
    for r in records:
        jsonschema.validate(r, SCHEMA)
    labels = [r["label"] for r in records]
    assert labels[:4] == ["success", "failure", "timeout", "failure"]
    assert [r["reward"] for r in records[:3]] == [1.0, 0.0, -0.5]
    assert [r["sequence"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r["receipt_digest"].startswith("sha256:") for r in records)
    assert all(r["command_hash"] for r in records)


def test_counts_by_category(receipts: Path) -> None:
    rec = _export(receipts)[0][-1]
    c = rec["counts"]
    assert c["execs"] == {
        "total": 3, "shell": 1, "interpreter": 1, "network_tool": 1,
        "package_manager": 0, "compiler": 0, "privilege": 0, "other": 0,
    }  # fmt: skip
    assert c["files"]["read"]["config"] == 1 and c["files"]["read"]["workspace"] == 2
    assert c["files"]["read"]["system"] == 1
    assert c["files"]["write"] == {
        **dict.fromkeys(c["files"]["write"], 0),
        "temp": 1,
        "workspace": 1,
    }
    assert c["files"]["delete"]["home"] == 1
    assert c["files"]["failed"]["config"] == 1 and "file:failed:config" in rec["first_seen"]
    assert c["network"] == {
        "total": 3, "loopback": 1, "private": 1, "public": 1, "other": 0, "tcp": 2, "udp": 1
    }  # fmt: skip
    assert c["syscalls"] == 12
    assert "net:public:tcp/443" in rec["first_seen"] and "exec:curl" in rec["first_seen"]


def test_first_seen_only_once(tmp_path: Path, receipts: Path) -> None:
    base = json.loads(next(receipts.glob("exec-*.json")).read_text())
    for _ in range(2):
        data = seal_data({**_observed(base), "digest": None, "sequence": None})
        (tmp_path / f"{data['execution_id']}.json").write_text(json.dumps(data))
    first, second = _export(tmp_path)[0]
    assert "exec:curl" in first["first_seen"]
    assert second["first_seen"] == []


def test_export_is_deterministic(receipts: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    export(receipts, a)
    export(receipts, b)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_policy_verdict_and_violation_label(receipts: Path) -> None:
    policy = parse_policy("rules:\n  - {id: no-curl, match: {exec: {path: '**/curl'}}}\n")
    records, _ = _export(receipts, policy=policy)
    observed = records[-1]
    assert observed["policy"] == {
        "evaluated": True, "name": "policy", "passed": False,
        "violations": ["no-curl"], "warnings": [],
    }  # fmt: skip
    assert observed["label"] == "violation" and observed["reward"] == -1.0
    assert records[0]["policy"]["passed"] is True
    assert _export(receipts)[0][0]["policy"]["evaluated"] is False


def test_verdict_in_receipt_is_used(receipts: Path) -> None:
    data = json.loads(next(receipts.glob("exec-*.json")).read_text())
    data["policy"] = {"policy": "p", "passed": False, "violations": ["x"], "warnings": []}
    rec = record_for(data)
    assert rec["policy"]["passed"] is False and rec["label"] == "violation"


def test_error_label_excludes_infrastructure_failures() -> None:
    assert label_for({"error": "backend down", "exit_code": None}, None) == "error"
    assert label_for({"error": "not found", "exit_code": 127}, None) == "failure"
    assert label_for({"timed_out": True, "exit_code": None, "signal": 9}, True) == "timeout"
    assert label_for({"exit_code": 0}, False) == "violation"


def test_categories() -> None:
    assert exec_category("/usr/bin/python3.12") == "interpreter"
    assert exec_category(None, "pip3") == "package_manager"
    assert exec_category("/opt/x/thing") == "other"
    assert file_category("/w/a", "/w") == "workspace" and file_category("/wx", "/w") == "other"
    assert file_category("/proc/self/maps", None) == "proc"
    assert (
        file_category("/dev/shm/x", None) == "temp" and file_category("/dev/null", None) == "device"
    )
    assert file_category("/var/lib/dpkg/s", None) == "system"
    assert file_category("/var/log/syslog", None) == "other" and file_category("/", None) == "other"
    assert net_category("[::1]:80") == "loopback" and net_category("unix:/x") == "other"
    assert net_category("192.168.1.1:1") == "private" and net_category("1.1.1.1:53") == "public"


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="cannot read"):
        export(tmp_path / "absent", io.StringIO())
    with pytest.raises(ExportError, match="unknown format"):
        export(tmp_path, tmp_path / "x", fmt="csv")


def test_parquet(receipts: Path, tmp_path: Path) -> None:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        with pytest.raises(ExportError, match="pyarrow"):
            export(receipts, tmp_path / "s.parquet", fmt="parquet")
        pytest.skip("pyarrow is not installed: the parquet path reports it (checked above)")
    export(receipts, tmp_path / "s.parquet", fmt="parquet")
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.num_rows == 5
    assert table.column("label").to_pylist()[:3] == ["success", "failure", "timeout"]
