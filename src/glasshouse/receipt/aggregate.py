"""Build a v0.4.0 receipt from an execution result and the observers' observations.

The receipt is built as JSON data (dicts, lists, str, int, bool, None) so that writing one
never imports pydantic; :class:`glasshouse.receipt.model.Receipt` validates the same data
(the tests check every shape built here against the model and the committed JSON Schema).

Every list is cut at ``list_cap`` entries: what a list leaves out (here, or already at an
observer that capped it while observing) is counted in ``observation.omitted``. The
``observation.coverage`` statement (:mod:`glasshouse.receipt.coverage`) is made last, from
the rest of the receipt and the observations.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from glasshouse.core.execution import DEFAULT_LIST_CAP
from glasshouse.core.hashing import sha256
from glasshouse.core.version import RECEIPT_VERSION, __version__
from glasshouse.receipt.coverage import assess

if TYPE_CHECKING:
    from glasshouse.core.execution import Backend, ExecutionResult, ExecutionSpec
    from glasshouse.core.profiling import Observation, Profile

SECTIONS = ("process_tree", "filesystem", "network", "syscalls", "resources")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_FS_LISTS = (
    "reads",
    "writes",
    "deletes",
    "policy_violations",
    "renames",
    "links",
    "mkdirs",
    "failed",
)
_NET_LISTS = ("attempts", "binds", "sends")


def rfc3339(ts: _dt.datetime) -> str:
    return ts.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.cache
def _host_environment() -> tuple[str, str, str, str]:
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    uname = os.uname()
    return runtime, _ARCH.get(uname.machine, uname.machine), uname.release, uname.nodename


def _data(value: Any) -> Any:
    """Model or data -> JSON data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def build_receipt(
    *,
    execution_id: str,
    spec: ExecutionSpec,
    result: ExecutionResult,
    observations: Sequence[Observation],
    profile: Profile | str,
    backend: Backend,
    list_cap: int = DEFAULT_LIST_CAP,
) -> dict[str, Any]:
    profile = str(profile)
    available = [o for o in observations if o.available]
    provenances = {o.provenance for o in available}
    if not provenances:
        provenance = "none"
    elif len(provenances) > 1:
        provenance = "combined"
    else:
        provenance = provenances.pop()

    process_tree = [_data(n) for o in available for n in (o.process_tree or [])]
    filesystem = _merge_filesystem(_data(o.filesystem) for o in available if o.filesystem)
    network = _merge_network(_data(o.network) for o in available if o.network)
    syscalls = _merge_syscalls(_data(o.syscalls) for o in available if o.syscalls)
    resources = {"max_rss_kb": result.max_rss_kb, "cpu_time_ms": result.cpu_time_ms}
    for obs in available:
        if obs.resources is not None:
            observed = _data(obs.resources)
            for key in resources:
                if resources[key] is None:
                    resources[key] = observed.get(key)

    omitted = _observer_omitted(available)
    process_tree = _cap(process_tree, "process_tree", list_cap, omitted)
    for name in _FS_LISTS:
        filesystem[name] = _cap(filesystem[name], f"filesystem.{name}", list_cap, omitted)
    for name in _NET_LISTS:
        network[name] = _cap(network[name], f"network.{name}", list_cap, omitted)
    syscalls["denied"] = _cap(syscalls["denied"], "syscalls.denied", list_cap, omitted)
    harness = _merge_harness(available)
    if harness is not None:
        name = "observation.harness.processes"
        harness["processes"] = _cap(harness["processes"], name, list_cap, omitted)
    workspace = _workspace(result, backend, list_cap, omitted)

    runtime, arch, kernel, hostname = _host_environment()
    started, ended = rfc3339(result.started_at), rfc3339(result.ended_at)
    details = {k: v for k, v in result.details.items() if k not in ("backend", "isolation")}
    data: dict[str, Any] = {
        "version": RECEIPT_VERSION,
        "execution_id": execution_id,
        "provenance": provenance,
        "timestamp": started,
        "outcome": {
            "exit_code": result.exit_code,
            "signal": result.signal,
            "error": result.error,
            "timed_out": result.timed_out,
        },
        "timing": {
            "duration_ms": result.duration_ms,
            "cpu_time_ms": resources["cpu_time_ms"],
            "started_at": started,
            "ended_at": ended,
        },
        "process_tree": process_tree,
        "filesystem": filesystem,
        "network": network,
        "syscalls": syscalls,
        "resources": resources,
        "environment": {
            "runtime": runtime,
            "os": "linux",
            "arch": arch,
            "sandbox": {"network": result.network, "details": _jsonable(result.sandbox, False)},
            "kernel": kernel,
            "hostname": hostname,
            "glasshouse_version": __version__,
        },
        "execution": {
            "backend": str(result.details.get("backend") or backend.name),
            "isolation": str(result.details.get("isolation") or backend.isolation),
            "details": _jsonable(details, True),
        },
        "artifacts": {
            "stdout_hash": result.stdout.sha256,
            "stderr_hash": result.stderr.sha256,
            "stdout_bytes": result.stdout.size,
            "stderr_bytes": result.stderr.size,
            "stdout_truncated": result.stdout.truncated,
            "stderr_truncated": result.stderr.truncated,
            "command_hash": _command_hash(spec),
            "outputs": _outputs(spec, result),
            "inputs": _inputs(spec),
            "workspace": workspace,
        },
        "observation": {
            **_observation_block(profile, observations, available, result),
            "list_cap": list_cap,
            "omitted": dict(sorted(omitted.items())),
            "harness": harness,
        },
        "exit_code": result.exit_code,
        "duration_ms": result.duration_ms,
        "processes": [
            {
                "pid": n["pid"],
                "ppid": n["ppid"],
                "cmd": shlex.join(n.get("argv") or []) or n.get("exe") or "",
            }
            for n in process_tree
        ],
        "code_hash": None,
        "sequence": None,
        "previous_digest": None,
        "redaction": None,
        "policy": None,
        "digest": None,
    }
    ran = result.root_pid is not None or not result.error
    coverage = assess(data, observations, ran=ran)
    coverage["attached"] = _attached(observations)
    coverage["scope"] = _scope(result)
    data["observation"]["coverage"] = coverage
    return data


