"""Signed receipts: an in-toto Statement v1 in a DSSE envelope, signed with Ed25519.

The statement's ``subject`` lists what the receipt is about, by digest: the command
(``artifacts.command_hash``), the code (``code_hash``, when the server ran submitted code) and
the outputs (``artifacts.stdout_hash``/``stderr_hash``, and each output file taken out of the
run, ``output:<path>``, from v0.4.0). Its ``predicate`` is the receipt itself (sealed: its
``digest`` field is set) and ``predicateType`` is :func:`predicate_type` of the receipt's
version (:data:`PREDICATE_TYPE` for the receipts this build writes; v0.3.0 ones still verify).
The payload is the statement's canonical JSON (RFC 8785), so signing is deterministic.

Library use, one line each::

    key = load_private_key("glasshouse.key")
    envelope = sign_receipt(receipt_data, key)            # dict, JSON-ready
    verified = verify_envelope(envelope, load_public_key("glasshouse.pub"))

:func:`verify_envelope` raises :class:`VerificationError` whose ``kind`` says why (changed
bytes, wrong key, wrong payload type, missing signature, ...) and whose message says it to a
person. Verification is offline: it needs the envelope and the public key, nothing else.
:func:`verify_attestation` also accepts a receipt exported as an in-toto runtime trace
(:mod:`glasshouse.receipt.intoto`); ``Verified.predicate_type`` says which it was.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from glasshouse.core.errors import GlasshouseError
from glasshouse.core.version import RECEIPT_VERSION, RECEIPT_VERSIONS
from glasshouse.receipt import dsse
from glasshouse.receipt.canonical import as_data, canonical_json, compute_digest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from glasshouse.receipt.model import Receipt

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
_PREDICATE_BASE = "https://glasshouse.dev/receipt/"
PREDICATE_TYPE = f"{_PREDICATE_BASE}{RECEIPT_VERSION}"
#: Environment variable holding the passphrase of an encrypted private key.
PASSPHRASE_ENV = "GLASSHOUSE_KEY_PASSPHRASE"

_HEX64 = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")

FailureKind = Literal[
    "malformed",
    "missing_signature",
    "wrong_payload_type",
    "wrong_key",
    "bad_signature",
    "bad_statement",
    "digest_mismatch",
    "receipt_mismatch",
]


class KeyFileError(GlasshouseError, ValueError):
    """A key file is missing, unreadable or not an Ed25519 key."""


class VerificationError(GlasshouseError):
    """A signed receipt did not verify. ``kind`` is machine-readable; ``str()`` is for people."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def diagnostic(self) -> str:
        return f"{self.kind.replace('_', ' ')}: {self.message}"


@dataclass(frozen=True)
class Verified:
    """A verified envelope: which key signed it, the statement and the receipt it carries."""

    keyid: str
    statement: dict[str, Any]
    receipt: dict[str, Any]

    @property
    def execution_id(self) -> str:
        if "execution_id" in self.receipt:
            return str(self.receipt["execution_id"])
        predicate = self.statement.get("predicate")
        monitored = predicate.get("monitoredProcess") if isinstance(predicate, dict) else None
        return str(monitored.get("event") if isinstance(monitored, dict) else None)

    @property
    def predicate_type(self) -> str:
        return str(self.statement.get("predicateType"))


# -- keys -------------------------------------------------------------------------------


def generate_keypair(
    out_dir: str | os.PathLike[str], name: str = "glasshouse"
) -> tuple[Path, Path]:
    """Write ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub`` into ``out_dir``.

    The private key is encrypted when :data:`PASSPHRASE_ENV` is set. Existing files are never
    overwritten (a lost signing key cannot be recovered; an overwritten one silently
    invalidates every receipt it signed).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption: Any = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM, PKCS#8; passphrase from :data:`PASSPHRASE_ENV`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key(path)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(
            data, password=passphrase.encode() if passphrase else None
        )
    except TypeError as exc:  # encrypted without passphrase, or passphrase for a plain key
        raise KeyFileError(f"{path}: {exc} (set {PASSPHRASE_ENV} for an encrypted key)") from exc
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM). A private key file is accepted too (its public half)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, not an Ed25519 key")
    return key


def _read_key(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror or exc}") from exc


# -- signing ----------------------------------------------------------------------------


def subjects(receipt: dict[str, Any]) -> list[dict[str, Any]]:
    """The statement's subjects: command, code (when known) and outputs, by sha256."""
    artifacts = receipt.get("artifacts")
    if not isinstance(artifacts, dict):
        artifacts = {}
    candidates = [
        ("command", artifacts.get("command_hash")),
        ("code", receipt.get("code_hash")),
        ("stdout", artifacts.get("stdout_hash")),
        ("stderr", artifacts.get("stderr_hash")),
    ]
    outputs = artifacts.get("outputs")
    for item in outputs if isinstance(outputs, list) else []:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            candidates.append((f"output:{item['path']}", item.get("sha256")))
    out = []
    for name, value in candidates:
        match = _HEX64.match(value) if isinstance(value, str) else None
        if match:
            out.append({"name": name, "digest": {"sha256": match.group(1)}})
    return out


