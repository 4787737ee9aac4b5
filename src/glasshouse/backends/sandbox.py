"""The ``sandbox`` backend: the workload runs under bubblewrap (or gVisor's runsc).

``SandboxBackend`` reuses :class:`~glasshouse.backends.process.ProcessBackend` for the gate,
the per-run cgroup (memory.max, pids.max, cpu quota, accounting, whole-tree kill), rlimits,
output capture and timeouts; it only changes *what* is executed: ``bwrap`` with

- new user, pid, ipc, uts, mount, cgroup and (unless ``spec.network``) net namespaces; the
  net namespace has only its own ``lo``;
- a read-only ``/usr`` (plus the merged-/usr symlinks) and a minimal read-only ``/etc``
  (synthetic passwd/group/hosts, the loader cache, Python's site config, alternatives);
- a fresh per-run workspace (a host directory) as ``/workspace`` and cwd, a size-capped tmpfs
  as ``/tmp``, a private ``/proc`` and a minimal ``/dev``;
- an unprivileged identity on both sides: bwrap is started by a per-run host uid (when we are
  root), so the sandbox owns nothing on the host, and the command runs as uid 1000 inside;
- no capabilities, ``--die-with-parent``, ``--new-session`` (no TIOCSTI into our terminal) and a
  libseccomp deny-list filter (:mod:`glasshouse.backends._seccomp`).

``GVisorBackend`` (``runtime="gvisor"``) runs the same layout as an OCI bundle under ``runsc``
with ``--platform=ptrace``: the workload talks to gVisor's user-space kernel, so the host sees
(and host eBPF observes) only the sentry and gofer processes.

Per-run resources (workspace, seccomp fd, status pipe, uid) are made by
:meth:`SandboxBackend.prepare_run`, separate from :meth:`start`, so a warm pool can make them
ahead and hand one to ``start(..., run=...)``; each is used once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glasshouse.backends import _seccomp, _workspace
from glasshouse.backends._quota import QuotaUnavailable
from glasshouse.backends._tree import remove_tree
from glasshouse.backends._workspace import DEFAULT_OUTPUT_CAP, Workspace, ensure_base
from glasshouse.backends.process import Command, ProcessBackend, ProcessHandle
from glasshouse.core.execution import (
    BackendError,
    BackendUnavailable,
    CommandNotRunnable,
    ExecutionResult,
    ExecutionSpec,
    Sink,
)

if TYPE_CHECKING:
    from glasshouse.doctor import Check

#: Where the command runs inside the sandbox (the per-run workspace).
INSIDE_WORKSPACE = "/workspace"
#: Where glasshouse-init (the sandbox's PID 1) is mounted inside.
INIT_PATH = "/.glasshouse-init"
_GVISOR_STATUS_DIR = "/.glasshouse-status"
_GVISOR_TASKS_BASE = 256
_GVISOR_TASKS_PER_PROC = 32
#: uid/gid of the command inside a bubblewrap sandbox.
INSIDE_UID = 1000
INSIDE_GID = 1000
HOSTNAME = "glasshouse"
#: Per-run host uids (root only) come from [_UID_BASE, _UID_BASE + _UID_SPAN): far from
#: system users, login users and the usual /etc/subuid ranges.
_UID_BASE = 0x70000000
_UID_SPAN = 1 << 16
#: Size cap of the /tmp tmpfs when the spec sets no memory limit (its pages are charged to
#: the run's memory cgroup either way).
_DEFAULT_TMP_BYTES = 256 << 20
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_MERGED_USR = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"))
_OPTIONAL_MERGED_USR = (("usr/lib64", "/lib64"), ("usr/lib32", "/lib32"))
#: /proc files of the host's that bwrap's fresh /proc still shows: each is overlaid with an
#: empty read-only file (the host's boot command line, the id of its current boot).
_HIDDEN_PROC = ("/proc/cmdline", "/proc/sys/kernel/random/boot_id")
_GVISOR_NOTE = (
    "gVisor runtime: the workload's syscalls are served by gVisor's user-space kernel; host "
    "observation (eBPF) sees only the runsc sentry/gofer processes, not the workload's own "
    "processes, files or connections"
)


def _default_base() -> Path:
    env = os.environ.get("GLASSHOUSE_SANDBOX_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/glasshouse/sandbox")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(runtime) / f"glasshouse-sandbox-{os.geteuid()}"


@dataclass
class SandboxRun:
    """Everything one run needs besides its cgroup, made ahead of :meth:`SandboxBackend.start`.

    Used exactly once; :meth:`close` releases it (the backend calls it at cleanup).
    """

    workspace: Workspace
    host_uid: int
    host_gid: int
    seccomp_fd: int = -1
    #: bwrap's --json-status-fd pipe (child-pid, exit-code)
    status_r: int = -1
    status_w: int = -1
    #: glasshouse-init's pipe: the command's raw wait status
    init_r: int = -1
    init_w: int = -1
    used: bool = False
    closed: bool = False
    #: gVisor: the per-run bundle and state directories (under the workspace's parent)
    extra_dirs: list[Path] = field(default_factory=list)

    def close_child_fds(self) -> None:
        """Close the parent's copies of fds only the child needs (after fork)."""
        for name in ("seccomp_fd", "status_w", "init_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def read_status(self, fd: int) -> list[dict[str, Any]]:
        """The JSON documents written to a status pipe (bwrap's or glasshouse-init's)."""
        if fd < 0:
            return []
        self.close_child_fds()
        data = b""
        os.set_blocking(fd, False)
        with contextlib.suppress(BlockingIOError, OSError):
            while len(data) < 65536 and (chunk := os.read(fd, 4096)):
                data += chunk
        return _json_docs(data)

    def close(self) -> None:
        if self.closed:
            return
        self.close_child_fds()
        for name in ("status_r", "init_r"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
        for d in self.extra_dirs:
            with contextlib.suppress(OSError):
                remove_tree(d)
        self.workspace.remove()  # raises if it cannot: the receipt says so (cleanup_error)
        self.closed = True


def _json_docs(data: bytes) -> list[dict[str, Any]]:
    """Parse a stream of concatenated JSON objects, stopping at the first malformed one."""
    docs: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    text, pos = data.decode(errors="replace"), 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


class SandboxBackend(ProcessBackend):
    """Run the workload in a bubblewrap sandbox (or gVisor with ``runtime="gvisor"``)."""

    name = "sandbox"
    isolation = "namespaces"

    def __init__(
        self,
        *,
        runtime: str = "bwrap",
        cgroups: bool | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        host_uid: int | None = None,
        cpu_cores: float | None = None,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        seccomp: bool = True,
    ) -> None:
        """``runtime``: "bwrap" (default) or "gvisor". ``host_uid``: pin the host uid the
        sandbox runs as (root only; default a fresh uid per run). ``cpu_cores``: cgroup cpu
        quota. ``output_cap``: bytes of ``spec.outputs`` copied back, per file and in total.
        ``seccomp=False`` exists for measuring the filter's cost, not for use."""
        super().__init__(cgroups=cgroups)
        if runtime in ("bwrap", "bubblewrap"):
            runtime = "bwrap"
        elif runtime in ("gvisor", "runsc"):
            runtime = "gvisor"
            self.name = "gvisor"
            self.isolation = "gvisor"
        else:
            raise BackendUnavailable(f"unknown sandbox runtime {runtime!r} (bwrap or gvisor)")
        self.runtime = runtime
        self._base = Path(base_dir) if base_dir is not None else _default_base()
        self._pinned_uid = host_uid
        self._cpu_cores = cpu_cores
        self._output_cap = output_cap
        self._use_seccomp = seccomp and runtime == "bwrap"
        self._tls = threading.local()
        self._uid_counter = itertools.count(os.getpid() * 7919)
        self._sandbox_prepared = False
        self._binary = ""
        self._version = ""
        self._program: _seccomp.Program | None = None
        self._etc: dict[bool, Path] = {}  # network? -> /etc skeleton
        self._init: Path | None = None  # glasshouse-init, or None: runtime's own PID 1
        self._init_reason = ""
        self._static_args: dict[bool, list[str]] = {}
        #: leftovers of dead processes the last sweep could not remove (logged; never fatal)
        self.sweep_failures: list[str] = []

    # -- preparation (once per backend) -------------------------------------------------
    def prepare(self) -> None:
        super().prepare()
        with self._lock:
            if self._sandbox_prepared:
                return
            if self.runtime == "gvisor" and os.geteuid() != 0:
                raise BackendUnavailable(probe_gvisor()[1])
            exe = "runsc" if self.runtime == "gvisor" else "bwrap"
            found = shutil.which(exe)
            if found is None:
                pkg = "runsc" if self.runtime == "gvisor" else "bubblewrap"
                raise BackendUnavailable(f"{exe} not found: install the {pkg} package")
            # Resolved: bwrap is exec'd after dropping to the run's uid, which may not be
            # able to traverse the directory a PATH symlink lives in.
            self._binary = os.path.realpath(found)
            self._version = _tool_version(found)
            ensure_base(self._base)
            _workspace.sweep(self._base, failures=self.sweep_failures)
            if self._use_seccomp:
                try:
                    self._program = _seccomp.program()
                except _seccomp.SeccompUnavailable as exc:
                    raise BackendUnavailable(f"seccomp filter: {exc}") from exc
            try:
                self._init = build_init()
            except InitUnavailable as exc:  # still isolated; only signal deaths blur
                self._init, self._init_reason = None, str(exc)
            for net in (False, True):
                self._etc[net] = _etc_skeleton(self._base, net)
            if self.runtime == "bwrap":
                for net in (False, True):
                    self._static_args[net] = self._bwrap_static(net)
            else:
                for net in (False, True):
                    self._etc[net] = _gvisor_rootfs(self._base, self._etc[net])
            self._sandbox_prepared = True

    def _bwrap_static(self, network: bool) -> list[str]:
        args = [self._binary, "--unshare-user", "--unshare-pid", "--unshare-ipc"]
        args += ["--unshare-uts", "--unshare-cgroup"]
        if not network:
            args.append("--unshare-net")
        args += ["--uid", str(INSIDE_UID), "--gid", str(INSIDE_GID), "--hostname", HOSTNAME]
        args += ["--die-with-parent", "--new-session"]
        args += ["--ro-bind", "/usr", "/usr"]
        for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
            if (Path("/") / target).is_dir():
                args += ["--symlink", target, link]
        args += ["--ro-bind", str(self._etc[network]), "/etc"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for hidden, fd in zip(_HIDDEN_PROC, _empty_sources(), strict=True):
            args += ["--perms", "0444", "--ro-bind-data", str(fd), hidden]
        if self._init is not None:
            args += ["--as-pid-1", "--ro-bind", str(self._init), INIT_PATH]
        return args

    # -- per-run resources (a warm pool can call this ahead) ----------------------------
    def prepare_run(self) -> SandboxRun:
        """Create one run's workspace, uid, seccomp fd and status pipe."""
        self.prepare()
        # Cheap (a stat each): put back modes something else broke, so runs keep working.
        ensure_base(self._base, self._etc.values())
        _workspace.retry_left()
        uid, gid = self._next_identity()
        workspace = Workspace.create(self._base, uid, gid)
        run = SandboxRun(workspace, uid, gid)
        try:
            if self.runtime == "bwrap":
                if self._program is not None:
                    run.seccomp_fd = _seccomp.program_fd(self._program)
                run.status_r, run.status_w = os.pipe()
                if self._init is not None:
                    run.init_r, run.init_w = os.pipe()
        except Exception:
            run.close()
            raise
        return run

    def _next_identity(self) -> tuple[int, int]:
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        if self._pinned_uid is not None:
            return self._pinned_uid, self._pinned_uid
        uid = _UID_BASE + next(self._uid_counter) % _UID_SPAN
        return uid, uid

    # -- Prewarmable (glasshouse.core.execution): the server's warm pool ----------------
    def prewarm(self) -> SandboxRun:
        """One run's resources made ahead; any spec can use it (network is set at start)."""
        return self.prepare_run()

    def start_prewarmed(
        self,
        slot: SandboxRun,
        spec: ExecutionSpec,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
    ) -> ProcessHandle:
        return self.start(spec, stdout, stderr, run=slot)

    def discard(self, slot: SandboxRun) -> None:
        slot.close()

    # -- lifecycle ----------------------------------------------------------------------
    def start(
        self,
        spec: ExecutionSpec,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        *,
        run: SandboxRun | None = None,
    ) -> ProcessHandle:
        """Start ``spec`` in a fresh sandbox (``run``: one made ahead by prepare_run)."""
        self.prepare()
        if run is None:
            run = self.prepare_run()
        elif run.used or run.closed:
            raise BackendError("a prepared sandbox run can be used only once")
        run.used = True
        try:
            if spec.limits.disk_bytes is not None:  # at start: a pool's slot predates its spec
                run.workspace.limit_disk(spec.limits.disk_bytes)
            run.workspace.write_inputs(dict(spec.files))
        except QuotaUnavailable as exc:
            run.close()
            raise BackendError(f"limits.disk cannot be enforced: {exc}") from exc
        except (OSError, ValueError) as exc:
            run.close()
            raise BackendError(f"cannot place input files in the workspace: {exc}") from exc
        self._tls.run = run
        try:
            return super().start(spec, stdout, stderr)
        except BaseException:
            run.close()
            raise
        finally:
            self._tls.run = None

    def _pending_run(self) -> SandboxRun:
        run = getattr(self._tls, "run", None)
        if run is None:
            raise BackendError("sandbox run missing (start() must be called, not _command())")
        return run

    # -- ProcessBackend hooks -------------------------------------------------------------
    def _command(self, spec: ExecutionSpec) -> Command:
        run = self._pending_run()
        env = _sandbox_env(spec)
        cwd = _inside_cwd(spec.cwd)
        _check_runnable(spec.argv[0], env.get("PATH", _DEFAULT_PATH), cwd, run.workspace.path)
        network = bool(spec.network)
        if self.runtime == "gvisor":
            return self._gvisor_command(spec, run, env, cwd, network)
        args = list(self._static_args[network])
        tmp_size = spec.limits.memory_bytes or _DEFAULT_TMP_BYTES
        args += ["--size", str(tmp_size), "--tmpfs", "/tmp"]
        args += ["--bind", str(run.workspace.path), INSIDE_WORKSPACE, "--chdir", cwd]
        args += ["--remount-ro", "/"]  # bwrap's root tmpfs; /tmp and the workspace stay rw
        pass_fds: tuple[int, ...] = (run.status_w, *_empty_sources())
        args += ["--json-status-fd", str(run.status_w)]
        if run.seccomp_fd >= 0:
            args += ["--seccomp", str(run.seccomp_fd)]
            pass_fds += (run.seccomp_fd,)
        args.append("--")
        if run.init_w >= 0:
            args += [INIT_PATH, str(run.init_w)]
            pass_fds += (run.init_w,)
        args += list(spec.argv)
        user = (run.host_uid, run.host_gid) if os.geteuid() == 0 else None
        return Command(
            self._binary,
            args,
            env,
            None,
            rlimits=self._rlimits(spec),
            pass_fds=pass_fds,
            user=user,
        )

    def _gvisor_command(
        self, spec: ExecutionSpec, run: SandboxRun, env: dict[str, str], cwd: str, network: bool
    ) -> Command:
        run_dir = run.workspace.path.with_name(run.workspace.path.name + "-runsc")
        bundle, state, status = run_dir / "bundle", run_dir / "state", run_dir / "status"
        bundle.mkdir(parents=True)
        state.mkdir()
        run.extra_dirs.append(run_dir)
        argv = list(spec.argv)
        if self._init is not None:
            # No fd reaches the container's PID 1 through runsc: glasshouse-init writes the
            # wait status to a file in a per-run directory only the run's uid can write.
            status.mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(status, run.host_uid, run.host_gid)
            argv = [INIT_PATH, f"{_GVISOR_STATUS_DIR}/status", *argv]
        config = _oci_config(spec, argv, env, cwd, run, self._etc[network], self._init, status)
        (bundle / "config.json").write_text(json.dumps(config))
        container_id = f"gh-{run.workspace.path.name}"
        args = [self._binary, "--root", str(state), "--platform=ptrace", "--ignore-cgroups"]
        args += [f"--network={'host' if network else 'none'}"]
        args += ["run", "--bundle", str(bundle), container_id]
        return Command(self._binary, args, {"PATH": _DEFAULT_PATH}, None, rlimits=[])

    def _after_fork(self, handle: ProcessHandle, command: Command) -> None:
        run = self._pending_run()
        handle.context["run"] = run
        run.close_child_fds()
        cg = handle.cgroup
        if self._cpu_cores is not None and cg is not None:
            handle.limits_applied += cg.set_limits(None, None, self._cpu_cores)
        if self.runtime == "gvisor" and cg is not None and handle.spec.limits.pids is not None:
            # Inside gVisor, RLIMIT_NPROC enforces spec.pids. On the host the sentry and its
            # ptrace stubs are many tasks per guest process (measured: ~65 idle, ~20 more per
            # process), so the host pids.max is a proportional safety net, not the limit.
            host = _GVISOR_TASKS_BASE + _GVISOR_TASKS_PER_PROC * handle.spec.limits.pids
            cg.set_limits(None, host)

    def _finish_result(self, handle: ProcessHandle, result: ExecutionResult) -> None:
        run = handle.context.get("run")
        if not isinstance(run, SandboxRun):
            return
        spec = handle.spec
        result.network = "enabled" if spec.network else "loopback"
        result.details["runtime"] = self._version
        if run.workspace.quota:
            result.details["disk_limit"] = run.workspace.quota
        facts: dict[str, Any] = {
            "runtime": self._version,
            "root_fs": "read-only /usr and a minimal /etc; nothing else of the host",
            "workspace": f"{INSIDE_WORKSPACE} (fresh per-run directory, cwd)",
            "disk": run.workspace.quota or "no quota (the host filesystem's free space)",
            "tmp": "private tmpfs",
            "host_uid": run.host_uid,
            "capabilities": "none",
        }
        if self.runtime == "bwrap":
            namespaces = ["user", "pid", "ipc", "uts", "mount", "cgroup"]
            if not spec.network:
                namespaces.insert(2, "net")
            facts["namespaces"] = namespaces
            facts["uid"] = INSIDE_UID
            if self._program is not None:
                facts["seccomp"] = self._program.describe()
                facts["seccomp_program"] = self._program.sha256
                facts["seccomp_denied"] = list(self._program.denied)
            else:
                facts["seccomp"] = "disabled"
            self._bwrap_status(run, result, facts)
        else:
            status = next((d / "status" / "status" for d in run.extra_dirs), None)
            docs = _read_status_file(status)
            if self._init is None or _has_status(docs) or not self._setup_failed(result, ""):
                self._apply_wait_status(docs, result)
            facts["uid"] = run.host_uid
            facts["kernel"] = "gVisor sentry (user-space), platform ptrace"
            facts["observation"] = _GVISOR_NOTE
            result.details["observation_note"] = _GVISOR_NOTE
        if spec.outputs:
            result.outputs = run.workspace.collect_outputs(list(spec.outputs), self._output_cap)
            facts["outputs"] = [f"{k}: {v}" for k, v in run.workspace.output_status.items()]
        result.sandbox.update(facts)

    def _bwrap_status(
        self, run: SandboxRun, result: ExecutionResult, facts: dict[str, Any]
    ) -> None:
        docs = run.read_status(run.status_r)
        child = next((d["child-pid"] for d in docs if "child-pid" in d), None)
        if isinstance(child, int):
            # Host pid of the sandbox's pid 1 (bwrap's reaper); the command is its child,
            # pid 2 inside. An observer maps any host pid to its sandbox pid with the last
            # NSpid field of /proc/<pid>/status.
            facts["init_host_pid"] = child
            facts["command_ns_pid"] = 2
            info = next((d for d in docs if "child-pid" in d), {})
            for key in ("pid-namespace", "net-namespace", "mnt-namespace"):
                if isinstance(info.get(key), int):  # inode numbers, as in /proc/<pid>/ns/*
                    facts[key.replace("-", "_")] = info[key]
            facts["pid_mapping"] = (
                f"host {result.root_pid} = bwrap; host {child} = sandbox pid 1 (glasshouse-init); "
                "the command is sandbox pid 2; NSpid in /proc/<pid>/status maps the rest"
            )
        init_docs = run.read_status(run.init_r)
        started = _has_status(init_docs) if self._init is not None else isinstance(child, int)
        if not started and self._setup_failed(result, "bwrap:"):
            return
        self._apply_wait_status(init_docs, result)

    def _setup_failed(self, result: ExecutionResult, prefix: str) -> bool:
        """The command never ran and nothing killed the sandbox: the runtime's own setup
        failed. Say so (its last message is on stderr) instead of reporting its exit code."""
        if result.error is not None or result.timed_out or result.signal is not None:
            return False
        if result.oom_killed:
            return False
        why = _last_runtime_line(result.stderr.data, prefix) or f"exit {result.exit_code}"
        result.error = f"sandbox setup failed: {why}"
        result.exit_code = None
        return True

    def _apply_wait_status(self, docs: list[dict[str, Any]], result: ExecutionResult) -> None:
        """Replace the runtime's "exit code 128+N" with the command's real wait status."""
        if result.timed_out or result.signal is not None or result.exit_code is None:
            return  # the sandbox itself was killed (timeout, kill, oom): that is the outcome
        status = next((d["wait-status"] for d in docs if "wait-status" in d), None)
        if not isinstance(status, int) or not 0 <= status <= 0xFFFF:
            if self._init is None and result.exit_code > 128:
                result.details["exit_status_note"] = (
                    f"no glasshouse-init ({self._init_reason}): exit code {result.exit_code} "
                    "may mean the command was killed by a signal"
                )
            return
        if os.WIFSIGNALED(status):
            result.signal, result.exit_code = os.WTERMSIG(status), None
        elif os.WIFEXITED(status):
            result.exit_code = os.WEXITSTATUS(status)

    def _cleanup_extra(self, handle: ProcessHandle) -> None:
        run = handle.context.pop("run", None)
        if isinstance(run, SandboxRun):
            run.close()


class GVisorBackend(SandboxBackend):
    """The sandbox layout under gVisor (``runsc --platform=ptrace``)."""

    name = "gvisor"
    isolation = "gvisor"

    def __init__(self, **options: Any) -> None:
        options.setdefault("runtime", "gvisor")
        if options["runtime"] not in ("gvisor", "runsc"):
            raise BackendUnavailable("GVisorBackend runs only the gvisor runtime")
        super().__init__(**options)


def _read_status_file(path: Path | None) -> list[dict[str, Any]]:
    """glasshouse-init's status file (gVisor), read without following links, size-capped."""
    if path is None:
        return []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        return _json_docs(os.read(fd, 4096))
    finally:
        os.close(fd)


# -- glasshouse-init ---------------------------------------------------------------------
class InitUnavailable(Exception):
    """glasshouse-init could not be built (no C compiler) and is not in the cache."""


_INIT_SOURCE = Path(__file__).with_name("sandbox_init") / "glasshouse-init.c"
_init_lock = threading.Lock()


def _cache_dir() -> Path:
    env = os.environ.get("GLASSHOUSE_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/glasshouse")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glasshouse"


def build_init(cache: Path | None = None) -> Path:
    """The glasshouse-init binary for this source, compiled once into the cache.

    Keyed by the source's hash; a static binary when libc.a is there (no loader work at each
    sandbox start), else dynamic. Raises InitUnavailable when it can be neither found nor built.
    """
    try:
        source = _INIT_SOURCE.read_bytes()
    except OSError as exc:
        raise InitUnavailable(f"init source missing: {exc}") from exc
    key = hashlib.sha256(source).hexdigest()[:16]
    target = (cache or _cache_dir()) / f"sandbox-init-{key}" / "glasshouse-init"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise InitUnavailable("no C compiler to build glasshouse-init (apt install gcc)")
    with _init_lock:
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        tmp = target.with_name(f".glasshouse-init-{os.getpid()}")
        errors = []
        for flags in (["-static"], []):
            cmd = [cc, "-O2", "-Wall", *flags, "-o", str(tmp), str(_INIT_SOURCE)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
                continue
            if out.returncode == 0:
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
                return target
            errors.append(out.stderr.strip()[-300:])
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InitUnavailable("cannot build glasshouse-init: " + " | ".join(errors))


# -- helpers ----------------------------------------------------------------------------
def _tool_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"{binary} --version failed: {exc}") from exc
    first = (out.stdout or out.stderr).strip().splitlines()
    name = Path(binary).name
    text = first[0].strip() if first else name
    if name == "runsc":
        return "gvisor " + text.removeprefix("runsc version ").strip()
    return text


@functools.cache
def _empty_sources() -> tuple[int, ...]:
    """One fd per :data:`_HIDDEN_PROC` file that reads as empty forever (/dev/null,
    close-on-exec; a child inherits them only through ``pass_fds``): bwrap copies from each
    into the file it lays over that path (and closes its copy, hence one each). Opened once
    per process: the bwrap arguments are built once per backend."""
    return tuple(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in _HIDDEN_PROC)


def _sandbox_env(spec: ExecutionSpec) -> dict[str, str]:
    """The command's environment: the spec's as given, else a minimal one (never the host's)."""
    if spec.env is not None:
        return dict(spec.env)
    return {
        "PATH": _DEFAULT_PATH,
        "HOME": INSIDE_WORKSPACE,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
    }


def _inside_cwd(cwd: str | None) -> str:
    if not cwd:
        return INSIDE_WORKSPACE
    path = os.path.normpath(cwd if cwd.startswith("/") else f"{INSIDE_WORKSPACE}/{cwd}")
    return path


def _host_view(inside: str, workspace: Path) -> Path | None:
    """Where a path inside the sandbox lives on the host, for the parts we map 1:1."""
    path = os.path.normpath(inside)
    if path == INSIDE_WORKSPACE or path.startswith(INSIDE_WORKSPACE + "/"):
        return workspace / path[len(INSIDE_WORKSPACE) + 1 :]
    if path.startswith("/usr/"):
        return Path(path)
    for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
        if path.startswith(link + "/"):
            return Path("/") / target / path[len(link) + 1 :]
    return None


def _check_runnable(name: str, path: str, cwd: str, workspace: Path) -> None:
    """Raise CommandNotRunnable (127/126) for a command the sandbox cannot exec.

    Checked against the sandbox's view (workspace, /usr) rather than letting bwrap fail, so
    "not found" is exit 127 with a clear message, as in a shell.
    """
    if "/" in name:
        inside = name if name.startswith("/") else f"{cwd}/{name}"
        host = _host_view(inside, workspace)
        if host is None or not host.exists():
            raise CommandNotRunnable(f"{name}: no such file or directory in the sandbox", 127)
        if host.is_dir() or not os.access(host, os.X_OK):
            raise CommandNotRunnable(f"{name}: permission denied (not executable)", 126)
        return
    for entry in path.split(":"):
        host = _host_view(f"{entry or cwd}/{name}", workspace)
        if host is not None and host.is_file() and os.access(host, os.X_OK):
            return
    raise CommandNotRunnable(f"{name}: command not found in the sandbox", 127)


def _last_runtime_line(stderr: bytes, prefix: str) -> str:
    for line in reversed(stderr.decode(errors="replace").splitlines()):
        if line.startswith(prefix) and line.strip():
            return line.strip()[:500]
    return ""


def _has_status(docs: list[dict[str, Any]]) -> bool:
    return any("wait-status" in d for d in docs)


def _etc_files(network: bool) -> dict[str, bytes | str]:
    """The sandbox's /etc: name -> bytes (a file) or str (a symlink target)."""
    files: dict[str, bytes | str] = {
        "passwd": (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"sandbox:x:{INSIDE_UID}:{INSIDE_GID}:sandbox:{INSIDE_WORKSPACE}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "group": f"root:x:0:\nsandbox:x:{INSIDE_GID}:\nnogroup:x:65534:\n".encode(),
        "hostname": f"{HOSTNAME}\n".encode(),
        "hosts": f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost\n".encode(),
        "nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files dns\nservices: files\n",
    }
    copied = ["ld.so.cache", "services", "protocols", "debian_version", "localtime"]
    copied += ["os-release", "mime.types"]
    if network:
        copied += ["resolv.conf", "gai.conf", "ssl/openssl.cnf", "ssl/certs/ca-certificates.crt"]
    for name in copied:
        _copy_etc_entry(Path("/etc") / name, name, files)
    for tree in ("alternatives", "python3", f"python3.{os.sys.version_info.minor}"):
        root = Path("/etc") / tree
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            _copy_etc_entry(entry, f"{tree}/{entry.name}", files)
    return files


def _copy_etc_entry(src: Path, name: str, files: dict[str, bytes | str]) -> None:
    try:
        st = src.lstat()
        if stat.S_ISLNK(st.st_mode):
            files[name] = os.readlink(src)
        elif stat.S_ISREG(st.st_mode) and st.st_size < (4 << 20):
            files[name] = src.read_bytes()
    except OSError:
        pass


def _materialise(base: Path, prefix: str, files: dict[str, bytes | str]) -> Path:
    """Write ``files`` to ``base/<prefix>-<content hash>`` once (atomic rename), reuse after."""
    digest = hashlib.sha256()
    for name in sorted(files):
        value = files[name]
        digest.update(name.encode() + b"\0")
        digest.update((b"L" + value.encode()) if isinstance(value, str) else (b"F" + value))
        digest.update(b"\0")
    target = base / f"{prefix}-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=base))
    try:
        for name in sorted(files):
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            value = files[name]
            if isinstance(value, str):
                os.symlink(value, path)
            else:
                path.write_bytes(value)
                path.chmod(0o644)
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink())]:
            d.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _etc_skeleton(base: Path, network: bool) -> Path:
    return _materialise(base, "etc-net" if network else "etc", _etc_files(network))


def _gvisor_rootfs(base: Path, etc: Path) -> Path:
    """A read-only root for runsc: mount points, merged-/usr symlinks and the /etc files."""
    files: dict[str, bytes | str] = {}
    for entry in etc.rglob("*"):
        if entry.is_symlink():
            files[f"etc/{entry.relative_to(etc)}"] = os.readlink(entry)
        elif entry.is_file():
            files[f"etc/{entry.relative_to(etc)}"] = entry.read_bytes()
    for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
        if (Path("/") / target).is_dir():
            files[link.lstrip("/")] = target
    for mount_point in ("usr", "workspace", "tmp", "proc", "dev", "sys", _GVISOR_STATUS_DIR[1:]):
        files[f"{mount_point}/.keep"] = b""
    files[INIT_PATH[1:]] = b""
    return _materialise(base, "gvisor-rootfs", files)


def _oci_config(
    spec: ExecutionSpec,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    run: SandboxRun,
    rootfs: Path,
    init: Path | None,
    status: Path,
) -> dict[str, Any]:
    tmp_size = spec.limits.memory_bytes or _DEFAULT_TMP_BYTES
    rlimits = [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]
    if spec.limits.cpu_s is not None:
        soft = max(1, int(spec.limits.cpu_s + 0.999))
        rlimits.append({"type": "RLIMIT_CPU", "hard": soft + 1, "soft": soft})
    if spec.limits.file_size_bytes is not None:
        n = spec.limits.file_size_bytes
        rlimits.append({"type": "RLIMIT_FSIZE", "hard": n, "soft": n})
    if spec.limits.pids is not None:  # gVisor's own kernel counts the sandbox's processes
        n = spec.limits.pids
        rlimits.append({"type": "RLIMIT_NPROC", "hard": n, "soft": n})
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not spec.network:
        namespaces.append({"type": "network"})
    ro = ["rbind", "ro", "nosuid", "nodev"]
    extra_mounts = []
    if init is not None:
        extra_mounts = [
            {"destination": INIT_PATH, "type": "bind", "source": str(init), "options": ro},
            {
                "destination": _GVISOR_STATUS_DIR,
                "type": "bind",
                "source": str(status),
                "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
            },
        ]
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": run.host_uid, "gid": run.host_gid},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cwd,
            "capabilities": {k: [] for k in ("bounding", "effective", "permitted", "inheritable")},
            "rlimits": rlimits,
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": HOSTNAME,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", f"size={tmp_size}"],
            },
            {
                "destination": INSIDE_WORKSPACE,
                "type": "bind",
                "source": str(run.workspace.path),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
            *extra_mounts,
        ],
        "linux": {"namespaces": namespaces},
    }


