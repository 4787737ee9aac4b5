"""The server with --signing-key and --policy: signed, judged receipts in a verifiable log."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

pytest.importorskip("fastapi")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_helpers import api, config

from glasshouse.policy import parse_policy, receipt_hook
from glasshouse.receipt.sign import verify_envelope
from glasshouse.receipt.verify_log import verify_log

POLICY = "rules:\n  - {id: nonzero, match: {outcome: {failed: true}}}\n"


def test_server_signs_and_judges_every_receipt(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    cfg = config(tmp_path, signing_key=key, receipt_hooks=[receipt_hook(parse_policy(POLICY))])
    with api(cfg) as client:
        ids = []
        for code in ("print('ok')", "import sys; sys.exit(4)"):
            r = client.post("/run", json={"code": code})
            assert r.status_code == 200, r.text
            ids.append(r.json()["receipt_id"])
        stored = client.get(f"/receipts/{ids[1]}").json()
    assert stored["policy"]["violations"] == ["nonzero"]
    receipts = cfg.receipts_dir
    for rid in ids:
        envelope = (receipts / f"{rid}.dsse.json").read_bytes()
        data = json.loads((receipts / f"{rid}.json").read_text())
        verified = verify_envelope(envelope, key.public_key(), receipt=data)
        assert {s["name"] for s in verified.statement["subject"]} >= {"code", "command"}
    report = verify_log(receipts, key=key.public_key())
    assert report.ok and report.receipts == 2, report.problems


def test_server_flags_fail_fast(tmp_path: Path) -> None:
    from glasshouse.server.cli import _trust_options

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: a\n    match: {any: []}\n")
    with pytest.raises(click.BadParameter, match=r"bad\.yaml:3"):
        _trust_options({"policy": bad, "signing_key": None, "redact": False})
    with pytest.raises(click.BadParameter, match="not a PEM"):
        _trust_options({"policy": None, "signing_key": bad, "redact": False})
    assert _trust_options({"policy": None, "signing_key": None, "redact": False}) == ([], None)


def test_server_redacts_submitted_secrets(tmp_path: Path) -> None:
    """The submitted code is in the receipt's argv (python3 -c CODE) when the host observer
    sees the run: a token in the code must not reach the stored receipt."""
    from glasshouse.server.cli import _trust_options

    hooks, _ = _trust_options({"policy": None, "signing_key": None, "redact": True})
    secret = "ghp_" + "Zz9" * 12
    with api(config(tmp_path, profile="host", receipt_hooks=hooks)) as client:
        r = client.post("/run", json={"code": f"import sys; sys.exit('token {secret}')"})
        assert r.status_code == 200, r.text
        assert secret in r.json()["stderr"]  # the caller still gets the output
        rid = r.json()["receipt_id"]
        stored = client.get(f"/receipts/{rid}").json()
    observers = [o for o in stored["observation"]["observers"] if o["available"]]
    if not observers or not stored["process_tree"]:
        reasons = [o["reason"] for o in stored["observation"]["observers"]]
        pytest.skip(f"no host observer saw the run's argv here: {reasons}")
    raw = (tmp_path / "receipts" / f"{rid}.json").read_text()
    assert secret not in raw
    argv = [a for node in stored["process_tree"] for a in node["argv"]]
    assert any("[REDACTED:" in a for a in argv), argv
    assert any(a["rule"] == "github-token" for a in stored["redaction"]["applied"])
