"""The trust commands as a user runs them: keys, run --sign/--policy/--redact, verify,
verify-log, policy check, training export. Real runs through the process backend."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

POLICY = """\
name: demo
rules:
  - id: nonzero
    match: {outcome: {failed: true}}
  - id: no-public-egress
    severity: high
    match: {network: {cidr: [0.0.0.0/0, "::/0"]}}
"""
SECRET = "hunter2xyzZ9"


def gh(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with keys, a policy and a signed, redacted, judged receipt of a real run."""
    d = tmp_path_factory.mktemp("signed")
    p = gh("keys", "generate", "--out-dir", "keys", cwd=d)
    assert p.returncode == 0, p.stderr
    (d / "p.yaml").write_text(POLICY)
    p = gh(
        "run", "--redact", "--policy", "p.yaml", "--sign", "keys/glasshouse.key",
        "--", "sh", "-c", "echo hi; exit 3", "mysql", "--password", SECRET,
        cwd=d,
    )  # fmt: skip
    assert p.returncode == 3, p.stderr  # the command's exit code, policy or not
    assert p.stdout == "hi\n"
    assert "policy demo: 1 violation(s): nonzero" in p.stderr
    return d


def test_keys_generate_refuses_to_overwrite(signed: Path) -> None:
    assert (signed / "keys" / "glasshouse.key").stat().st_mode & 0o777 == 0o600
    p = gh("keys", "generate", "--out-dir", "keys", cwd=signed)
    assert p.returncode == 2 and "refusing to overwrite" in p.stderr


def test_run_writes_redacted_judged_sealed_receipt(signed: Path) -> None:
    raw = (signed / "receipt.json").read_text()
    rec = json.loads(raw)
    assert rec["policy"]["violations"] == ["nonzero"] and rec["policy"]["passed"] is False
    assert "nonzero: exit_code=3" in rec["filesystem"]["policy_violations"]
    assert rec["redaction"]["salt"] == "per-run"
    assert rec["outcome"]["exit_code"] == 3 and rec["digest"].startswith("sha256:")
    assert SECRET not in raw
    assert SECRET not in (signed / "receipt.dsse.json").read_text()
    assert (
        SECRET
        not in base64.b64decode(
            json.loads((signed / "receipt.dsse.json").read_text())["payload"]
        ).decode()
    )
    ebpf = [o for o in rec["observation"]["observers"] if o["available"]]
    if ebpf:  # the observer saw the argv: redaction must have replaced the password in it
        argvs = [a for node in rec["process_tree"] for a in node["argv"]]
        assert any(a.startswith("[REDACTED:") for a in argvs), argvs


def test_verify_ok_and_receipt_identical(signed: Path) -> None:
    p = gh(
        "verify", "receipt.dsse.json", "--key", "keys/glasshouse.pub",
        "--receipt", "receipt.json", cwd=signed,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("OK: receipt.dsse.json") and "identical" in p.stdout


def _tampered(signed: Path, name: str, change) -> str:
    env = json.loads((signed / "receipt.dsse.json").read_text())
    change(env)
    (signed / name).write_text(json.dumps(env))
    return name


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e.update(payload=e["payload"][:-8] + "AAAAAAA="), "bad signature"),
        (lambda e: e.update(payloadType="text/plain"), "wrong payload type"),
        (lambda e: e.update(signatures=[]), "missing signature"),
        (lambda e: e.pop("signatures"), "missing signature"),
    ],
    ids=["changed-byte", "payload-type", "no-signatures", "no-signature-field"],
)
def test_verify_says_why_it_fails(signed: Path, change, reason: str) -> None:
    name = _tampered(signed, f"bad-{reason.replace(' ', '-')}.json", change)
    p = gh("verify", name, "--key", "keys/glasshouse.pub", cwd=signed)
    assert p.returncode == 1
    assert p.stderr.startswith(f"INVALID: {name}: {reason}:"), p.stderr


def test_verify_wrong_key_and_changed_receipt(signed: Path, tmp_path: Path) -> None:
    assert gh("keys", "generate", "--out-dir", str(tmp_path), cwd=signed).returncode == 0
    p = gh("verify", "receipt.dsse.json", "--key", str(tmp_path / "glasshouse.pub"), cwd=signed)
    assert p.returncode == 1 and "wrong key" in p.stderr
    rec = json.loads((signed / "receipt.json").read_text())
    rec["outcome"]["exit_code"] = 0
    (tmp_path / "changed.json").write_text(json.dumps(rec))
    p = gh(
        "verify", "receipt.dsse.json", "--key", "keys/glasshouse.pub",
        "--receipt", str(tmp_path / "changed.json"), cwd=signed,
    )  # fmt: skip
    assert p.returncode == 1 and "receipt mismatch" in p.stderr
    assert "outcome.exit_code" in p.stderr


def test_verify_usage_errors_exit_2(signed: Path) -> None:
    assert gh("verify", "receipt.dsse.json", cwd=signed).returncode == 2
    assert gh("verify", "absent.json", "--key", "keys/glasshouse.pub", cwd=signed).returncode == 2
    p = gh("verify", "receipt.dsse.json", "--key", "p.yaml", cwd=signed)
    assert p.returncode == 2 and "not a PEM" in p.stderr


