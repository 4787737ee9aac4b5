"""Real receipts for the trust tests: commands run through the Engine and the process backend."""

from __future__ import annotations

from typing import Any

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine


def real_receipt(argv: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    """Run ``argv`` (default: a tiny shell command) and return its receipt as JSON data."""
    engine = Engine(create("process"))
    run = engine.run(ExecutionSpec(argv=argv or ["sh", "-c", "echo hello; echo oops >&2"], **spec))
    return run.receipt_data
