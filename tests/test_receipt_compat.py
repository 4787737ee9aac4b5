"""Receipt v0.4.0 beside v0.3.0: receipts written by the v0.3.0 code (tests/fixtures) still
load, show, verify (digest, signature, a log mixing both versions) and export; v0.4.0 is
what is written; a v0.3.0 receipt cannot carry v0.4.0 fields."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import jsonschema
import pytest
from trust_helpers import real_receipt

from glasshouse.core.version import RECEIPT_VERSION, RECEIPT_VERSIONS
from glasshouse.receipt.canonical import check_digest, compute_digest
from glasshouse.receipt.log import ReceiptLog
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.sign import (
    VerificationError,
    load_private_key,
    load_public_key,
    predicate_type,
    sign_receipt,
    verify_envelope,
)
from glasshouse.receipt.store import ReceiptError, load_receipt, parse_receipt
from glasshouse.receipt.verify_log import verify_log
from glasshouse.training.export import export

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "fixtures" / "receipt-v0.3.0"
SCHEMAS = ROOT / "schemas"


def gh(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args], cwd=cwd, capture_output=True, timeout=120
    )


def _old() -> dict:
    return json.loads((OLD / "receipt.json").read_text())


def test_versions() -> None:
    assert RECEIPT_VERSION == "v0.4.0" and RECEIPT_VERSIONS == ("v0.3.0", "v0.4.0")
    field = Receipt.model_fields["version"].annotation
    assert typing.get_args(field) == RECEIPT_VERSIONS
    assert real_receipt()["version"] == "v0.4.0"


def test_both_schemas_are_committed_and_the_old_receipt_validates_against_both() -> None:
    for version in RECEIPT_VERSIONS:
        schema = json.loads((SCHEMAS / f"receipt-{version}.schema.json").read_text())
        jsonschema.validate(_old(), schema)
    new = json.loads((SCHEMAS / f"receipt-{RECEIPT_VERSION}.schema.json").read_text())
    jsonschema.validate(real_receipt(), new)


def test_v030_receipt_loads_and_its_digest_still_checks() -> None:
    rec = load_receipt(OLD / "receipt.json")
    assert rec.version == "v0.3.0"
    assert check_digest(rec) and check_digest(_old())
    # the model adds none of the v0.4.0 fields to an old receipt: its bytes are unchanged
    assert rec.model_dump(mode="json") == _old()


def test_v030_receipt_with_a_v040_field_is_refused() -> None:
    old = _old()
    old["artifacts"]["outputs"] = []
    with pytest.raises(ReceiptError, match=r"artifacts\.outputs is a v0\.4\.0 field"):
        parse_receipt(json.dumps(old))
    old = _old()
    old["observation"]["omitted"] = {"filesystem.reads": 1}
    with pytest.raises(ReceiptError, match=r"observation\.omitted is a v0\.4\.0 field"):
        parse_receipt(json.dumps(old))
    old = _old()
    old["version"] = "v0.5.0"
    with pytest.raises(ReceiptError, match="version"):
        parse_receipt(json.dumps(old))


def test_v030_receipt_shows(tmp_path: Path) -> None:
    p = gh("receipt", "show", str(OLD / "receipt.json"), cwd=tmp_path)
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "(v0.3.0)" in out and "matches content" in out


def test_v030_signature_verifies(tmp_path: Path) -> None:
    envelope = (OLD / "receipt.dsse.json").read_text()
    verified = verify_envelope(envelope, load_public_key(OLD / "test-only.pub"), receipt=_old())
    assert verified.statement["predicateType"] == predicate_type("v0.3.0")
    p = gh(
        "verify", str(OLD / "receipt.dsse.json"), "--key", str(OLD / "test-only.pub"),
        "--receipt", str(OLD / "receipt.json"), cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr


def test_v040_statement_type_and_a_mismatched_one() -> None:
    key = load_private_key(OLD / "test-only.key")
    data = real_receipt()
    env = sign_receipt(data, key)
    verified = verify_envelope(env, key.public_key())
    assert verified.statement["predicateType"] == predicate_type("v0.4.0")
    # a v0.3.0 predicate type around a v0.4.0 receipt is refused, signed or not
    from glasshouse.receipt import dsse
    from glasshouse.receipt.canonical import canonical_json
    from glasshouse.receipt.sign import PAYLOAD_TYPE, statement

    stmt = statement(data)
    stmt["predicateType"] = predicate_type("v0.3.0")
    forged = dsse.sign(PAYLOAD_TYPE, canonical_json(stmt), key).to_dict()
    with pytest.raises(VerificationError, match=r"but the receipt is v0\.4\.0"):
        verify_envelope(forged, key.public_key())


def test_verify_log_accepts_a_log_mixing_both_versions(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    shutil.copytree(OLD / "log", log_dir)
    key = load_private_key(OLD / "test-only.key")
    log = ReceiptLog(log_dir, signing_key=key)
    new = log.append(Receipt.model_validate(real_receipt()))
    assert new.version == "v0.4.0" and new.sequence == 2
    report = verify_log(log_dir, key.public_key())
    assert report.ok, report.summary()
    versions = sorted(
        json.loads(p.read_text())["version"]
        for p in log_dir.glob("exec-*.json")
        if not p.name.endswith(".dsse.json")
    )
    assert versions == ["v0.3.0", "v0.3.0", "v0.4.0"]
    p = gh("verify-log", str(log_dir), "--key", str(OLD / "test-only.pub"), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    # the old receipts' links still verify: the chain continues across the version change
    stored = json.loads((log_dir / f"{new.execution_id}.json").read_text())
    assert stored["digest"] == compute_digest(stored)


def test_training_export_takes_both_versions(tmp_path: Path) -> None:
    receipts = tmp_path / "receipts"
    receipts.mkdir()
    shutil.copy(OLD / "receipt.json", receipts / "old.json")
    (receipts / "new.json").write_text(json.dumps(real_receipt()))
    out = tmp_path / "records.jsonl"
    stats = export(receipts, out)
    assert stats.records == 2 and stats.skipped == 0, stats.problems
    assert len(out.read_text().splitlines()) == 2
