"""Test support shared by every test file: waiting for a condition, and a process tree.

``until`` is the one way tests poll: it returns the predicate's first truthy value, or
fails naming what it waited for. A test that must show something did NOT happen first waits
with it for a later event that proves the moment has passed, then asserts the absence.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from glasshouse.core import procfs

T = TypeVar("T")


def until(
    predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.02, what: str
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that. Fail after
    ``timeout`` seconds with ``what`` (what was awaited) and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def descendants(root: int) -> set[int]:
    """Every live process whose parent chain leads to ``root`` (root excluded)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (parent := procfs.ppid(int(name))) is not None:
            parents[int(name)] = parent
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    return tree - {root}


@contextmanager
def watched(pids: set[int]) -> Iterator[Callable[[], set[int]]]:
    """pidfds on ``pids`` (immune to pid reuse); yields a function naming those still alive
    (a zombie counts as dead: its pidfd is readable)."""
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass  # already gone

    def alive() -> set[int]:
        if not fds:
            return set()
        readable, _, _ = select.select(list(fds.values()), [], [], 0)
        return {pid for pid, fd in fds.items() if fd not in readable}

    try:
        yield alive
    finally:
        for fd in fds.values():
            os.close(fd)


_PF_EXITING = 0x4
_SIGKILL_BIT = 1 << 8


def doomed(pid: int) -> bool:
    """Gone, a zombie, exiting, or with a SIGKILL pending: it runs no more user code."""
    fields = procfs.stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X", b"x"):
        return True
    if int(fields[6]) & _PF_EXITING:  # field 9 of stat: the task's flags
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return True
    return any(int(status.get(k, "0").strip(), 16) & _SIGKILL_BIT for k in ("SigPnd", "ShdPnd"))


@contextmanager
def ebpf_observer() -> Iterator[object]:
    """A freshly loaded eBPF observer, closed afterwards; the test skips with the reason where
    BPF cannot load here. For module-scoped fixtures: ``with ebpf_observer() as obs: yield obs``."""
    import pytest

    from glasshouse.core.profiling import ObserverUnavailable
    from glasshouse.observe.ebpf import EbpfObserver

    try:
        obs = EbpfObserver()
    except ObserverUnavailable as exc:
        pytest.skip(f"eBPF observer unavailable: {exc}")
    try:
        yield obs
    finally:
        obs.close()
