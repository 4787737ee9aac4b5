"""Network endpoint parsing shared by policy and training (no yaml import)."""

from __future__ import annotations

import ipaddress
from typing import Any


def parse_endpoint(dst: Any) -> tuple[Any, int | None]:
    """``"1.2.3.4:443"``, ``"[::1]:80"``, ``"::1"`` -> (ip address or None, port or None)."""
    if not isinstance(dst, str):
        return None, None
    host, port = dst, None
    if dst.startswith("["):
        close = dst.find("]")
        host = dst[1:close] if close > 0 else dst
        rest = dst[close + 1 :] if close > 0 else ""
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    elif dst.count(":") == 1:
        host, _, p = dst.partition(":")
        port = int(p) if p.isdigit() else None
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        return None, port
