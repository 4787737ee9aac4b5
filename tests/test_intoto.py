"""Receipts as in-toto runtime-trace attestations (predicate v0.1): the mapping, its signature
and verification, and `glasshouse receipt export` + `glasshouse verify` as a user runs them.

The inputs are receipts of real runs (process backend; the sandbox where it is available, for
files given to and taken out of a run). The spec repository has no JSON Schema for the
predicate: ``REQUIRED`` lists the fields its "Fields" section marks required.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from glasshouse.receipt import dsse
from glasshouse.receipt.canonical import compute_digest
from glasshouse.receipt.intoto import (
    PREDICATE_TYPE,
    file_uri,
    runtime_trace_statement,
    sign_runtime_trace,
    statement_problems,
)
from glasshouse.receipt.sign import (
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    VerificationError,
    subjects,
    verify_attestation,
    verify_envelope,
)

#: spec/predicates/runtime-trace.md (v0.1), "Fields": every field marked _required_.
REQUIRED = [
    ("monitor",),
    ("monitor", "type"),
    ("monitoredProcess",),
    ("monitoredProcess", "hostID"),
    ("monitoredProcess", "type"),
    ("monitoredProcess", "event"),
    ("monitorLog",),
]
#: the optional fields it names (a producer may leave them out; ours sets these).
OPTIONAL_SET = [
    ("monitor", "tracePolicy"),
    ("monitorLog", "process"),
    ("monitorLog", "network"),
    ("monitorLog", "fileAccess"),
    ("metadata",),
    ("metadata", "buildStartedOn"),
    ("metadata", "buildFinishedOn"),
]
SCRIPT = """
import socket, sys
open("made.txt", "w").write("made\\n")
open("made.txt").read()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.close()
"""


@pytest.fixture(scope="module")
def server() -> socket.socket:
    """A loopback TCP listener the runs connect to."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s
    s.close()


