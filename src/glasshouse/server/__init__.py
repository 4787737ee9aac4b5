"""glasshouse-server: untrusted Python over HTTP, a fresh sandbox per request, receipts kept.

``glasshouse-server`` (:mod:`glasshouse.server.cli`) is the command; embedders build a
:class:`ServerConfig`, a :class:`Runner` and :func:`create_app`. The wire types are in
:mod:`glasshouse.server.models`; the typed client is :mod:`glasshouse.client`. Exports load
lazily, so the client importing the wire types does not import FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Runner": "glasshouse.server._runner",
    "ServerConfig": "glasshouse.server._runner",
    "create_app": "glasshouse.server.app",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glasshouse.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
