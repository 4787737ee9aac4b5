"""Which Glasshouse process owns a leftover (a VM directory, a workspace): ``"<pid> <start>"``
identifies a process across pid reuse, so a sweep removes only what a dead process left."""

from __future__ import annotations

import functools
import os

from glasshouse.core import procfs


@functools.cache
def _mine(pid: int) -> str:
    return procfs.owner_id(pid) or f"{pid} 0"


def me() -> str:
    """This process's owner id (cached per pid: a forked child gets its own)."""
    return _mine(os.getpid())


def alive(owner: str) -> bool:
    """Is the process that wrote ``owner`` still running (the same one, not a pid reuse)?"""
    try:
        pid = int(owner.split()[0])
    except (ValueError, IndexError):
        return False
    return procfs.owner_id(pid) == owner
