"""A host check for ``glasshouse doctor``: what works here, and what a failure disables.

Each part (backends, observe, policy) offers ``doctor_checks() -> list[Check]``;
:mod:`glasshouse.doctor` collects them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    #: What does not work when this check fails ("" when nothing depends on it).
    disables: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
