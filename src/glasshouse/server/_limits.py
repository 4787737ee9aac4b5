"""Per-run limits: what a request asks for, bounded by the operator's ceilings.

A request may lower or raise its run's limits (``limits.*``, ``timeout``), but never above
the ceiling the operator set (``--max-memory``, ``--max-pids``, ``--max-output``,
``--max-disk``, ``--max-timeout``): such a request is refused (422 ``above_ceiling``, the
message names the flag), never silently clamped. An omitted field takes the server's
default (``--memory``, ``--pids``, ``--output-limit``, ``--disk``; the timeout's default is
60 s or the ceiling if lower).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from glasshouse.core.execution import Limits
from glasshouse.server.models import (
    MAX_DISK_BYTES,
    MAX_MEMORY_BYTES,
    MAX_OUTPUT_BYTES,
    MAX_PIDS,
    SESSION_TTL_MAX_S,
    TIMEOUT_MAX_S,
    RunRequest,
    SessionRequest,
    StepRequest,
)

if TYPE_CHECKING:
    from glasshouse.server._runner import ServerConfig


@dataclass(frozen=True)
class _Ceiling:
    field: str  # the request's field
    flag: str  # the operator's flag
    attr: str  # ServerConfig attribute holding the ceiling
    default_attr: str | None  # ServerConfig attribute holding the default, if any
    default_flag: str | None
    bound: float  # what the request schema allows at most
    unit: str


CEILINGS = (
    _Ceiling(
        "limits.memory",
        "--max-memory",
        "max_memory_bytes",
        "memory_bytes",
        "--memory",
        MAX_MEMORY_BYTES,
        "bytes",
    ),
    _Ceiling("limits.pids", "--max-pids", "max_pids", "pids", "--pids", MAX_PIDS, "processes"),
    _Ceiling(
        "limits.output",
        "--max-output",
        "max_output_bytes",
        "output_limit",
        "--output-limit",
        MAX_OUTPUT_BYTES,
        "bytes",
    ),
    _Ceiling(
        "limits.disk",
        "--max-disk",
        "max_disk_bytes",
        "disk_bytes",
        "--disk",
        MAX_DISK_BYTES,
        "bytes",
    ),
    _Ceiling("timeout", "--max-timeout", "max_timeout_s", None, None, TIMEOUT_MAX_S, "seconds"),
)

#: The timeout a request gets when it names none (capped by ``--max-timeout``).
DEFAULT_TIMEOUT_S = 60.0


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


class AboveCeiling(ValueError):
    """A request asked for more than the operator allows; the message names the flag."""

    def __init__(self, field: str, value: float, flag: str, ceiling: float, unit: str) -> None:
        super().__init__(
            f"{field} = {_num(value)} is above this server's ceiling of {_num(ceiling)} {unit}"
            f" ({flag})"
        )
        self.field, self.flag, self.ceiling = field, flag, ceiling


def _requested(request: BaseModel, field: str) -> float | None:
    if field == "timeout":
        given = "timeout" in request.model_fields_set
        return getattr(request, "timeout", None) if given else None
    return getattr(getattr(request, "limits", None), field.removeprefix("limits."), None)


def check_request(request: BaseModel, config: ServerConfig) -> None:
    """Raise :class:`AboveCeiling` for the first field above its ceiling (any request with
    ``limits`` or ``timeout``: a run, a session, a step)."""
    for ceiling in CEILINGS:
        value = _requested(request, ceiling.field)
        limit = getattr(config, ceiling.attr)
        if value is not None and value > limit:
            raise AboveCeiling(ceiling.field, value, ceiling.flag, limit, ceiling.unit)


def check_config(config: ServerConfig) -> None:
    """Raise ValueError when a ceiling is above what a request may ask, or a default above
    its ceiling (the flags are named)."""
    for ceiling in CEILINGS:
        limit = getattr(config, ceiling.attr)
        if not limit > 0 or limit > ceiling.bound:
            bound = _num(ceiling.bound)
            raise ValueError(
                f"{ceiling.flag} must be in 1..{bound} {ceiling.unit}, got {_num(limit)}"
            )
        default = getattr(config, ceiling.default_attr) if ceiling.default_attr else None
        if default is not None and default > limit:
            raise ValueError(
                f"{ceiling.default_flag} ({_num(default)}) is above {ceiling.flag} ({_num(limit)})"
            )


def _pick(requested: int | None, default: int | None) -> int | None:
    return requested if requested is not None else default


def limits_for(request: BaseModel, config: ServerConfig) -> Limits:
    """The run's (or session's) :class:`Limits`: the request's values, else the server's
    defaults."""
    asked = getattr(request, "limits", None)
    output = getattr(asked, "output", None)
    return Limits(
        memory_bytes=_pick(getattr(asked, "memory", None), config.memory_bytes),
        pids=_pick(getattr(asked, "pids", None), config.pids),
        output_bytes=output if output is not None else config.output_limit,
        disk_bytes=_pick(getattr(asked, "disk", None), config.disk_bytes),
    )


def timeout_for(request: RunRequest | StepRequest, config: ServerConfig) -> float:
    if "timeout" in request.model_fields_set:
        return request.timeout
    return min(DEFAULT_TIMEOUT_S, config.max_timeout_s)


def capabilities(config: ServerConfig) -> dict[str, Any]:
    """What /health states about the limits: each ceiling (``max_memory_bytes``...)."""
    return {c.attr: getattr(config, c.attr) for c in CEILINGS}


def check_session_config(config: ServerConfig) -> None:
    """Raise ValueError when the session flags contradict each other (the flags named)."""
    if config.max_sessions < 0:
        raise ValueError(f"--max-sessions must be 0 or more, got {config.max_sessions}")
    if config.max_file_bytes < 1:
        raise ValueError(f"--max-file-size must be positive, got {config.max_file_bytes}")
    for flag, value in (
        ("--session-ttl", config.session_ttl_s),
        ("--max-session-ttl", config.max_session_ttl_s),
        ("--session-idle-timeout", config.session_idle_timeout_s),
    ):
        if not 0 < value <= SESSION_TTL_MAX_S:
            raise ValueError(f"{flag} must be in (0, {SESSION_TTL_MAX_S}] seconds, got {value:g}")
    if config.session_ttl_s > config.max_session_ttl_s:
        raise ValueError(
            f"--session-ttl ({config.session_ttl_s:g}) is above --max-session-ttl "
            f"({config.max_session_ttl_s:g})"
        )


def check_session(request: SessionRequest, config: ServerConfig) -> None:
    """Raise :class:`AboveCeiling` for a session's limit or ttl above the server's ceiling."""
    check_request(request, config)
    if request.ttl_s is not None and request.ttl_s > config.max_session_ttl_s:
        raise AboveCeiling(
            "ttl_s", request.ttl_s, "--max-session-ttl", config.max_session_ttl_s, "seconds"
        )