def command_hash(argv: Sequence[str]) -> str:
    """sha256 over the canonical JSON of the command (argv) that was run."""
    from glasshouse.receipt.canonical import canonical_json, sha256_hex

    return sha256_hex(canonical_json(list(argv)))


def _observer_omitted(available: Sequence[Observation]) -> dict[str, int]:
    omitted: dict[str, int] = {}
    for obs in available:
        for name, n in (getattr(obs, "omitted", None) or {}).items():
            if n > 0:
                omitted[name] = omitted.get(name, 0) + n
    return omitted


def _cap(items: list[Any], name: str, cap: int, omitted: dict[str, int]) -> list[Any]:
    """The first ``cap`` of ``items``; the number cut is added to ``omitted[name]``."""
    if len(items) <= cap:
        return items
    omitted[name] = omitted.get(name, 0) + len(items) - cap
    return items[:cap]


def _outputs(spec: ExecutionSpec, result: ExecutionResult) -> list[dict[str, Any]]:
    """Every requested output file: copied (size, sha256) or skipped (the backend's reason)."""
    out = []
    names = () if isinstance(spec.outputs, str | bytes) else spec.outputs
    for name in dict.fromkeys(n for n in names if isinstance(n, str)):
        data = result.outputs.get(name)
        if data is not None:
            entry = {"path": name, "status": "copied", "size": len(data)}
            entry["sha256"] = sha256(data).hexdigest()
            entry["reason"] = None
        else:
            reason = result.output_status.get(name) or _not_copied(result)
            entry = {"path": name, "status": "skipped", "size": None, "sha256": None}
            entry["reason"] = reason
        out.append(entry)
    return out


def _workspace(
    result: ExecutionResult, backend: Backend, list_cap: int, omitted: dict[str, int]
) -> dict[str, Any]:
    """``artifacts.workspace``: the files the run wrote that still exist, or why not listed."""
    scan = result.workspace
    if scan is None:
        if result.root_pid is None and result.error:
            why = "nothing ran (outcome.error says why)"
        else:
            why = f"the {backend.name} backend does not list its workspace"
        return {"collected": False, "reason": why, "root": None, "files": []}
    name = "artifacts.workspace.files"
    if scan.omitted:
        omitted[name] = omitted.get(name, 0) + scan.omitted
    files = _cap([dataclasses.asdict(f) for f in scan.files], name, list_cap, omitted)
    return {
        "collected": scan.collected,
        "reason": scan.reason,
        "root": scan.root,
        "files": files,
        "unhashed": scan.unhashed,
        "hashed_bytes": scan.hashed_bytes,
        "file_cap": scan.file_cap,
        "total_cap": scan.total_cap,
    }


def _attached(observations: Sequence[Observation]) -> dict[str, Any]:
    """``coverage.attached``: when each observer began watching, and whether all did before
    the workload's first instruction (False with none, or one late or never attached)."""
    entries = []
    for o in observations:
        a = o.attached
        entries.append(
            {
                "observer": o.observer,
                "before_start": bool(a and a.before_start),
                "how": a.how if a else "unknown",
                "detail": a.detail if a else "not stated by whoever attached it",
            }
        )
    hows = list(dict.fromkeys(str(e["how"]) for e in entries))
    return {
        "before_start": bool(entries) and all(e["before_start"] for e in entries),
        "how": "+".join(hows) or "none",
        "observers": entries,
    }


def _scope(result: ExecutionResult) -> dict[str, Any]:
    """``coverage.scope``: the process tree, cgroup and pid namespace observed (where known)."""
    keys = ("root_pid", "workload_start", "cgroup", "cgroup_id", "pid_namespace", "note")
    return {k: result.scope.get(k) for k in keys}


def _not_copied(result: ExecutionResult) -> str:
    if result.error:
        return f"not copied back: the run failed ({result.error})"
    return "not copied back by the backend"


