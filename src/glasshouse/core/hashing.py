"""SHA-256 without OpenSSL's start-up cost (the CLI hashes every output stream)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:  # CPython's builtin SHA-256: importing hashlib would load OpenSSL (~10 ms at start)
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - other interpreters
        from hashlib import sha256

__all__ = ["sha256"]
