"""Receipt model, committed JSON Schema, RFC 8785 canonical JSON, digests, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from glasshouse.backends import create
from glasshouse.cli._receipt import receipt_schema
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine
from glasshouse.receipt.canonical import canonical_json, check_digest, compute_digest
from glasshouse.receipt.log import ReceiptLog
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.store import ReceiptError, load_receipt, write_atomic, write_receipt

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "receipt-v0.3.0.schema.json"

SEED_RECEIPT = {  # seed 003's example, verbatim field names
    "version": "v0.3.0",
    "execution_id": "exec-1",
    "provenance": "host",
    "timestamp": "2026-01-16T18:00:00Z",
    "outcome": {"exit_code": 0, "signal": None, "error": None},
    "timing": {"duration_ms": 312, "cpu_time_ms": 3},
    "process_tree": [
        {
            "pid": 123,
            "ppid": 1,
            "exe": "/usr/bin/python3",
            "argv": ["python3", "demo/sneaky.py"],
            "working_dir": "/work",
        }
    ],
    "filesystem": {
        "reads": ["/work/input.txt"],
        "writes": ["/work/output.txt"],
        "deletes": [],
        "policy_violations": [],
    },
    "network": {
        "attempts": [{"dst": "1.2.3.4:443", "protocol": "tcp", "result": "attempted"}],
        "bytes_sent": 0,
        "bytes_received": 0,
    },
    "syscalls": {"counts": {}, "denied": []},
    "resources": {"max_rss_kb": 8124, "cpu_time_ms": 3},
    "environment": {
        "runtime": "python3.x",
        "os": "linux",
        "arch": "amd64",
        "sandbox": {"network": "enabled"},
    },
    "execution": {"backend": "process", "isolation": "none"},
    "artifacts": {"stdout_hash": "<sha256>", "stderr_hash": "<sha256>"},
    "observation": {"profile": "host"},
    "exit_code": 0,
    "duration_ms": 312,
    "processes": [{"pid": 123, "ppid": 1, "cmd": "python3 demo/sneaky.py"}],
}


def test_committed_schema_matches_model() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == receipt_schema(), (
        "schemas/ is stale: run `glasshouse schema --out schemas/receipt-v0.3.0.schema.json`"
    )


def test_seed_example_validates_against_model_and_schema() -> None:
    Receipt.model_validate(SEED_RECEIPT)
    jsonschema.validate(SEED_RECEIPT, json.loads(SCHEMA.read_text()))


def test_unknown_field_is_rejected() -> None:
    bad = {**SEED_RECEIPT, "surprise": 1}
    with pytest.raises(Exception, match="surprise"):
        Receipt.model_validate(bad)


@pytest.mark.parametrize("profile", ["disabled", "host"])
def test_engine_receipts_validate_against_schema(profile: str) -> None:
    run = Engine(create("process"), profile=profile).run(ExecutionSpec(["sh", "-c", "echo hi"]))
    jsonschema.validate(run.receipt_data, json.loads(SCHEMA.read_text()))
    assert run.receipt.version == "v0.3.0"
    for legacy in ("exit_code", "duration_ms", "processes"):
        assert legacy in run.receipt_data


# RFC 8785 section 3.2.2 (sample input and its canonical form) and appendix B (numbers).
RFC_INPUT = (
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
    ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
    ' "literals": [null, true, false]}'
)
RFC_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)


def test_rfc8785_sample() -> None:
    assert canonical_json(json.loads(RFC_INPUT)) == RFC_OUTPUT.encode()


def test_rfc8785_property_order_is_utf16() -> None:
    data = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew",
        "1": "One",
        "\U0001f600": "Emoji",
        "\u0080": "Control",
        "\u00f6": "o",
    }
    keys = list(json.loads(canonical_json(data)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"),
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (123456789012345680000.0, "123456789012345680000"),
    ],
)
def test_rfc8785_numbers(value: float, text: str) -> None:
    assert canonical_json(value) == text.encode()


def test_digest_detects_any_change(tmp_path: Path) -> None:
    run = Engine(create("process")).run(ExecutionSpec(["true"]))
    sealed = write_receipt(run.receipt_data, tmp_path / "r.json")
    loaded = load_receipt(tmp_path / "r.json")
    assert check_digest(loaded) and loaded.digest == sealed["digest"]
    tampered = loaded.model_copy(update={"exit_code": 1})
    assert not check_digest(tampered)
    assert compute_digest(tampered) != loaded.digest


def test_written_receipt_is_canonical(tmp_path: Path) -> None:
    run = Engine(create("process")).run(ExecutionSpec(["true"]))
    write_receipt(run.receipt_data, tmp_path / "r.json")
    raw = (tmp_path / "r.json").read_bytes()
    assert raw == canonical_json(json.loads(raw)) + b"\n"


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "r.json"
    write_atomic(target, b"old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_load_errors_are_readable(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ReceiptError, match="not JSON"):
        load_receipt(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"version": "v0.3.0"}')
    with pytest.raises(ReceiptError, match=r"not a v0\.3\.0 receipt"):
        load_receipt(tmp_path / "y.json")
    with pytest.raises(ReceiptError, match="cannot read"):
        load_receipt(tmp_path / "missing.json")


def test_receipt_log_links_each_receipt_to_the_previous(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path)
    engine = Engine(create("process"))
    stored = [log.append(engine.run(ExecutionSpec(["true"])).receipt) for _ in range(3)]
    assert [r.sequence for r in stored] == [0, 1, 2]
    assert stored[0].previous_digest is None
    assert stored[1].previous_digest == stored[0].digest
    assert stored[2].previous_digest == stored[1].digest
    assert all(check_digest(log.get(r.execution_id)) for r in stored)
    (tmp_path / "HEAD").unlink()  # lost HEAD: rebuilt from the files
    assert log.head() == (3, stored[2].digest)
    with pytest.raises(ValueError):
        log.path_for("../../etc/passwd")
    with pytest.raises(ValueError):  # "$" alone would accept a trailing newline
        log.path_for(stored[0].execution_id + "\n")
