"""The few facts Glasshouse reads from ``/proc/<pid>/stat``, parsed in one place (the
command name may contain spaces and parentheses: the fields start after its last ``)``)."""

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


def owner_id(pid: int) -> str | None:
    """``"<pid> <start time in clock ticks>"``: one process, across pid reuse."""
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{pid} {fields[19].decode()}"