def test_bad_options_fail_before_the_command_runs(signed: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: x\n    match: {all: []}\n")
    marker = tmp_path / "ran"
    for opts in (["--policy", "bad.yaml"], ["--sign", "bad.yaml"]):
        p = gh("run", *opts, "--", "touch", str(marker), cwd=tmp_path)
        assert p.returncode == 2, p.stderr
        assert not marker.exists()
    p = gh("run", "--policy", "bad.yaml", "--", "true", cwd=tmp_path)
    assert "bad.yaml:3" in p.stderr and "empty 'all'" in p.stderr


def test_policy_check_exit_codes(signed: Path, tmp_path: Path) -> None:
    p = gh("policy", "check", "--policy", "p.yaml", "receipt.json", cwd=signed)
    assert p.returncode == 1 and "violation: nonzero [medium]" in p.stdout
    assert "/outcome/exit_code: exit_code=3" in p.stdout
    (tmp_path / "ok.yaml").write_text("rules:\n  - {id: t, match: {outcome: {timed_out: true}}}\n")
    p = gh("policy", "check", "--policy", str(tmp_path / "ok.yaml"), "receipt.json", cwd=signed)
    assert p.returncode == 0 and p.stdout.startswith("PASS")
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: x\n    match:\n      network: {port: x}\n")
    p = gh("policy", "check", "--policy", str(tmp_path / "bad.yaml"), "receipt.json", cwd=signed)
    assert p.returncode == 2 and "bad.yaml:4" in p.stderr and "not a port" in p.stderr
    p = gh("policy", "check", "--policy", "p.yaml", "--json", "receipt.json", cwd=signed)
    assert json.loads(p.stdout)["violations"] == ["nonzero"]


def test_verify_log_and_training_export(tmp_path: Path) -> None:
    from trust_helpers import real_receipt

    from glasshouse.receipt.log import ReceiptLog
    from glasshouse.receipt.model import Receipt

    log = ReceiptLog(tmp_path / "log")
    ids = [
        log.append(Receipt.model_validate(real_receipt(["sh", "-c", f"exit {i}"]))).execution_id
        for i in range(3)
    ]
    p = gh("verify-log", "log", cwd=tmp_path)
    assert p.returncode == 0 and "OK, 3 receipts" in p.stdout
    p = gh("training", "export", "log", "--out", "s.jsonl", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    labels = [json.loads(x)["label"] for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert labels == ["success", "failure", "failure"]
    (tmp_path / "log" / f"{ids[1]}.json").unlink()
    p = gh("verify-log", "log", cwd=tmp_path)
    assert p.returncode == 1 and f"deleted: {ids[1]} (sequence 1)" in p.stdout
    p = gh("verify-log", "--json", "log", cwd=tmp_path)
    assert json.loads(p.stdout)["problems"][0]["kind"] == "deleted"
    assert gh("verify-log", "nowhere", cwd=tmp_path).returncode == 2


def test_verify_log_with_key(tmp_path: Path) -> None:
    from trust_helpers import real_receipt

    from glasshouse.receipt.log import ReceiptLog
    from glasshouse.receipt.model import Receipt
    from glasshouse.receipt.sign import load_private_key

    assert gh("keys", "generate", "--out-dir", "k", cwd=tmp_path).returncode == 0
    log = ReceiptLog(tmp_path / "log", signing_key=load_private_key(tmp_path / "k/glasshouse.key"))
    ids = [log.append(Receipt.model_validate(real_receipt(["true"]))).execution_id for _ in "ab"]
    p = gh("verify-log", "log", "--key", "k/glasshouse.pub", cwd=tmp_path)
    assert p.returncode == 0, p.stdout
    (tmp_path / "log" / f"{ids[0]}.dsse.json").unlink()
    p = gh("verify-log", "log", "--key", "k/glasshouse.pub", cwd=tmp_path)
    assert p.returncode == 1 and f"unsigned: {ids[0]} (sequence 0)" in p.stdout


def test_policy_validate(signed: Path, tmp_path: Path) -> None:
    p = gh("policy", "validate", "p.yaml", cwd=signed)
    assert p.returncode == 0 and "policy demo, 2 rule(s), sha256:" in p.stdout
    assert "nonzero: deny [medium] (line 3)" in p.stdout
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: a\n    match: {not: {}}\n")
    p = gh("policy", "validate", str(tmp_path / "bad.yaml"), cwd=signed)
    assert p.returncode == 2 and "bad.yaml:3" in p.stderr and "exactly one key" in p.stderr


def test_policy_check_notes_lost_events(signed: Path, tmp_path: Path) -> None:
    rec = json.loads((signed / "receipt.json").read_text())
    rec["observation"]["events_lost"] = 3
    (tmp_path / "lossy.json").write_text(json.dumps(rec))
    p = gh("policy", "check", "--policy", "p.yaml", str(tmp_path / "lossy.json"), cwd=signed)
    assert p.returncode == 1 and "the observer lost 3 event(s)" in p.stdout
    assert "digest does not match its content" in p.stdout
    p = gh("policy", "check", "--policy", "p.yaml", "receipt.json", cwd=signed)
    assert "digest does not match" not in p.stdout