def predicate_type(version: str = RECEIPT_VERSION) -> str:
    """The in-toto ``predicateType`` of a receipt of grammar ``version``."""
    return f"{_PREDICATE_BASE}{version}"


def statement(receipt: Receipt | dict[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 for ``receipt`` (sealed first when it has no digest)."""
    return statement_with(
        receipt,
        lambda data: predicate_type(str(data.get("version") or RECEIPT_VERSION)),
        lambda data: data,
    )


def statement_with(
    receipt: Receipt | dict[str, Any],
    predicate_type_of: Callable[[dict[str, Any]], str],
    predicate_of: Callable[[dict[str, Any]], Any],
) -> dict[str, Any]:
    """An in-toto Statement v1 about ``receipt`` (sealed first when it has no digest): our
    subjects (command, code, outputs by digest) and the predicate the callables make of it."""
    data = dict(as_data(receipt))
    if not data.get("digest"):
        data["digest"] = compute_digest(data)
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects(data),
        "predicateType": predicate_type_of(data),
        "predicate": predicate_of(data),
    }


def sign_receipt(receipt: Receipt | dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign ``receipt``; return the DSSE envelope as JSON data (write it with ``json.dump``)."""
    body = canonical_json(statement(receipt))
    return dsse.sign(PAYLOAD_TYPE, body, key).to_dict()


def write_envelope(envelope: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    from glasshouse.receipt.store import write_atomic

    return write_atomic(path, (json.dumps(envelope, indent=2) + "\n").encode())


def envelope_path_for(receipt_path: str | os.PathLike[str]) -> Path:
    """``receipt.json`` -> ``receipt.dsse.json`` (any other name gets ``.dsse.json`` added)."""
    path = Path(receipt_path)
    if path.suffix == ".json":
        return path.with_suffix(".dsse.json")
    return path.with_name(path.name + ".dsse.json")


# -- verification -----------------------------------------------------------------------


def verify_envelope(
    envelope: dict[str, Any] | str | bytes,
    key: Ed25519PublicKey,
    *,
    receipt: Receipt | dict[str, Any] | None = None,
) -> Verified:
    """Verify a signed receipt offline; raise :class:`VerificationError` saying why not.

    ``receipt``, when given, must equal the signed one (e.g. the ``receipt.json`` written
    beside the envelope): any difference is named by its field path.
    """
    kid, payload = _signed_payload(envelope, key)
    return _verified_receipt(kid, payload, receipt)


def verify_attestation(
    envelope: dict[str, Any] | str | bytes,
    key: Ed25519PublicKey,
    *,
    receipt: Receipt | dict[str, Any] | None = None,
) -> Verified:
    """Verify a signed receipt, or a receipt exported as an in-toto runtime trace.

    The signature is checked as :func:`verify_envelope` does; then the statement is checked
    by its ``predicateType``: a Glasshouse receipt as :func:`verify_envelope` does, a
    runtime trace (:data:`glasshouse.receipt.intoto.PREDICATE_TYPE`) by
    :func:`glasshouse.receipt.intoto.verify_statement`. ``Verified.predicate_type`` says which.
    """
    kid, payload = _signed_payload(envelope, key)
    from glasshouse.receipt import intoto

    try:
        kind = json.loads(payload).get("predicateType")
    except (ValueError, UnicodeDecodeError, AttributeError):
        kind = None  # not a JSON object: _verified_receipt says so
    if kind == intoto.PREDICATE_TYPE:
        return intoto.verify_statement(kid, payload, receipt=receipt)
    return _verified_receipt(kid, payload, receipt)


def _signed_payload(
    envelope: dict[str, Any] | str | bytes, key: Ed25519PublicKey
) -> tuple[str, bytes]:
    """The key id and payload of an in-toto DSSE envelope that ``key`` signed."""
    try:
        env = (
            dsse.Envelope.from_dict(envelope)
            if isinstance(envelope, dict)
            else dsse.Envelope.from_json(envelope)
        )
    except dsse.EnvelopeError as exc:
        kind: FailureKind = "missing_signature" if "missing signature" in str(exc) else "malformed"
        raise VerificationError(kind, str(exc).removeprefix("missing signature: ")) from exc
    if not env.signatures:
        raise VerificationError("missing_signature", "the envelope carries no signature")
    if env.payload_type != PAYLOAD_TYPE:
        raise VerificationError(
            "wrong_payload_type",
            f"payloadType is {env.payload_type!r}, expected {PAYLOAD_TYPE!r}",
        )
    wanted = dsse.keyid(key)
    signature = dsse.verify_signature(env, key)
    if signature is None:
        kids = sorted({s.keyid for s in env.signatures if s.keyid})
        if kids and wanted not in kids:
            raise VerificationError(
                "wrong_key",
                f"signed by key {', '.join(k[:16] for k in kids)}, "
                f"but the key given is {wanted[:16]}",
            )
        raise VerificationError(
            "bad_signature",
            f"the signature by key {wanted[:16]} does not match the payload: "
            "the payload or the signature was changed after signing",
        )
    return signature.keyid or wanted, env.payload


def _verified_receipt(
    kid: str, payload: bytes, receipt: Receipt | dict[str, Any] | None
) -> Verified:
    stmt = _parse_statement(payload)
    data = stmt["predicate"]
    if data.get("version") not in RECEIPT_VERSIONS or not isinstance(data.get("execution_id"), str):
        raise VerificationError(
            "bad_statement", f"the predicate is not a {' or '.join(RECEIPT_VERSIONS)} receipt"
        )
    if stmt["predicateType"] != predicate_type(data["version"]):
        raise VerificationError(
            "wrong_payload_type",
            f"predicateType is {stmt['predicateType']!r} but the receipt is {data['version']}",
        )
    try:
        consistent = not data.get("digest") or data["digest"] == compute_digest(data)
    except Exception as exc:  # values canonical JSON cannot encode: signed, but not a receipt
        raise VerificationError(
            "bad_statement", f"the receipt is not canonical JSON: {exc}"
        ) from exc
    if not consistent:
        raise VerificationError(
            "digest_mismatch",
            "the signed receipt's digest does not match its content (it was signed inconsistent)",
        )
    expected = subjects(data)
    if stmt["subject"] != expected:
        raise VerificationError(
            "bad_statement", "the statement's subjects do not match the receipt's artifacts"
        )
    if receipt is not None:
        other = as_data(receipt)
        diffs = _differences(data, other)
        if diffs:
            shown = ", ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else "")
            raise VerificationError(
                "receipt_mismatch", f"the receipt differs from the signed one at {shown}"
            )
    return Verified(keyid=kid, statement=stmt, receipt=data)


def _parse_statement(payload: bytes) -> dict[str, Any]:
    try:
        stmt = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError("bad_statement", f"the payload is not JSON: {exc}") from exc
    if not isinstance(stmt, dict):
        raise VerificationError("bad_statement", "the payload is not a JSON object")
    if stmt.get("_type") != STATEMENT_TYPE:
        raise VerificationError(
            "bad_statement", f"_type is {stmt.get('_type')!r}, expected {STATEMENT_TYPE!r}"
        )
    accepted = [predicate_type(v) for v in RECEIPT_VERSIONS]
    if stmt.get("predicateType") not in accepted:
        raise VerificationError(
            "wrong_payload_type",
            f"predicateType is {stmt.get('predicateType')!r}, expected one of {accepted!r}",
        )
    if not isinstance(stmt.get("predicate"), dict) or not isinstance(stmt.get("subject"), list):
        raise VerificationError("bad_statement", "the statement has no receipt or no subjects")
    return stmt


def differences(a: Any, b: Any) -> list[str]:
    """Field paths (``outcome.exit_code``, ``predicate.monitorLog.process[2]``) where two JSON
    values differ."""
    return _differences(a, b)


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Field paths where two JSON values differ (``digest`` compared like any field)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                out.append(sub)
            else:
                out += _differences(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _differences(x, y, f"{path}[{i}]")
        return out
    return [] if a == b and type(a) is type(b) else [path or "(root)"]
