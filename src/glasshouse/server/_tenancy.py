"""Tenants: who a bearer token is, and what it may see.

``--token-file`` holds ``name token`` lines, one per tenant (blank lines and ``#`` comments
ignored); a token sees only its own sessions and receipts, except the tenant named
:data:`ADMIN`, which sees all. A file holding one token alone (the older format) is that
admin. Without a token file (a loopback-only server) every request is the anonymous admin,
and what it makes has no owner.

The owner of a receipt is kept in the server's index (``owner`` column): a receipt indexed
from the files alone (an index rebuilt after loss) has none and is visible to admins only.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The tenant name that sees every tenant's sessions and receipts.
ADMIN = "admin"
MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The ASGI scope key the auth middleware sets.
SCOPE_KEY = "glasshouse.tenant"


@dataclass(frozen=True)
class Tenant:
    """Who made a request. ``name`` None: no auth configured (owner-less, sees all)."""

    name: str | None
    admin: bool

    def may_see(self, owner: str | None) -> bool:
        """Whether this tenant may see something owned by ``owner``."""
        return self.admin or (owner is not None and owner == self.name)


#: The tenant of every request on a server without tokens.
ANONYMOUS = Tenant(None, admin=True)


class TokenFileError(ValueError):
    """A token file that cannot be used; the message says which line and why."""


def parse_tokens(text: str) -> dict[str, str]:
    """The token file's text -> {name: token}. One token alone is the admin's."""
    lines = [
        (number, line.split())
        for number, raw in enumerate(text.splitlines(), 1)
        if (line := raw.strip()) and not line.startswith("#")
    ]
    if not lines:
        raise TokenFileError("no token in the file")
    if len(lines) == 1 and len(lines[0][1]) == 1:
        _check_token(lines[0][0], lines[0][1][0])
        return {ADMIN: lines[0][1][0]}
    tokens: dict[str, str] = {}
    for number, fields in lines:
        if len(fields) != 2:
            raise TokenFileError(f"line {number}: expected 'name token', got {len(fields)} fields")
        name, token = fields
        if not _NAME.match(name):
            raise TokenFileError(
                f"line {number}: a name is 1-64 letters, digits, '_', '.', '-': {name!r}"
            )
        _check_token(number, token)
        if name in tokens:
            raise TokenFileError(f"line {number}: {name!r} is named twice")
        if token in tokens.values():
            raise TokenFileError(f"line {number}: {name!r} has another tenant's token")
        tokens[name] = token
    return tokens


def _check_token(number: int, token: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(f"line {number}: a token has at least {MIN_TOKEN_CHARS} characters")


class TokenTable:
    """Bearer token -> :class:`Tenant`, compared in constant time."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._entries = [
            (token.encode("utf-8"), Tenant(name, name == ADMIN)) for name, token in tokens.items()
        ]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def names(self) -> Iterable[str]:
        return (tenant.name or "" for _, tenant in self._entries)

    def lookup(self, given: bytes) -> Tenant | None:
        """The tenant holding ``given``, else None. Every entry is compared (the time does
        not say which one matched, nor how much of a token did)."""
        found = None
        for token, tenant in self._entries:
            if hmac.compare_digest(given, token):
                found = tenant
        return found
