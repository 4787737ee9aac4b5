"""Fold the guest's raw events (already validated by ``glasshouse.guest.transport``) into an
:class:`~glasshouse.core.profiling.Observation` with provenance ``guest``.

What the guest records (docs/microvm.md, "Guest events"): for a ``python3 -c`` run, the
PEP 578 audit events of the user's code (opens, deletes, renames, mkdirs, links, process
spawns, socket connects and binds); for any other command, only the command's own process
(the guest kernel has no tracing). Everything here is the guest's claim: a workload that
controls the VM can forge it, which is why host observation stays the receipt's anchor.
"""

from __future__ import annotations

from typing import Any

from glasshouse.core.profiling import Observation

_O_ACCMODE = 0o3
_WRITE_FLAGS = 0o100 | 0o1000 | 0o2000  # O_CREAT | O_TRUNC | O_APPEND
#: Longest list kept per receipt section (the events themselves are capped in the guest).
_SECTION_CAP = 10000

OBSERVER = "guest-audit"


def fold(
    events: list[list[Any]], *, count: int, lost: int, mode: str, complete: bool
) -> Observation:
    """``mode`` is the guest's ``inprocess``/``exec``; ``complete`` is False when the result
    never came (timeout, crash): then only the frames that arrived are folded."""
    from glasshouse.receipt.model import (
        Filesystem,
        Link,
        Network,
        NetworkAttempt,
        NetworkBind,
        ProcessNode,
        Rename,
    )

    reads: dict[str, None] = {}
    writes: dict[str, None] = {}
    deletes: dict[str, None] = {}
    mkdirs: dict[str, None] = {}
    renames: list[Rename] = []
    links: list[Link] = []
    attempts: list[NetworkAttempt] = []
    binds: list[NetworkBind] = []
    nodes: list[ProcessNode] = []
    spawns: list[tuple[str, list[str]]] = []
    root_pid = 0
    for event in events:
        kind = event[0]
        if kind == "open":
            path, flags = event[1], event[2]
            if path.startswith("<fd "):
                continue
            access = flags & _O_ACCMODE
            if access in (0, 2):
                reads[path] = None
            if access in (1, 2) or flags & _WRITE_FLAGS:
                writes[path] = None
        elif kind == "delete":
            deletes[event[1]] = None
        elif kind == "mkdir":
            mkdirs[event[1]] = None
        elif kind == "rename":
            renames.append(Rename(src=event[1], dst=event[2]))
        elif kind == "link" and event[3] in ("hard", "symbolic"):
            links.append(Link(target=event[1], path=event[2], kind=event[3]))
        elif kind == "spawn":
            spawns.append((event[1], event[2]))
        elif kind == "connect":
            family, protocol, dst = event[1], event[2], event[3]
            attempts.append(
                NetworkAttempt(dst=dst, protocol=protocol, result="requested", family=family)
            )
        elif kind == "bind":
            binds.append(NetworkBind(addr=event[3], protocol=event[2]))
        elif kind == "process":
            pid, exe, argv, code, sig = event[1:]
            root_pid = pid
            nodes.append(
                ProcessNode(pid=pid, ppid=0, exe=exe, argv=argv, exit_code=code, signal=sig)
            )
    # Spawns requested by the user's code: their guest pids are not known to the audit hook.
    for exe, argv in spawns:
        nodes.append(ProcessNode(pid=0, ppid=root_pid, exe=exe or None, argv=argv))
    missing = {"syscalls": "not recorded in the guest (its kernel has no tracing)"}
    observation = Observation(
        observer=OBSERVER,
        provenance="guest",
        process_tree=nodes[:_SECTION_CAP] or None,
        events=count,
        events_lost=lost,
        missing=missing,
    )
    if mode == "inprocess" or not complete:
        observation.filesystem = Filesystem(
            reads=list(reads)[:_SECTION_CAP],
            writes=list(writes)[:_SECTION_CAP],
            deletes=list(deletes)[:_SECTION_CAP],
            mkdirs=list(mkdirs)[:_SECTION_CAP],
            renames=renames[:_SECTION_CAP],
            links=links[:_SECTION_CAP],
        )
        observation.network = Network(attempts=attempts[:_SECTION_CAP], binds=binds[:_SECTION_CAP])
    else:
        why = "the command ran as its own guest process: the guest records its exec and exit only"
        missing["filesystem"] = missing["network"] = why
    if not complete:
        missing["process_tree"] = "the run ended without a result: only events sent before"
    return observation
