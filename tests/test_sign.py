"""Signing and offline verification of receipts (DSSE + in-toto Statement v1, Ed25519)."""

from __future__ import annotations

import base64
import copy
import json
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trust_helpers import real_receipt

from glasshouse.receipt import dsse
from glasshouse.receipt.canonical import check_digest, compute_digest
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.sign import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    KeyFileError,
    VerificationError,
    envelope_path_for,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_receipt,
    verify_envelope,
)


@pytest.fixture(scope="module")
def receipt() -> dict:
    return real_receipt()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _kind(envelope: dict, key, **kw) -> str:
    with pytest.raises(VerificationError) as info:
        verify_envelope(envelope, key, **kw)
    assert info.value.message and info.value.diagnostic().startswith(
        info.value.kind.replace("_", " ")
    )
    return info.value.kind


def test_pae_matches_the_dsse_spec_example() -> None:
    # protocol.md of secure-systems-lab/dsse: the worked "hello world" example.
    assert (
        dsse.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "
    # lengths are byte counts, not characters
    assert dsse.pae("http://example.com/HelloWorld", "ಠ".encode()) == (
        b"DSSEv1 29 http://example.com/HelloWorld 3 " + "ಠ".encode()
    )


def test_envelope_signature_is_over_pae(key: Ed25519PrivateKey) -> None:
    env = dsse.sign("http://example.com/HelloWorld", b"hello world", key)
    data = env.to_dict()
    assert data["payload"] == "aGVsbG8gd29ybGQ="
    sig = base64.b64decode(data["signatures"][0]["sig"])
    key.public_key().verify(sig, b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")
    assert dsse.verify_signature(dsse.Envelope.from_dict(data), key.public_key()) is not None


def test_real_receipt_signs_and_verifies(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    assert envelope["payloadType"] == PAYLOAD_TYPE
    assert envelope["signatures"][0]["keyid"] == dsse.keyid(key.public_key())
    verified = verify_envelope(json.dumps(envelope), key.public_key())
    stmt = verified.statement
    assert stmt["_type"] == STATEMENT_TYPE and stmt["predicateType"] == PREDICATE_TYPE
    names = {s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}
    art = receipt["artifacts"]
    assert names == {
        "command": art["command_hash"],
        "stdout": art["stdout_hash"],
        "stderr": art["stderr_hash"],
    }
    # the predicate is the receipt, sealed, and a valid v0.3.0 receipt
    assert check_digest(verified.receipt)
    assert verified.receipt == {**receipt, "digest": compute_digest(receipt)}
    Receipt.model_validate(verified.receipt)
    # deterministic: the same receipt and key give the same envelope (Ed25519 is deterministic)
    assert sign_receipt(receipt, key) == envelope


def test_code_hash_becomes_a_subject(receipt: dict, key: Ed25519PrivateKey) -> None:
    code = "sha256:" + "ab" * 32
    env = sign_receipt({**receipt, "code_hash": code}, key)
    subjects = verify_envelope(env, key.public_key()).statement["subject"]
    assert {"name": "code", "digest": {"sha256": "ab" * 32}} in subjects


def test_every_changed_payload_byte_is_detected(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    payload = base64.b64decode(envelope["payload"])
    rng = random.Random(7)
    positions = [*sorted(rng.sample(range(len(payload)), 64)), 0, len(payload) - 1]
    for pos in positions:
        tampered = bytearray(payload)
        tampered[pos] ^= 0x01
        bad = {**envelope, "payload": base64.b64encode(bytes(tampered)).decode()}
        assert _kind(bad, key.public_key()) == "bad_signature", pos


def test_changed_exit_code_in_payload_is_detected(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    stmt = json.loads(base64.b64decode(envelope["payload"]))
    stmt["predicate"]["outcome"]["exit_code"] = 0 if receipt["exit_code"] else 1
    bad = {**envelope, "payload": base64.b64encode(json.dumps(stmt).encode()).decode()}
    assert _kind(bad, key.public_key()) == "bad_signature"


def test_changed_signature_byte_is_detected(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[10] ^= 0x80
    bad = copy.deepcopy(envelope)
    bad["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    assert _kind(bad, key.public_key()) == "bad_signature"


def test_changed_base64_character_is_detected(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    text = envelope["payload"]
    for i, repl in ((5, "!"), (40, "A" if text[40] != "A" else "B")):
        bad = {**envelope, "payload": text[:i] + repl + text[i + 1 :]}
        assert _kind(bad, key.public_key()) in ("bad_signature", "malformed")


def test_wrong_key(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(VerificationError) as info:
        verify_envelope(envelope, other)
    assert info.value.kind == "wrong_key"
    assert dsse.keyid(key.public_key())[:16] in info.value.message


def test_wrong_payload_type(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    assert _kind({**envelope, "payloadType": "application/json"}, key.public_key()) == (
        "wrong_payload_type"
    )
    # correctly signed, but not one of our statements
    body = json.dumps(
        {"_type": STATEMENT_TYPE, "subject": [], "predicateType": "x", "predicate": {}}
    ).encode()
    foreign = dsse.sign(PAYLOAD_TYPE, body, key).to_dict()
    assert _kind(foreign, key.public_key()) == "wrong_payload_type"


def test_missing_signature(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    assert _kind({**envelope, "signatures": []}, key.public_key()) == "missing_signature"
    no_field = {k: v for k, v in envelope.items() if k != "signatures"}
    assert _kind(no_field, key.public_key()) == "missing_signature"


def test_malformed_envelopes(key: Ed25519PrivateKey) -> None:
    for bad in ("not json", "[]", json.dumps({"payload": "x"})):
        assert _kind(bad, key.public_key()) == "malformed"


def test_receipt_beside_the_envelope_must_match(receipt: dict, key: Ed25519PrivateKey) -> None:
    envelope = sign_receipt(receipt, key)
    sealed = {**receipt, "digest": compute_digest(receipt)}
    verify_envelope(envelope, key.public_key(), receipt=sealed)
    changed = copy.deepcopy(sealed)
    changed["outcome"]["exit_code"] = 99
    with pytest.raises(VerificationError) as info:
        verify_envelope(envelope, key.public_key(), receipt=changed)
    assert info.value.kind == "receipt_mismatch"
    assert "outcome.exit_code" in info.value.message


def test_keys_roundtrip_and_refuse_overwrite(
    tmp_path: Path, receipt: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = generate_keypair(tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600
    env = sign_receipt(receipt, load_private_key(private))
    verify_envelope(env, load_public_key(public))
    verify_envelope(env, load_public_key(private))  # the public half of a private key file
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path)
    with pytest.raises(KeyFileError, match="not a PEM"):
        load_public_key(_write(tmp_path / "junk.pem", b"hello"))
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "absent.key")
    # encrypted keys need the passphrase
    monkeypatch.setenv("GLASSHOUSE_KEY_PASSPHRASE", "s3cret")
    enc_private, _ = generate_keypair(tmp_path / "enc")
    assert b"ENCRYPTED" in enc_private.read_bytes()
    load_private_key(enc_private)
    monkeypatch.delenv("GLASSHOUSE_KEY_PASSPHRASE")
    with pytest.raises(KeyFileError, match="GLASSHOUSE_KEY_PASSPHRASE"):
        load_private_key(enc_private)


def test_non_ed25519_key_is_rejected(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_public_key(_write(tmp_path / "ec.pub", pem))


def test_envelope_path_for() -> None:
    assert envelope_path_for("out/receipt.json") == Path("out/receipt.dsse.json")
    assert envelope_path_for("r") == Path("r.dsse.json")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- never a crash: whatever the input, VerificationError or a Verified result -------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda c: st.one_of(
        st.lists(c, max_size=4), st.dictionaries(st.text(max_size=10), c, max_size=4)
    ),
    max_leaves=20,
)
_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(_JSON, st.binary(max_size=200)))
def test_random_envelopes_never_crash(value) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    with pytest.raises(VerificationError):
        verify_envelope(raw, _KEY.public_key())


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_JSON, st.booleans())
def test_signed_garbage_is_rejected_not_crashed(predicate, as_statement: bool) -> None:
    """Even correctly signed payloads that are not our statements fail cleanly."""
    body = (
        {"_type": STATEMENT_TYPE, "subject": [], "predicateType": PREDICATE_TYPE,
         "predicate": predicate}
        if as_statement
        else predicate
    )  # fmt: skip
    env = dsse.sign(PAYLOAD_TYPE, json.dumps(body).encode(), _KEY).to_dict()
    with pytest.raises(VerificationError):
        verify_envelope(env, _KEY.public_key())
