"""The fallback host observer for hosts without BPF: ``strace -f`` attached to the gated
root, its output parsed into the same receipt sections.

Lower fidelity than eBPF, and labeled so in the receipt (observer ``strace``, reason says
why): it attaches with ptrace to the already-forked root (``-p``), where strace cannot
install its ``--seccomp-bpf`` filter, so every syscall of the tree stops twice (slow);
resources come from the backend only; a process the tree hides from ptrace (a setuid
binary, or one that is already traced) is not seen. Nothing is lost silently: ptrace is
synchronous, and strings strace cut at ``-s`` count as truncations. The trace is parsed a
line at a time and each receipt list keeps at most ``list_cap`` entries (the rest counted in
``omitted``), so memory stays bounded however much the run does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from glasshouse.core import procfs
from glasshouse.core.execution import DEFAULT_LIST_CAP
from glasshouse.core.profiling import Observation, ObserverUnavailable
from glasshouse.observe._strace_parse import Parser

_STRING_MAX = 65536
_FIDELITY = (
    "strace fallback (ptrace, no seccomp-bpf when attaching): lower fidelity and much "
    "slower than eBPF; no kernel resource accounting"
)


class StraceObserver:
    name = "strace"
    provenance = "host"
    #: ``start(pid, list_cap=N)``: each session keeps at most N entries per receipt list.
    list_cap_aware = True

    def __init__(self, fallback_reason: str | None = None) -> None:
        self.strace = shutil.which("strace")
        if not self.strace:
            raise ObserverUnavailable("strace is not installed (apt install strace)")
        self.reason = _FIDELITY + (f"; used because {fallback_reason}" if fallback_reason else "")

    def start(self, root_pid: int, *, list_cap: int | None = None) -> StraceSession:
        return StraceSession(self, root_pid, list_cap or DEFAULT_LIST_CAP)


class StraceSession:
    def __init__(
        self, observer: StraceObserver, root_pid: int, list_cap: int = DEFAULT_LIST_CAP
    ) -> None:
        self.observer = observer
        self.root_pid = root_pid
        self.list_cap = list_cap
        self._dir = tempfile.mkdtemp(prefix="glasshouse-strace-")
        self._out = os.path.join(self._dir, "trace")
        self._cwd = _readlink(f"/proc/{root_pid}/cwd") or "/"
        self._ppid = _ppid(root_pid)
        cmd = [
            observer.strace or "strace",
            "-f",
            "-q",
            "-ttt",
            "-yy",
            "-xx",
            "-s",
            str(_STRING_MAX),
            "-o",
            self._out,
            "-p",
            str(root_pid),
        ]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 5
        while _tracer(root_pid) != self._proc.pid:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._stop_strace()
                self._cleanup()
                raise ObserverUnavailable(f"strace could not attach to {root_pid}: {err}")
            time.sleep(0.005)

    def _stop_strace(self) -> str:
        if self._proc.poll() is None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.send_signal(signal.SIGTERM)  # strace detaches on SIGTERM
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        return err.strip()[-500:]

    def _cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def stop(self) -> Observation:
        self._stop_strace()
        parser = Parser(self.root_pid, self._ppid, self._cwd, self.list_cap)
        try:
            # a line at a time: the trace of a busy run can be far larger than memory
            with open(self._out, encoding="ascii", errors="replace", newline="\n") as f:
                for line in f:
                    parser.line(line.rstrip("\n"))
        except OSError:
            pass
        finally:
            self._cleanup()
        return parser.observation(self.observer.name, self.observer.reason)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _ppid(pid: int) -> int:
    found = procfs.ppid(pid)
    return os.getpid() if found is None else found


def _tracer(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