@pytest.fixture(scope="module")
def receipt(server: socket.socket, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sealed receipt `glasshouse run` writes (process backend, host observer when the
    host has one) for a command that writes and reads a file and connects to ``server``."""
    cwd = tmp_path_factory.mktemp("run")
    port = str(server.getsockname()[1])
    p = gh("run", "-q", "--", sys.executable, "-c", SCRIPT, port, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return json.loads((cwd / "receipt.json").read_text())


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _observed(receipt: dict, section: str) -> bool:
    return section in receipt["observation"]["collected"]


def _kind(envelope: dict, key, **kw) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        verify_attestation(envelope, key, **kw)
    return info.value


def _resign(statement: dict, key: Ed25519PrivateKey) -> dict:
    body = json.dumps(statement).encode()
    return dsse.sign(PAYLOAD_TYPE, body, key).to_dict()


# -- the mapping ------------------------------------------------------------------------------


def test_statement_has_every_field_the_predicate_requires(receipt: dict) -> None:
    stmt = runtime_trace_statement(receipt)
    assert stmt["_type"] == STATEMENT_TYPE and stmt["predicateType"] == PREDICATE_TYPE
    assert statement_problems(stmt) == []
    for path in REQUIRED + OPTIONAL_SET:
        node = stmt["predicate"]
        for name in path:
            assert name in node, ".".join(path)
            node = node[name]
    assert json.loads(json.dumps(stmt)) == stmt  # plain JSON


@pytest.mark.parametrize("path", REQUIRED, ids=lambda p: ".".join(p))
def test_a_missing_required_field_is_named(receipt: dict, path: tuple[str, ...]) -> None:
    stmt = copy.deepcopy(runtime_trace_statement(receipt))
    parent = stmt["predicate"]
    for name in path[:-1]:
        parent = parent[name]
    del parent[path[-1]]
    problems = statement_problems(stmt)
    assert problems and problems[0].startswith(".".join(path)), problems


def test_monitor_log_must_carry_one_list_and_timestamps_must_be_utc(receipt: dict) -> None:
    stmt = copy.deepcopy(runtime_trace_statement(receipt))
    stmt["predicate"]["monitorLog"] = {}
    stmt["predicate"]["metadata"]["buildStartedOn"] = "2026-12-03 10:00:00+01:00"
    problems = statement_problems(stmt)
    assert any("at least one of process, network and fileAccess" in p for p in problems)
    assert any(p.startswith("metadata.buildStartedOn") for p in problems)
    stmt = copy.deepcopy(runtime_trace_statement(receipt))
    stmt["predicate"]["monitorLog"]["fileAccess"].append({"name": "no uri, digest or content"})
    assert any("needs one of uri, digest and content" in p for p in statement_problems(stmt))


def test_subjects_are_our_own_statements(receipt: dict) -> None:
    stmt = runtime_trace_statement(receipt)
    assert stmt["subject"] == subjects(receipt)
    assert [s["name"] for s in stmt["subject"]][:1] == ["command"]


def test_processes_network_and_files_as_observed(receipt: dict, server: socket.socket) -> None:
    log = runtime_trace_statement(receipt)["predicate"]["monitorLog"]
    tree = receipt["process_tree"]
    assert [(p["pid"], p.get("processBinary"), p.get("arguments", [])) for p in log["process"]] == [
        (n["pid"], n["exe"], n["argv"]) for n in tree
    ]
    if not _observed(receipt, "filesystem"):
        pytest.skip(f"no host observer: {receipt['observation']['missing']}")
    made = [w for w in receipt["filesystem"]["writes"] if w.endswith("/made.txt")]
    assert made, receipt["filesystem"]["writes"]
    accesses = {(f.get("uri"), f["annotations"]["access"]) for f in log["fileAccess"]}
    assert (file_uri(made[0]), "write") in accesses
    assert (file_uri(made[0]), "read") in accesses
    assert len(log["fileAccess"]) >= sum(
        len(receipt["filesystem"][k]) for k in ("reads", "writes", "deletes", "mkdirs")
    )
    port = server.getsockname()[1]
    connects = [n for n in log["network"] if n["eventType"] == "connect"]
    assert {"ip": "127.0.0.1", "port": port, "protocol": "tcp"}.items() <= connects[0].items()
    assert connects[0]["invokingProcess"]["pid"] in {n["pid"] for n in tree}


def test_metadata_ties_the_trace_to_the_receipt(receipt: dict) -> None:
    meta = runtime_trace_statement(receipt)["predicate"]["metadata"]
    assert meta["buildStartedOn"] == receipt["timing"]["started_at"]
    assert meta["buildFinishedOn"] == receipt["timing"]["ended_at"]
    ours = meta["glasshouse"]
    assert ours["receipt"]["digest"] == receipt["digest"] == compute_digest(receipt)
    assert ours["receipt"]["executionId"] == receipt["execution_id"]
    assert ours["outcome"]["exitCode"] == receipt["outcome"]["exit_code"] == 0
    assert ours["coverage"]["eventsLost"] == receipt["observation"]["events_lost"]
    assert ours["coverage"]["collected"] == receipt["observation"]["collected"]


def test_digests_of_inputs_outputs_and_other_artifact_lists(receipt: dict) -> None:
    """Every artifacts list entry with path, size and sha256 is a descriptor with its digest;
    an output that was not taken out (no content) is not a file access."""
    data = copy.deepcopy(receipt)
    given, made = b"input bytes\n", b"made\n"
    data["artifacts"]["inputs"] = [
        {"path": "in.txt", "size": len(given), "sha256": hashlib.sha256(given).hexdigest()}
    ]
    data["artifacts"]["outputs"] = [
        {"path": "made.txt", "status": "copied", "size": len(made), "reason": None,
         "sha256": hashlib.sha256(made).hexdigest()},
        {"path": "gone.txt", "status": "skipped", "size": None, "sha256": None,
         "reason": "missing"},
    ]  # fmt: skip
    data["artifacts"]["workspace_writes"] = [
        {"path": "made.txt", "size": len(made), "sha256": hashlib.sha256(made).hexdigest()}
    ]
    data["digest"] = compute_digest(data)
    files = runtime_trace_statement(data)["predicate"]["monitorLog"]["fileAccess"]
    digested = [(f["name"], f["digest"]["sha256"], f["annotations"]) for f in files if "name" in f]
    assert digested == [
        ("in.txt", hashlib.sha256(given).hexdigest(), {"access": "input", "size": 12}),
        ("made.txt", hashlib.sha256(made).hexdigest(), {"access": "output", "size": 5}),
        ("made.txt", hashlib.sha256(made).hexdigest(), {"access": "workspaceWrites", "size": 5}),
    ]
    assert not any(f.get("name") == "gone.txt" for f in files)


def test_the_statement_does_not_depend_on_json_key_order(receipt: dict) -> None:
    resorted = json.loads(json.dumps(receipt, sort_keys=True))
    backwards = json.loads(json.dumps(dict(reversed(list(resorted.items())))))
    for section in ("artifacts", "filesystem", "network"):
        backwards[section] = dict(reversed(list(backwards[section].items())))
    assert runtime_trace_statement(backwards) == runtime_trace_statement(receipt)


def test_file_uris_are_percent_encoded() -> None:
    assert file_uri("/workspace/a b%.txt") == "file:///workspace/a%20b%25.txt"
    assert file_uri("/tmp/\u00e9") == "file:///tmp/%C3%A9"


# -- signing and verification -----------------------------------------------------------------


def test_signed_trace_verifies_and_says_its_predicate(receipt: dict, key) -> None:
    envelope = sign_runtime_trace(receipt, key)
    assert envelope["payloadType"] == PAYLOAD_TYPE
    assert envelope == sign_runtime_trace(receipt, key)  # deterministic
    verified = verify_attestation(envelope, key.public_key())
    assert verified.predicate_type == PREDICATE_TYPE
    assert verified.keyid == dsse.keyid(key.public_key())
    assert verified.execution_id == receipt["execution_id"]
    assert verified.statement == runtime_trace_statement(receipt)
    again = verify_attestation(envelope, key.public_key(), receipt=receipt)
    assert again.receipt == receipt


def test_verify_envelope_still_accepts_only_receipts(receipt: dict, key) -> None:
    with pytest.raises(VerificationError) as info:
        verify_envelope(sign_runtime_trace(receipt, key), key.public_key())
    assert info.value.kind == "wrong_payload_type"


def test_every_changed_payload_byte_is_detected(receipt: dict, key) -> None:
    envelope = sign_runtime_trace(receipt, key)
    body = base64.b64decode(envelope["payload"])
    for i in range(0, len(body), max(1, len(body) // 40)):
        changed = bytearray(body)
        changed[i] ^= 0x01
        bad = dict(envelope, payload=base64.b64encode(bytes(changed)).decode())
        assert _kind(bad, key.public_key()).kind == "bad_signature", i


def test_wrong_key_and_missing_signature(receipt: dict, key) -> None:
    envelope = sign_runtime_trace(receipt, key)
    other = Ed25519PrivateKey.generate().public_key()
    assert _kind(envelope, other).kind == "wrong_key"
    assert _kind(dict(envelope, signatures=[]), key.public_key()).kind == "missing_signature"


def test_signed_statement_without_a_required_field_is_refused(receipt: dict, key) -> None:
    stmt = copy.deepcopy(runtime_trace_statement(receipt))
    del stmt["predicate"]["monitoredProcess"]["event"]
    error = _kind(_resign(stmt, key), key.public_key())
    assert error.kind == "bad_statement" and "monitoredProcess.event" in error.message


def test_receipt_that_does_not_give_the_trace_is_named(receipt: dict, key) -> None:
    envelope = sign_runtime_trace(receipt, key)
    changed = copy.deepcopy(receipt)
    changed["outcome"]["exit_code"] = 7
    error = _kind(envelope, key.public_key(), receipt=changed)
    assert error.kind == "receipt_mismatch" and "digest does not match" in error.message
    changed["digest"] = compute_digest(changed)  # resealed: still not the signed trace
    error = _kind(envelope, key.public_key(), receipt=changed)
    assert error.kind == "receipt_mismatch"
    assert "predicate.metadata.glasshouse.outcome.exitCode" in error.message


# -- the command line -------------------------------------------------------------------------


def gh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_run_export_verify_and_tamper(tmp_path: Path) -> None:
    assert gh("keys", "generate", "--out-dir", "keys", cwd=tmp_path).returncode == 0
    p = gh(
        "run", "-q", "--sign", "keys/glasshouse.key", "--", "sh", "-c", "echo hi > f.txt",
        cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    p = gh(
        "receipt", "export", "--format", "in-toto-runtime-trace", "receipt.json",
        "--sign", "keys/glasshouse.key", "--out", "trace.dsse.json", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0 and p.stdout == "", p.stderr
    p = gh("verify", "trace.dsse.json", "--key", "keys/glasshouse.pub", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("OK: trace.dsse.json: runtime trace of run exec-")
    assert f"predicate: {PREDICATE_TYPE}" in p.stdout and "monitorLog:" in p.stdout
    p = gh(
        "verify", "trace.dsse.json", "--key", "keys/glasshouse.pub", "--receipt",
        "receipt.json", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0 and "receipt.json gives exactly this trace" in p.stdout, p.stderr
    # our own predicate: still what `run --sign` writes, and verify says so
    p = gh("verify", "receipt.dsse.json", "--key", "keys/glasshouse.pub", cwd=tmp_path)
    assert p.returncode == 0 and "predicate: https://glasshouse.dev/receipt/v0.4.0" in p.stdout
    # tamper one byte of the signed statement
    env = json.loads((tmp_path / "trace.dsse.json").read_text())
    body = bytearray(base64.b64decode(env["payload"]))
    body[len(body) // 2] ^= 0x01
    env["payload"] = base64.b64encode(bytes(body)).decode()
    (tmp_path / "tampered.json").write_text(json.dumps(env))
    p = gh("verify", "tampered.json", "--key", "keys/glasshouse.pub", cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr.startswith("INVALID: tampered.json: bad signature:"), p.stderr


def test_cli_export_default_is_our_own_predicate(tmp_path: Path) -> None:
    assert gh("keys", "generate", "--out-dir", "keys", cwd=tmp_path).returncode == 0
    p = gh("run", "-q", "--sign", "keys/glasshouse.key", "--", "true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = gh("receipt", "export", "receipt.json", "--sign", "keys/glasshouse.key", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == json.loads((tmp_path / "receipt.dsse.json").read_text())
    p = gh("receipt", "export", "--format", "in-toto-runtime-trace", "receipt.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert statement_problems(json.loads(p.stdout)) == []


def test_cli_export_refuses_a_modified_receipt(tmp_path: Path) -> None:
    assert gh("run", "-q", "--", "true", cwd=tmp_path).returncode == 0
    data = json.loads((tmp_path / "receipt.json").read_text())
    data["outcome"]["exit_code"] = 9
    (tmp_path / "changed.json").write_text(json.dumps(data))
    p = gh("receipt", "export", "--format", "in-toto-runtime-trace", "changed.json", cwd=tmp_path)
    assert p.returncode == 2 and "digest does not match" in p.stderr and p.stdout == ""
    p = gh("receipt", "export", "absent.json", cwd=tmp_path)
    assert p.returncode == 2


def test_cli_verify_receipt_that_is_not_an_object_is_a_usage_error(tmp_path: Path) -> None:
    assert gh("keys", "generate", "--out-dir", "keys", cwd=tmp_path).returncode == 0
    assert (
        gh("run", "-q", "--sign", "keys/glasshouse.key", "--", "true", cwd=tmp_path).returncode == 0
    )
    p = gh(
        "receipt", "export", "--format", "in-toto-runtime-trace", "receipt.json",
        "--sign", "keys/glasshouse.key", "--out", "trace.dsse.json", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    (tmp_path / "list.json").write_text("[1]")
    for envelope in ("receipt.dsse.json", "trace.dsse.json"):
        p = gh(
            "verify", envelope, "--key", "keys/glasshouse.pub", "--receipt", "list.json",
            cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 2 and "list.json: not a JSON receipt" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


@pytest.mark.root
def test_sandbox_inputs_and_outputs_carry_their_digests(tmp_path: Path) -> None:
    from glasshouse.backends import sandbox

    ok, why = sandbox.probe()
    if not ok:
        pytest.skip(why)
    (tmp_path / "in.txt").write_bytes(b"input bytes\n")
    p = gh(
        "run", "-q", "--backend", "sandbox", "--file", "in.txt", "--output", "out.txt",
        "--output-dir", "outs", "--", "sh", "-c", "cat in.txt in.txt > out.txt",
        cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    p = gh("receipt", "export", "--format", "in-toto-runtime-trace", "receipt.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    files = json.loads(p.stdout)["predicate"]["monitorLog"]["fileAccess"]
    digested = {f["annotations"]["access"]: f for f in files if "digest" in f}
    out = (tmp_path / "outs" / "out.txt").read_bytes()
    assert out == b"input bytes\n" * 2
    assert digested["input"]["name"] == "in.txt"
    assert digested["input"]["digest"]["sha256"] == hashlib.sha256(b"input bytes\n").hexdigest()
    assert digested["output"]["name"] == "out.txt"
    assert digested["output"]["digest"]["sha256"] == hashlib.sha256(out).hexdigest()
    assert digested["output"]["annotations"]["size"] == len(out)
