"""DSSE (Dead Simple Signing Envelope) v1 with Ed25519.

The envelope is ``{"payloadType", "payload": base64(body), "signatures": [{"keyid", "sig"}]}``
and every signature covers ``PAE(payloadType, body)``, so the type is authenticated along with
the body (a signed receipt cannot be replayed as another kind of document). Keys are Ed25519:
``keyid`` is the hex SHA-256 of the raw 32-byte public key, a hint that lets a verifier say
"signed by another key" instead of only "bad signature".

Only :func:`pae` and the envelope shape are DSSE's; :mod:`glasshouse.receipt.sign` builds the
in-toto statement on top.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from glasshouse.core.errors import GlasshouseError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


def pae(payload_type: str, body: bytes) -> bytes:
    """Pre-Authentication Encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``.

    Lengths are byte counts in ASCII decimal, so neither part can be shifted into the other.
    """
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def keyid(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw public key bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


class EnvelopeError(GlasshouseError, ValueError):
    """A document is not a well-formed DSSE envelope; the message says which part is wrong."""


@dataclass(frozen=True)
class Signature:
    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        """Parse strictly: every field present with the right type and valid base64."""
        if not isinstance(data, dict):
            raise EnvelopeError("not a DSSE envelope: expected a JSON object")
        for name in ("payloadType", "payload"):
            if name not in data:
                raise EnvelopeError(f"not a DSSE envelope: '{name}' is missing")
            if not isinstance(data[name], str):
                raise EnvelopeError(f"not a DSSE envelope: '{name}' is not a string")
        sigs = data.get("signatures")
        if sigs is None:
            raise EnvelopeError("missing signature: the envelope has no 'signatures' field")
        if not isinstance(sigs, list):
            raise EnvelopeError("not a DSSE envelope: 'signatures' is not a list")
        payload = _b64(data["payload"], "payload")
        signatures = []
        for i, item in enumerate(sigs):
            if not isinstance(item, dict) or not isinstance(item.get("sig"), str):
                raise EnvelopeError(f"signatures[{i}]: expected an object with a 'sig' string")
            kid = item.get("keyid", "")
            if not isinstance(kid, str):
                raise EnvelopeError(f"signatures[{i}]: 'keyid' is not a string")
            signatures.append(Signature(_b64(item["sig"], f"signatures[{i}].sig"), kid))
        return cls(data["payloadType"], payload, tuple(signatures))

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"not JSON: {exc}") from exc
        return cls.from_dict(data)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise EnvelopeError(f"{what} is not valid base64 (a changed byte?): {exc}") from exc


def sign(payload_type: str, body: bytes, key: Ed25519PrivateKey) -> Envelope:
    """An envelope over ``body`` with one Ed25519 signature."""
    sig = key.sign(pae(payload_type, body))
    return Envelope(payload_type, body, (Signature(sig, keyid(key.public_key())),))


def verify_signature(envelope: Envelope, key: Ed25519PublicKey) -> Signature | None:
    """The first signature of ``envelope`` that ``key`` verifies, or None."""
    from cryptography.exceptions import InvalidSignature

    message = pae(envelope.payload_type, envelope.payload)
    for signature in envelope.signatures:
        try:
            key.verify(signature.sig, message)
        except InvalidSignature:
            continue
        return signature
    return None
