"""The few facts Glasshouse reads about a process, in one place: ``/proc/<pid>/stat`` (the
command name may contain spaces and parentheses: the fields start after its last ``)``),
and whether a pid exists at all."""

from __future__ import annotations


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields after the command name: ``[state, ppid, pgrp, ...]``; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def ppid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields is not None and len(fields) > 1 else None


def running(pid: int) -> bool:
    """Exists and is not a zombie waiting to be reaped."""
    fields = stat_fields(pid)
    return fields is not None and fields[:1] != [b"Z"]


def exists(pid: int) -> bool:
    """A process with this pid exists (zombies included; one we may not signal counts)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_id(pid: int) -> str | None:
    """``"<pid> <start time in clock ticks>"``: one process, across pid reuse."""
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{pid} {fields[19].decode()}"
