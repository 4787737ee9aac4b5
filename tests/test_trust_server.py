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
        _trust_options({"policy": bad, "signing_key": None})
    with pytest.raises(click.BadParameter, match="not a PEM"):
        _trust_options({"policy": None, "signing_key": bad})
    assert _trust_options({"policy": None, "signing_key": None}) == ([], None)
