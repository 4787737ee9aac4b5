"""The host's side of one run's frames: the request built from the spec, the warm pool's
prime frame, and the strict reading of the guest's result (the guest is untrusted)."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from typing import Any

from glasshouse.core.execution import ExecutionSpec
from glasshouse.guest import transport as T

from ._streamed import StreamedOutput
from ._vm import GuestFailure

#: Bytes of workspace output files a run may bring back.
OUTPUTS_BYTES = 16 << 20
#: Guest events recorded per run (``guest_events``); past it they are counted as lost.
EVENTS_CAP = 10000


def build_prime() -> dict[str, Any]:
    """What a VM restored ahead of its request gets at once: fresh entropy and the time."""
    return {
        "v": 1,
        "kind": "prime",
        "entropy": T.b64(secrets.token_bytes(64)),
        "time_ns": time.time_ns(),
    }


def build_request(spec: ExecutionSpec, *, primed: bool = False) -> dict[str, Any]:
    """The request frame. A ``primed`` VM got its entropy already (:func:`build_prime`);
    the time goes along anyway, so the guest can check its clock did not drift."""
    limits = spec.limits
    request = {
        "v": 1,
        "argv": list(spec.argv),
        "env": dict(spec.env) if spec.env is not None else None,
        "cwd": spec.cwd if spec.cwd and not os.path.isabs(spec.cwd) else None,
        "stdin": T.b64(spec.stdin or b""),
        "files": {name: T.b64(data) for name, data in spec.files.items()},
        "outputs": list(spec.outputs),
        "limits": {
            "cpu_s": limits.cpu_s,
            "memory_bytes": limits.memory_bytes,
            "pids": limits.pids,
            "file_size_bytes": limits.file_size_bytes,
            "disk_bytes": limits.disk_bytes,
        },
        "output_bytes": limits.output_bytes,
        "outputs_bytes": OUTPUTS_BYTES,
        "time_ns": time.time_ns(),
    }
    if spec.guest_events:
        request["events"] = True
        request["events_cap"] = EVENTS_CAP
    if not primed:
        # Fresh per run, from the host: a restored clone must not reuse the snapshot's state.
        request["entropy"] = T.b64(secrets.token_bytes(64))
    return request


def parse_guest_result(body: bytes, spec: ExecutionSpec) -> dict[str, Any]:
    try:
        return T.parse_result(
            body, output_bytes=spec.limits.output_bytes, outputs_bytes=OUTPUTS_BYTES
        )
    except T.ProtocolError as exc:
        raise GuestFailure(f"guest sent an invalid result: {exc}") from None


def result_limit(spec: ExecutionSpec) -> int:
    """The largest result frame (with the events frames ahead of it) ``spec`` allows."""
    limit = T.result_limit(spec.limits.output_bytes, OUTPUTS_BYTES)
    if spec.guest_events:
        limit += T.EVENTS_BYTES
    return limit


def join_streams(data: dict[str, Any], streamed: StreamedOutput) -> None:
    """Put what the guest streamed ahead in front of what its result carries, so each
    stream's ``data`` is its whole kept prefix (``sent`` stays: the part already told)."""
    for number, name in ((1, "stdout"), (2, "stderr")):
        s = data[name]
        try:
            s["data"] = streamed.join(number, s["sent"], s["data"])
        except ValueError as exc:
            raise GuestFailure(f"guest result: {name}: {exc}") from None


def check_streams(data: dict[str, Any]) -> None:
    """A complete stream's digest must match its bytes (a cheap consistency check of the
    guest's claim; a truncated stream's digest cannot be checked on the host)."""
    for name in ("stdout", "stderr"):
        s = data[name]
        if not s["truncated"] and hashlib.sha256(s["data"]).hexdigest() != s["sha256"]:
            raise GuestFailure(f"guest result: {name}.sha256 does not match its data")