# -- probes ---------------------------------------------------------------------------
_probe_cache: dict[str, tuple[bool, str]] = {}


def probe() -> tuple[bool, str]:
    """Can bubblewrap sandboxes run here? (ok, reason). Fast static checks, cached per process
    (backend auto-selection calls it on every CLI run); ``doctor`` starts a real sandbox."""
    if "bwrap" not in _probe_cache:
        _probe_cache["bwrap"] = _static_probe()
    return _probe_cache["bwrap"]


def _static_probe() -> tuple[bool, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bwrap not found (apt install bubblewrap)"
    if os.stat(bwrap).st_mode & stat.S_ISUID:
        return False, f"{bwrap} is setuid: use the distribution's non-setuid bubblewrap"
    for knob, bad in (
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
    ):
        with contextlib.suppress(OSError):
            if Path(knob).read_text().strip() == bad:
                return False, f"unprivileged user namespaces are disabled ({knob} = {bad})"
    ok, why = _userns_allowed()
    if not ok:
        return False, why
    try:
        _seccomp.program()
    except _seccomp.SeccompUnavailable as exc:
        return False, f"seccomp: {exc}"
    return True, f"{bwrap}, user namespaces can be created, libseccomp loads"


def _userns_allowed() -> tuple[bool, str]:
    """Try ``unshare(CLONE_NEWUSER)`` in a throw-away child. The sysctl knobs above are not the
    whole story: the kernel also refuses it inside a chroot, under some LSMs and seccomp
    profiles (containers), which only an attempt reveals. About a millisecond, once."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only tries and exits
        rc = libc.unshare(0x10000000)  # CLONE_NEWUSER
        os._exit(0 if rc == 0 else (ctypes.get_errno() or 1) & 0xFF)
    _, status = os.waitpid(pid, 0)
    err = os.waitstatus_to_exitcode(status)
    if err == 0:
        return True, ""
    hint = ""
    with contextlib.suppress(OSError):
        if os.stat("/").st_ino != os.stat("/proc/1/root/.").st_ino:
            hint = " (this process is in a chroot, where the kernel forbids it)"
    return False, f"cannot create a user namespace: {os.strerror(err)}{hint}"


def probe_gvisor() -> tuple[bool, str]:
    """Can gVisor sandboxes run here? (ok, reason)."""
    if shutil.which("runsc") is None:
        return False, "runsc not found (apt install runsc)"
    if os.geteuid() != 0:
        return False, "the gvisor backend runs runsc as root (rootless runsc is not supported)"
    ok, why = _userns_allowed()  # runsc puts its sandbox in a new user namespace too
    if not ok:
        return False, why
    return True, "runsc found, running as root"


# -- doctor -----------------------------------------------------------------------------
def doctor_checks() -> list[Check]:
    """Probe bwrap, user namespaces, seccomp and runsc by actually using them (briefly)."""
    from glasshouse.doctor import Check

    checks: list[Check] = []
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        checks.append(
            Check("bubblewrap", False, "bwrap not found (apt install bubblewrap)", "sandbox")
        )
    else:
        checks.append(Check("bubblewrap", True, f"{bwrap} ({_tool_version(bwrap)})"))
        ok, detail = _probe_userns(bwrap)
        checks.append(Check("user namespaces", ok, detail, "" if ok else "sandbox"))
    try:
        prog = _seccomp.program()
        checks.append(Check("seccomp", True, prog.describe()))
    except _seccomp.SeccompUnavailable as exc:
        checks.append(Check("seccomp", False, str(exc), "sandbox"))
    try:
        checks.append(Check("sandbox init", True, str(build_init())))
    except InitUnavailable as exc:
        detail = f"{exc} (sandboxes still run; a signal death reads as exit 128+N)"
        checks.append(Check("sandbox init", False, detail, "exact signal reporting"))
    runsc = shutil.which("runsc")
    if runsc is None:
        checks.append(Check("runsc", False, "runsc not found (apt install runsc)", "gvisor"))
    else:
        ok, why = probe_gvisor()
        detail = f"{runsc} ({_tool_version(runsc)}, platform ptrace)" if ok else why
        checks.append(Check("runsc", ok, detail, "" if ok else "gvisor"))
    return checks


def _probe_userns(bwrap: str) -> tuple[bool, str]:
    """Start one minimal unprivileged sandbox (as nobody when root, as we run it)."""
    argv = [bwrap, "--unshare-all", "--ro-bind", "/usr", "/usr"]
    for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
        if (Path("/") / target).is_dir():
            argv += ["--symlink", target, link]
    argv += ["--", "/usr/bin/true"]
    user: tuple[int, int] | None = (65534, 65534) if os.geteuid() == 0 else None

    def demote() -> None:  # pragma: no cover - runs in the child
        if user is not None:
            os.setgroups([])
            os.setresgid(user[1], user[1], user[1])
            os.setresuid(user[0], user[0], user[0])

    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, preexec_fn=demote, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap probe failed: {exc}"
    if out.returncode != 0:
        why = out.stderr.strip() or f"exit {out.returncode}"
        return False, f"unprivileged bwrap failed: {why}"
    return True, "an unprivileged bwrap sandbox (user, pid, net... namespaces) started"
