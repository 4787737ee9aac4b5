"""Running the request's command: ``python3 -c CODE`` in this warm interpreter (no
fork/exec: those run in the emulated guest kernel on kvm_pvm hosts and cost seconds),
anything else as a child process; and the command's stdin/stdout/stderr files.

Only built-in modules at import (``subprocess``, ``resource``... are loaded by the runners:
the warm-up imports them before the snapshot, a cold boot only when it needs them)."""

from __future__ import annotations

import os
import sys

from gh_audit import GuestEvents
from gh_system import PRE

#: argv[0] values run in this interpreter when followed by ``-c CODE``.
PYTHONS = {"python", "python3", "python3.11", "/usr/bin/python3", "/usr/bin/python3.11"}


def runs_inprocess(argv: list[str]) -> bool:
    return len(argv) >= 3 and argv[0] in PYTHONS and argv[1] == "-c"


RLIMITS = (
    ("cpu_s", "RLIMIT_CPU"),
    ("memory_bytes", "RLIMIT_AS"),
    ("pids", "RLIMIT_NPROC"),
    ("file_size_bytes", "RLIMIT_FSIZE"),
)


def run_exec(limits: dict, argv: list[str], env: dict, cwd: str, fds: tuple[int, int, int]) -> dict:
    """fork+exec the command. No preexec_fn, so CPython uses vfork: copying this big warm
    process's page tables in a real fork costs ~0.8 s of emulated kernel on kvm_pvm. The
    rlimits are applied with prlimit(2) right after the spawn (inherited by everything the
    command starts later); they shape resources inside a VM the workload fully controls
    anyway, the hard bounds being the VM's RAM and the host's wall-clock kill."""
    import resource
    import subprocess

    # No cgroups in the guest kernel and RLIMIT_NPROC does not bind root: a pids limit runs
    # the command as an unprivileged guest user.
    ids = {"user": 65534, "group": 65534, "extra_groups": []} if limits.get("pids") else {}
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
            **ids,
        )
    except FileNotFoundError:
        return {"exit_code": 127, "error": None, "not_found": argv[0]}
    except PermissionError:
        return {"exit_code": 126, "error": None, "not_found": argv[0]}
    for key, name in RLIMITS:
        value = limits.get(key)
        if value:
            value = int(-(-value // 1))
            try:
                resource.prlimit(proc.pid, getattr(resource, name), (value, value))
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
) -> dict:
    import builtins
    import resource
    import traceback

    if PRE.get("stdio") != fds:
        stdio(fds)
    sys.argv = ["-c", *args]
    os.environ.clear()
    os.environ.update(env)
    if cwd != PRE.get("cwd"):
        os.chdir(cwd)
    sys.path[0:0] = [""]
    if limits.get("memory_bytes"):
        resource.setrlimit(
            resource.RLIMIT_AS, (int(limits["memory_bytes"]), resource.RLIM_INFINITY)
        )
    before = resource.getrusage(resource.RUSAGE_SELF)
    exit_code = 0
    if events is not None:
        events.start()
    try:
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as exc:
        code_ = exc.code
        if code_ is None:
            exit_code = 0
        elif isinstance(code_, int):
            exit_code = code_ & 0xFF
        else:
            print(code_, file=sys.stderr)
            exit_code = 1
    except BaseException as exc:
        # Like the interpreter: the traceback starts at the user's code, not at this init.
        traceback.print_exception(
            type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None
        )
        exit_code = 1
    finally:
        if events is not None:
            events.stop()
        if limits.get("memory_bytes"):
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"exit_code": exit_code, "cpu_time_ms": int(cpu * 1000), "max_rss_kb": after.ru_maxrss}


def stdio(fds: tuple[int, int, int]) -> None:
    """Make fds 0/1/2 and sys.std* the command's files (before the snapshot when warm)."""
    import io

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    sys.stdin = io.TextIOWrapper(
        io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="surrogateescape"
    )
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=False,
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    PRE["stdio"] = fds


def open_io() -> tuple[int, int, int]:
    """stdin/stdout/stderr files of the command, in tmpfs /run/gh."""
    os.makedirs("/run/gh", exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    return tuple(os.open(f"/run/gh/{n}", flags, 0o600) for n in ("stdin", "stdout", "stderr"))
