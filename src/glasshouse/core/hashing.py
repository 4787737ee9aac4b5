"""SHA-256 without OpenSSL's start-up cost (the CLI hashes every output stream)."""

from __future__ import annotations

try:  # CPython's builtin SHA-256: importing hashlib would load OpenSSL (~10 ms at startup)
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - other interpreters
    from hashlib import sha256

__all__ = ["sha256"]
