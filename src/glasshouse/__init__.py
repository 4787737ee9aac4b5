"""Glasshouse: run code isolated and record what the OS observed as a verifiable receipt.

    import glasshouse

    result = glasshouse.run(["python3", "-c", "print(2 + 2)"], backend="sandbox", timeout=10)
    result.returncode, result.stdout, result.receipt["digest"]

The public API is what this module exports; names load lazily, so ``import glasshouse``
costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glasshouse.core.version import RECEIPT_VERSION, __version__

if TYPE_CHECKING:
    from glasshouse.core.errors import (
        BackendError,
        BackendUnavailable,
        CommandFailed,
        CommandNotRunnable,
        GlasshouseError,
        ObserverUnavailable,
        ReceiptError,
        SpecError,
    )
    from glasshouse.core.execution import ExecutionSpec, Limits
    from glasshouse.receipt.pipeline import ReceiptPipeline
    from glasshouse.runner import Result, Runner, pipeline_for, run
    from glasshouse.session import Session, SessionClosed, StepResult

_LAZY = {
    "run": "glasshouse.runner",
    "Runner": "glasshouse.runner",
    "Result": "glasshouse.runner",
    "pipeline_for": "glasshouse.runner",
    "ReceiptPipeline": "glasshouse.receipt.pipeline",
    "Session": "glasshouse.session",
    "SessionClosed": "glasshouse.session",
    "StepResult": "glasshouse.session",
    "Limits": "glasshouse.core.execution",
    "ExecutionSpec": "glasshouse.core.execution",
    "GlasshouseError": "glasshouse.core.errors",
    "SpecError": "glasshouse.core.errors",
    "BackendError": "glasshouse.core.errors",
    "BackendUnavailable": "glasshouse.core.errors",
    "CommandNotRunnable": "glasshouse.core.errors",
    "CommandFailed": "glasshouse.core.errors",
    "ObserverUnavailable": "glasshouse.core.errors",
    "ReceiptError": "glasshouse.core.errors",
}

__all__ = [
    "RECEIPT_VERSION",
    "BackendError",
    "BackendUnavailable",
    "CommandFailed",
    "CommandNotRunnable",
    "ExecutionSpec",
    "GlasshouseError",
    "Limits",
    "ObserverUnavailable",
    "ReceiptError",
    "ReceiptPipeline",
    "Result",
    "Runner",
    "Session",
    "SessionClosed",
    "SpecError",
    "StepResult",
    "__version__",
    "pipeline_for",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'glasshouse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
