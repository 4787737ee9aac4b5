"""Finding a process tree without a cgroup: the /proc parent links (:func:`descendants`,
:func:`orphans_of`) and becoming the child subreaper (:func:`set_subreaper`), so orphans of
a run reparent to us instead of init and can still be found and killed."""

from __future__ import annotations

import os

from glasshouse.core import procfs

_PR_SET_CHILD_SUBREAPER = 36


def set_subreaper() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ppid = procfs.ppid(int(entry.name))
        if ppid is not None:
            out[int(entry.name)] = ppid
    return out


def descendants(root: int) -> list[int]:
    ppids = _ppids()
    children: dict[int, list[int]] = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def orphans_of(reaper: int, exclude: set[int]) -> list[int]:
    return [p for p, pp in _ppids().items() if pp == reaper and p not in exclude]
