"""Build a v0.3.0 receipt from an execution result and the observers' observations."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import shlex
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from glasshouse.core.version import RECEIPT_VERSION, __version__
from glasshouse.receipt.model import (
    SECTIONS,
    Artifacts,
    Environment,
    ExecutionInfo,
    Filesystem,
    LegacyProcess,
    Network,
    ObservationBlock,
    ObserverReport,
    Outcome,
    ProcessNode,
    Receipt,
    Resources,
    SandboxEnv,
    Syscalls,
    Timing,
)

if TYPE_CHECKING:
    from glasshouse.core.execution import Backend, ExecutionResult, ExecutionSpec
    from glasshouse.core.profiling import Observation, Profile

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def rfc3339(ts: _dt.datetime) -> str:
    return ts.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.cache
def _host_environment() -> tuple[str, str, str, str]:
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    arch = _ARCH.get(platform.machine(), platform.machine())
    return runtime, arch, platform.release(), socket.gethostname()


def build_receipt(
    *,
    execution_id: str,
    spec: ExecutionSpec,
    result: ExecutionResult,
    observations: Sequence[Observation],
    profile: Profile | str,
    backend: Backend,
) -> Receipt:
    profile = str(profile)
    available = [o for o in observations if o.available]
    provenances = {o.provenance for o in available}
    if not provenances:
        provenance = "none"
    elif len(provenances) > 1:
        provenance = "combined"
    else:
        provenance = provenances.pop()

    process_tree = [n for o in available for n in (o.process_tree or [])]
    filesystem = _merge_filesystem(o.filesystem for o in available if o.filesystem)
    network = _merge_network(o.network for o in available if o.network)
    syscalls = _merge_syscalls(o.syscalls for o in available if o.syscalls)
    resources = Resources(max_rss_kb=result.max_rss_kb, cpu_time_ms=result.cpu_time_ms)
    for obs in available:
        if obs.resources is not None:
            resources = Resources(
                max_rss_kb=resources.max_rss_kb or obs.resources.max_rss_kb,
                cpu_time_ms=resources.cpu_time_ms or obs.resources.cpu_time_ms,
            )

    block = _observation_block(profile, observations, available, result)
    runtime, arch, kernel, hostname = _host_environment()
    receipt = Receipt(
        version=RECEIPT_VERSION,
        execution_id=execution_id,
        provenance=provenance,  # type: ignore[arg-type]
        timestamp=rfc3339(result.started_at),
        outcome=Outcome(
            exit_code=result.exit_code,
            signal=result.signal,
            error=result.error,
            timed_out=result.timed_out,
        ),
        timing=Timing(
            duration_ms=result.duration_ms,
            cpu_time_ms=resources.cpu_time_ms,
            started_at=rfc3339(result.started_at),
            ended_at=rfc3339(result.ended_at),
        ),
        process_tree=process_tree,
        filesystem=filesystem,
        network=network,
        syscalls=syscalls,
        resources=resources,
        environment=Environment(
            runtime=runtime,
            arch=arch,
            kernel=kernel,
            hostname=hostname,
            glasshouse_version=__version__,
            sandbox=SandboxEnv(network=result.network, details=_jsonable(result.sandbox)),
        ),
        execution=ExecutionInfo(
            backend=str(result.details.get("backend") or backend.name),
            isolation=str(result.details.get("isolation") or backend.isolation),
            details=_jsonable(
                {k: v for k, v in result.details.items() if k not in ("backend", "isolation")}
            ),
        ),
        artifacts=Artifacts(
            stdout_hash=result.stdout.sha256,
            stderr_hash=result.stderr.sha256,
            stdout_bytes=result.stdout.size,
            stderr_bytes=result.stderr.size,
            stdout_truncated=result.stdout.truncated,
            stderr_truncated=result.stderr.truncated,
            command_hash=_command_hash(spec),
        ),
        observation=block,
        exit_code=result.exit_code,
        duration_ms=result.duration_ms,
        processes=[
            LegacyProcess(pid=n.pid, ppid=n.ppid, cmd=shlex.join(n.argv) if n.argv else n.exe or "")
            for n in process_tree
        ],
    )
    return receipt


def _command_hash(spec: ExecutionSpec) -> str | None:
    try:
        return spec.command_hash()
    except Exception:  # an invalid spec (e.g. non-string argv) has no command hash
        return None


def _observation_block(
    profile: str,
    observations: Sequence[Observation],
    available: Sequence[Observation],
    result: ExecutionResult,
) -> ObservationBlock:
    reports = [
        ObserverReport(
            name=o.observer,
            provenance=o.provenance,  # type: ignore[arg-type]
            available=o.available,
            reason=o.reason,
            collected=o.collected(),
            events=o.events,
            events_lost=o.events_lost,
            truncations=o.truncations,
        )
        for o in observations
    ]
    collected: list[str] = []
    for o in available:
        collected += [s for s in o.collected() if s not in collected]
    accounted = result.cpu_time_ms is not None or result.max_rss_kb is not None
    if accounted and "resources" not in collected:
        collected.append("resources")
    missing: dict[str, str] = {}
    if profile == "disabled":
        why = "profiling disabled (--profile disabled): no observation was made"
    elif not observations:
        why = "no observer was attached"
    elif not available:
        why = "; ".join(f"{o.observer}: {o.reason}" for o in observations)
    else:
        why = "not collected by " + ", ".join(o.observer for o in available)
    for section in SECTIONS:
        if section in collected:
            continue
        reasons = [o.missing[section] for o in available if section in o.missing]
        missing[section] = "; ".join(reasons) if reasons else why
    note = None
    if profile == "disabled":
        note = "no observation was made; outcome, timing and artifacts only"
        if accounted:
            note += " (resources from the backend's own accounting)"
    return ObservationBlock(
        profile=profile,  # type: ignore[arg-type]
        collected=collected,
        missing=missing,
        observers=reports,
        events_lost=sum(o.events_lost for o in observations),
        truncations=sum(o.truncations for o in observations),
        note=note,
    )


def _dedup(items: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for item in items:
        key = item.model_dump_json() if hasattr(item, "model_dump_json") else item
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _merge_filesystem(parts: Iterable[Filesystem]) -> Filesystem:
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    merged = Filesystem()
    for name in Filesystem.model_fields:
        setattr(merged, name, _dedup(x for p in parts for x in getattr(p, name)))
    return merged


def _merge_network(parts: Iterable[Network]) -> Network:
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    return Network(
        attempts=[a for p in parts for a in p.attempts],
        bytes_sent=sum(p.bytes_sent for p in parts),
        bytes_received=sum(p.bytes_received for p in parts),
        binds=[b for p in parts for b in p.binds],
        sends=[s for p in parts for s in p.sends],
    )


def _merge_syscalls(parts: Iterable[Syscalls]) -> Syscalls:
    counts: dict[str, int] = {}
    denied: list[str] = []
    for part in parts:
        for name, n in part.counts.items():
            counts[name] = counts.get(name, 0) + n
        denied += [d for d in part.denied if d not in denied]
    return Syscalls(counts=dict(sorted(counts.items())), denied=denied)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str | int | bool) or value is None:
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [str(v) for v in value]
        elif isinstance(value, os.PathLike):
            out[key] = os.fspath(value)
        else:
            out[key] = str(value)
    return out
