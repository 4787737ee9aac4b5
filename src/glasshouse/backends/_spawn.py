"""What a backend runs between fork and exec: the :class:`Command` it executes, the shell's
executable lookup (:func:`resolve_executable`) and the child side of the fork (:func:`child`).

The child gets its own session, the given stdio, no other inherited fd, the rlimits and
default signal dispositions, and SIGKILL for when its parent dies (``PR_SET_PDEATHSIG``, kept
across the exec: a Glasshouse process killed outright takes its sandbox runtime with it), then
blocks on the gate pipe until the parent releases it, and execs. A failure before the exec is
written to the error pipe as ``stage:errno``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import queue
import resource
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from glasshouse.core.execution import CommandNotRunnable

_FD_MAX = 0x7FFFFFFF
_PR_SET_PDEATHSIG = 1


@dataclass
class Command:
    """The host-side command a backend actually executes for a spec."""

    exe: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    #: (resource, soft, hard) rlimits applied in the child before exec
    rlimits: list[tuple[int, int, int]] = field(default_factory=list)
    #: fds (besides 0-2) the child must inherit
    pass_fds: tuple[int, ...] = ()
    #: (uid, gid) the child switches to before the gate (root only; supplementary groups
    #: dropped), so a sandbox runtime starts unprivileged on the host
    user: tuple[int, int] | None = None


def resolve_executable(name: str, path: str, cwd: str | None = None) -> str:
    """Find ``name`` as a shell would; raise CommandNotRunnable (127/126) like a shell."""
    if "/" in name:
        candidate = name if os.path.isabs(name) or cwd is None else os.path.join(cwd, name)
        if not os.path.exists(candidate):
            raise CommandNotRunnable(f"{name}: no such file or directory", 127)
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            raise CommandNotRunnable(f"{name}: permission denied (not executable)", 126)
        return candidate
    # (a PATH walk rather than shutil.which: shutil drags bz2/lzma into CLI start-up)
    denied = None
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = candidate
    if denied is not None:
        raise CommandNotRunnable(f"{name}: permission denied (not executable)", 126)
    raise CommandNotRunnable(f"{name}: command not found", 127)


def child(  # pragma: no cover - runs between fork and exec
    command: Command,
    in_r: int,
    out_w: int,
    err_w: int,
    gate_r: int,
    errpipe_w: int,
    fd_limit: int,
    parent: tuple[int, Callable[..., int] | None] = (0, None),
) -> None:
    """``parent``: the forking process's pid and ``prctl`` (:func:`prctl`, loaded before the
    fork: a forked child loads no library)."""
    stage = "setup"
    try:
        os.setsid()
        os.dup2(in_r, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        _close_inherited((gate_r, errpipe_w, *command.pass_fds), fd_limit)
        for fd in command.pass_fds:
            os.set_inheritable(fd, True)
        for res, soft, hard in command.rlimits:
            resource.setrlimit(res, (soft, hard))
        # CPython ignores SIGPIPE and SIGXFSZ; an exec keeps SIG_IGN, so restore defaults.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if command.cwd:
            stage = "chdir"
            os.chdir(command.cwd)
        if command.user is not None:
            stage = "setuid"
            uid, gid = command.user
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        _die_with_parent(*parent)  # (after the uid switch, which would reset it)
        stage = "gate"
        if os.read(gate_r, 1) != b"1":
            os._exit(125)
        stage = "exec"
        os.execve(command.exe, command.argv, command.env)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.write(errpipe_w, f"{stage}:{exc.errno or errno.EINVAL}".encode())
    except BaseException:
        with contextlib.suppress(OSError):
            os.write(errpipe_w, f"{stage}:{errno.EINVAL}".encode())
    finally:
        os._exit(127)


def _die_with_parent(  # pragma: no cover - runs between fork and exec
    parent_pid: int, prctl: Callable[..., int] | None
) -> None:
    """SIGKILL when the parent dies; if it already has (we were reparented before the
    ``prctl`` took), go now: nobody would ever release or reap us."""
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(125)


class _Spawner:
    """The one thread every run is forked from (but the main thread's). A parent-death
    signal fires when the *thread* that forked the child ends (prctl(2)), not the process: a
    sandbox forked from a short-lived thread (a web server's worker that idles out, a session
    opened from a task) would be killed with it. Forked here, the parent thread lives as long
    as the process."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def fork(self, child: Callable[[], None]) -> int:
        """``os.fork()`` on a thread that lives as long as the process; the child runs
        ``child`` (which must exec or ``os._exit``); returns the pid or raises the fork's
        OSError."""
        if threading.current_thread() is threading.main_thread():
            return _fork(child)
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # (also after a fork)
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve, args=(self._jobs,), name="glasshouse-spawner", daemon=True
                )
                self._thread.start()
                self._pid = os.getpid()
        job = _Job(child)
        self._jobs.put(job)
        job.done.wait()
        if isinstance(job.outcome, OSError):
            raise job.outcome
        return int(job.outcome)

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            job = jobs.get()
            try:
                job.outcome = _fork(job.child)
            except OSError as exc:
                job.outcome = exc
            job.done.set()


class _Job:
    __slots__ = ("child", "done", "outcome")

    def __init__(self, child: Callable[[], None]) -> None:
        self.child = child
        self.done = threading.Event()
        self.outcome: int | OSError = 0


def _fork(child: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only execs or exits
        try:
            child()
        finally:
            os._exit(127)
    return pid


#: ``fork(child)``: see :class:`_Spawner`.
fork = _Spawner().fork


@functools.cache
def prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None where it cannot be loaded (then a child outlives a killed
    parent until the next start sweeps its cgroup). Call it before forking."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _close_inherited(keep: tuple[int, ...], fd_limit: int) -> None:
    """Close every fd but 0-2 and ``keep``: whatever we were started with (a jobserver pipe,
    a ``flock``, a launcher's socket, an ``exec 7</``) must not reach the workload, and
    bubblewrap passes on all it inherits. os.closerange is one close_range(2) per gap."""
    low = 3
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, fd_limit)


def fd_limit() -> int:
    """One past the highest fd this process can hold (the hard RLIMIT_NOFILE, which the
    kernel caps at fs.nr_open): where :func:`_close_inherited` stops. Read before the fork."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return _FD_MAX if hard == resource.RLIM_INFINITY else min(max(hard, 1024), _FD_MAX)
