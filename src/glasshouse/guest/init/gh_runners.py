"""Running the request's command: ``python3 -c CODE`` in this warm interpreter (no
fork/exec: those run in the emulated guest kernel on kvm_pvm hosts and cost seconds),
anything else as a child process; and the command's stdin/stdout/stderr files.

Only built-in modules at import (``subprocess``, ``resource``... are loaded by the runners:
the warm-up imports them before the snapshot, a cold boot only when it needs them)."""

from __future__ import annotations

import os
import sys

import gh_stream
from gh_audit import GuestEvents
from gh_stream import StreamingFile
from gh_system import PRE

#: argv[0] values run in this interpreter when followed by ``-c CODE``.
PYTHONS = {"python", "python3", "python3.11", "/usr/bin/python3", "/usr/bin/python3.11"}


def runs_inprocess(argv: list[str]) -> bool:
    return len(argv) >= 3 and argv[0] in PYTHONS and argv[1] == "-c"


def run_exec(limits: dict, argv: list[str], env: dict, cwd: str, fds: tuple[int, int, int]) -> dict:
    """vfork+exec the command. No preexec_fn and no user=/group= (either makes CPython fork):
    copying this big warm process's page tables in a real fork costs seconds of emulated
    kernel on kvm_pvm. The command starts with its limits (gh_limits.SpawnLimits: rlimits
    set on this init around the spawn, ``nobody`` for a pids limit); ``cpu_s`` is applied
    right after the spawn. They shape resources inside a VM the workload fully controls
    anyway, the hard bounds being the VM's RAM and the host's wall-clock kill."""
    import resource
    import subprocess

    from gh_limits import SpawnLimits

    spawn = SpawnLimits(limits)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
    except FileNotFoundError:
        return {"exit_code": 127, "error": None, "not_found": argv[0]}
    except PermissionError:
        return {"exit_code": 126, "error": None, "not_found": argv[0]}
    finally:
        spawn.restore()
    spawn.harden(proc.pid)
    if limits.get("cpu_s"):
        value = int(-(-limits["cpu_s"] // 1))
        try:
            resource.prlimit(proc.pid, resource.RLIMIT_CPU, (value, value))
        except (ProcessLookupError, OSError):
            pass
    _, status, ru = os.wait4(proc.pid, 0)
    out: dict = {"cpu_time_ms": int((ru.ru_utime + ru.ru_stime) * 1000), "max_rss_kb": ru.ru_maxrss}
    out["pid"] = proc.pid
    if os.WIFSIGNALED(status):
        out["signal"] = os.WTERMSIG(status)
    else:
        out["exit_code"] = os.WEXITSTATUS(status)
    return out


def run_inprocess(
    limits: dict,
    code: str,
    args: list[str],
    env: dict,
    cwd: str,
    fds: tuple[int, int, int],
    events: GuestEvents | None = None,
    on_write: object = None,
) -> dict:
    """``exec`` the code in this interpreter, with fds 0/1/2 the command's files (``on_write``
    is called after each write of sys.stdout/sys.stderr: the output streams). Memory is
    capped (gh_limits.HeapCap: MemoryError past ``memory_bytes`` or what the guest can
    give, reported as ``oom``), ``pids`` is RLIMIT_NPROC as ``nobody``; ``cpu_s`` does not
    apply (the host's wall-clock deadline does). A fork the code makes (os.fork) ends when
    the code does: it must not go on to answer the host as this init."""
    import builtins
    import resource
    import traceback

    from gh_limits import HeapCap, limit_process_count, unlimit_process_count

    if PRE.get("stdio") != fds:
        stdio(fds)
    sys.argv = ["-c", *args]
    os.environ.clear()
    os.environ.update(env)
    if cwd != PRE.get("cwd"):
        os.chdir(cwd)
    sys.path[0:0] = [""]
    me = os.getpid()
    heap = HeapCap(limits.get("memory_bytes"))
    counted = limit_process_count(limits.get("pids"))
    before = resource.getrusage(resource.RUSAGE_SELF)
    exit_code = 0
    oom = None
    if events is not None:
        events.start()
    gh_stream.WRITE_HOOK[0] = on_write
    try:
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as exc:
        exit_code = _exit_status(exc.code)
    except BaseException as exc:
        if isinstance(exc, MemoryError) and os.getpid() == me:
            heap.release()  # room to print the traceback
            oom = heap.note()
        # Like the interpreter: the traceback starts at the user's code, not at this init.
        traceback.print_exception(
            type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None
        )
        exit_code = 1
    finally:
        gh_stream.WRITE_HOOK[0] = None  # what is left goes with the result
        if os.getpid() != me:
            _flush()
            os._exit(exit_code)
        if events is not None:
            events.stop()
        if counted:
            unlimit_process_count()
        heap.release()
    _flush()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = {"exit_code": exit_code, "cpu_time_ms": int(cpu * 1000), "max_rss_kb": after.ru_maxrss}
    if oom is not None:
        out["oom"] = oom
    return out


def _exit_status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def stdio(fds: tuple[int, int, int]) -> None:
    """Make fds 0/1/2 and sys.std* the command's files (before the snapshot when warm);
    sys.stdout/sys.stderr write through gh_stream.StreamingFile (output streamed as Python
    flushes it)."""
    import io

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    sys.stdin = io.TextIOWrapper(
        io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="surrogateescape"
    )
    sys.stdout = io.TextIOWrapper(
        StreamingFile(1, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=False,
    )
    sys.stderr = io.TextIOWrapper(
        StreamingFile(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    PRE["stdio"] = fds


def open_io() -> tuple[int, int, int]:
    """stdin/stdout/stderr files of the command, in tmpfs /run/gh."""
    os.makedirs("/run/gh", exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    # 0666: a run as ``nobody`` may reopen them (/dev/stdout); nothing else in the VM cares
    files = tuple(os.open(f"/run/gh/{n}", flags, 0o666) for n in ("stdin", "stdout", "stderr"))
    for fd in files:
        os.fchmod(fd, 0o666)  # (the umask took some bits)
    return files