def _inputs(spec: ExecutionSpec) -> list[dict[str, Any]]:
    files = spec.files if isinstance(spec.files, Mapping) else {}
    return [
        {"path": name, "size": len(data), "sha256": sha256(data).hexdigest()}
        for name, data in files.items()
        if isinstance(name, str) and isinstance(data, bytes | bytearray)
    ]


def _command_hash(spec: ExecutionSpec) -> str | None:
    try:
        return command_hash(spec.argv)
    except Exception:  # an invalid spec (e.g. non-string argv) has no command hash
        return None


def _observation_block(
    profile: str,
    observations: Sequence[Observation],
    available: Sequence[Observation],
    result: ExecutionResult,
) -> dict[str, Any]:
    reports = [
        {
            "name": o.observer,
            "provenance": o.provenance,
            "available": o.available,
            "reason": o.reason,
            "collected": o.collected(),
            "events": o.events,
            "events_lost": o.events_lost,
            "truncations": o.truncations,
        }
        for o in observations
    ]
    collected: list[str] = []
    for o in available:
        collected += [s for s in o.collected() if s not in collected]
    accounted = result.cpu_time_ms is not None or result.max_rss_kb is not None
    if accounted and "resources" not in collected:
        collected.append("resources")
    if profile == "disabled":
        why = "profiling disabled (--profile disabled): no observation was made"
    elif not observations and result.root_pid is None and result.error:
        why = f"nothing ran to observe ({result.error})"
    elif not observations:
        why = "no observer was attached"
    elif not available:
        why = "; ".join(f"{o.observer}: {o.reason}" for o in observations)
    else:
        why = "not collected by " + ", ".join(o.observer for o in available)
    missing: dict[str, str] = {}
    for section in SECTIONS:
        if section in collected:
            continue
        reasons = [o.missing[section] for o in available if section in o.missing]
        missing[section] = "; ".join(reasons) if reasons else why
    note = result.details.get("observation_note")
    if profile == "disabled":
        backend_note = note
        note = "no observation was made; outcome, timing and artifacts only"
        if accounted:
            note += " (resources from the backend's own accounting)"
        if backend_note:
            note += f"; {backend_note}"
    return {
        "profile": profile,
        "collected": collected,
        "missing": missing,
        "observers": reports,
        "events_lost": sum(o.events_lost for o in observations),
        "truncations": sum(o.truncations for o in observations),
        "note": note,
    }


def _dedup(items: Iterable[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = repr(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _merge_filesystem(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    parts = list(parts)
    merged: dict[str, Any] = {name: [] for name in _FS_LISTS}
    if len(parts) == 1:
        merged.update(parts[0])
        return merged
    for name in _FS_LISTS:
        merged[name] = _dedup(x for p in parts for x in p.get(name, []))
    return merged


def _merge_network(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "attempts": [],
        "bytes_sent": 0,
        "bytes_received": 0,
        "binds": [],
        "sends": [],
    }
    for part in parts:
        for key in ("attempts", "binds", "sends"):
            merged[key] += part.get(key, [])
        merged["bytes_sent"] += part.get("bytes_sent", 0)
        merged["bytes_received"] += part.get("bytes_received", 0)
    return merged


def _merge_harness(available: Sequence[Observation]) -> dict[str, Any] | None:
    """The observers' harness blocks as one (None when no observer told one apart)."""
    parts = [_data(o.harness) for o in available if getattr(o, "harness", None) is not None]
    if not parts:
        return None
    counts = {"files": 0, "network": 0, "syscalls": 0}
    for part in parts:
        for key in counts:
            counts[key] += part["counts"].get(key, 0)
    return {"processes": [n for p in parts for n in p["processes"]], "counts": counts}


def _merge_syscalls(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    denied: list[str] = []
    uring: dict[str, Any] | None = None
    for part in parts:
        for name, n in part.get("counts", {}).items():
            counts[name] = counts.get(name, 0) + n
        denied += [d for d in part.get("denied", []) if d not in denied]
        if part.get("io_uring") is not None:
            uring = _merge_io_uring(uring, part["io_uring"])
    merged = {"counts": dict(sorted(counts.items())), "denied": denied}
    if uring is not None:
        merged["io_uring"] = uring
    return merged


def _merge_io_uring(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Two observers' ``syscalls.io_uring`` as one (ops summed; seen only if both saw)."""
    if a is None:
        return dict(b)
    ops = dict(a.get("ops", {}))
    for name, n in b.get("ops", {}).items():
        ops[name] = ops.get(name, 0) + n
    return {
        "ops": dict(sorted(ops.items())),
        "not_decoded": sorted({*a.get("not_decoded", []), *b.get("not_decoded", [])}),
        "unfinished": a.get("unfinished", 0) + b.get("unfinished", 0),
        "observed": bool(a.get("observed", True) and b.get("observed", True)),
    }


def _jsonable(data: dict[str, Any], allow_none: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            if allow_none:
                out[key] = None
        elif isinstance(value, str | int | bool):
            out[key] = value
        elif isinstance(value, list | tuple | set | frozenset):
            out[key] = [str(v) for v in value]
        elif isinstance(value, os.PathLike):
            out[key] = os.fspath(value)
        else:
            out[key] = str(value)
    return out
