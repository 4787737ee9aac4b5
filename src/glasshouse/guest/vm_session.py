"""The session agent of a microVM session: serves a session's steps inside one live VM.

The host restores a VM from the warm snapshot and hands it, as an ordinary one-shot request,
``python3 -c <this file's source> <config>``: the guest init runs it in its warm interpreter
(PID 1, no fork), and from then on PID 1 is this agent. It *connects out* to the host over
vsock (guest CID 2, ``config["port"]``: Firecracker bridges it to the UNIX socket
``v.sock_<port>`` beside the VM, on which the host listens), says ``hello`` with the token
the host gave it, and serves frames until the VM is killed:

- ``code``: Python source handed to ONE persistent interpreter, a child forked from this
  warm process (so it starts with the warm imports and heap, no exec). Its variables live
  across steps; its stdout/stderr are pipes this agent forwards to the host as ``out``
  frames while the code runs. At the end of every code step the interpreter SIGKILLs every
  other process it may reach (``kill(-1)``: init and itself excepted), so nothing a step
  starts outlives it.
- ``spawn``: argv as a new process (vfork+exec), its output forwarded the same way; when it
  ends, everything else is killed (by the interpreter's ``kill(-1)``, or ours when there is
  no interpreter).
- ``kill``: the step in flight ends now; a code step's interpreter is killed and a new one
  forked (its state is lost: the answer says ``restarted``).
- ``write``/``read``/``list``/``delete``: the workspace ``/work``, every path resolved by
  the kernel with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)``,
  files opened ``O_NONBLOCK`` and checked to be regular before a byte is read.
- ``pause``: answer, drop the connection and wait for the host's wake line on the serial
  console (the host snapshots the VM meanwhile and restores it later); then connect again.

Frames both ways: ``GHS1``, the JSON header's length (u32) and the payload's (u64), the
JSON header, the raw payload (file contents and output travel unencoded). Standard library
only; importable on the host, which uses the same framing (:func:`send`, :func:`recv`).
The agent shares the steps' trust domain: the host relies on it to start steps and report
exit statuses, nothing more.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time

MAGIC = b"GHS1"
HEADER = struct.Struct(">4sIQ")
#: Largest JSON header either side accepts.
MAX_JSON = 64 << 20
#: Host CID for guest-initiated vsock connections.
HOST_CID = 2
WORKSPACE = "/work"
_READ = 1 << 16
_SYS_OPENAT2 = 437
_RESOLVE = 0x01 | 0x02 | 0x08  # NO_XDEV | NO_MAGICLINKS | BENEATH


class FrameError(Exception):
    """A frame that breaks the framing (bad magic, over a cap)."""


def frame(obj: dict, data: bytes = b"") -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return HEADER.pack(MAGIC, len(body), len(data)) + body + data


def send(sock: object, obj: dict, data: bytes = b"") -> None:
    sock.sendall(frame(obj, data))  # type: ignore[attr-defined]


def recv_exact(sock: object, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


def recv(sock: object, max_data: int) -> tuple[dict, bytes]:
    """One frame: its JSON header (an object) and its payload (at most ``max_data``)."""
    magic, jlen, dlen = HEADER.unpack(recv_exact(sock, HEADER.size))
    if magic != MAGIC or jlen > MAX_JSON or dlen > max_data:
        raise FrameError(f"bad frame header ({magic!r}, {jlen}, {dlen})")
    obj = json.loads(recv_exact(sock, jlen))
    if not isinstance(obj, dict):
        raise FrameError("a frame's header must be a JSON object")
    return obj, recv_exact(sock, dlen) if dlen else b""


# ----- the workspace (files API) ----------------------------------------------------------


def _libc():  # type: ignore[no-untyped-def]
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    ctypes, libc = _libc()

    class How(ctypes.Structure):
        _fields_ = [
            ("flags", ctypes.c_uint64),
            ("mode", ctypes.c_uint64),
            ("resolve", ctypes.c_uint64),
        ]

    how = How(flags | os.O_CLOEXEC, mode, _RESOLVE)
    fd = libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def error_kind(exc: OSError) -> str:
    import errno

    code = exc.errno
    if code in (errno.EXDEV, errno.ELOOP):
        return "outside"
    if code == errno.ENOENT:
        return "notfound"
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "full"
    return "notafile"


class Files:
    """The workspace from the host's side (paths were checked by the host: relative, no
    ``..``, no NUL; the kernel keeps every resolution beneath the root)."""

    def __init__(self, root: str = WORKSPACE) -> None:
        self.root = root

    def _root(self) -> int:
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _parent(self, path: str, create: bool) -> tuple[int, str]:
        head, _, name = path.rpartition("/")
        fd = self._root()
        try:
            for part in [p for p in head.split("/") if p]:
                try:
                    nxt = openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nxt = openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
                os.close(fd)
                fd = nxt
        except OSError:
            os.close(fd)
            raise
        return fd, name

    def write(self, path: str, data: bytes) -> dict:
        import stat

        dirfd, name = self._parent(path, create=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_NOFOLLOW
            fd = openat2(dirfd, name, flags, 0o644)
        finally:
            os.close(dirfd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(21, "not a regular file", path)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return info(path, os.fstat(fd), None)
        finally:
            os.close(fd)

    def read(self, path: str, limit: int) -> bytes:
        import stat

        root = self._root()
        try:
            fd = openat2(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        finally:
            os.close(root)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(21, "not a regular file", path)
            if st.st_size > limit:
                raise TooLarge(f"{st.st_size} bytes is over the cap of {limit}")
            chunks, total = [], 0
            while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise TooLarge(f"grew past the cap of {limit} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def list(self, path: str, cap: int) -> list:
        root = self._root()
        try:
            fd = openat2(root, path, os.O_RDONLY | os.O_DIRECTORY)
        finally:
            os.close(root)
        out = []
        try:
            for name in sorted(os.listdir(fd)):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                rel = name if path == "." else f"{path}/{name}"
                out.append(info(rel, st, _digest(fd, name, st, cap)))
        finally:
            os.close(fd)
        return out

    def delete(self, path: str) -> None:
        import stat

        dirfd, name = self._parent(path, create=False)
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=dirfd)
            else:
                os.unlink(name, dir_fd=dirfd)
        finally:
            os.close(dirfd)


class TooLarge(Exception):
    pass


def _digest(dirfd: int, name: str, st: os.stat_result, cap: int) -> str | None:
    import hashlib
    import stat

    if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
        return None
    try:
        fd = openat2(dirfd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def info(path: str, st: os.stat_result, digest: str | None) -> dict:
    import stat

    mode = st.st_mode
    kind = (
        "file"
        if stat.S_ISREG(mode)
        else "directory"
        if stat.S_ISDIR(mode)
        else "symlink"
        if stat.S_ISLNK(mode)
        else "other"
    )
    return {
        "name": path.rpartition("/")[2],
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mtime": st.st_mtime,
        "sha256": digest,
    }


# ----- the persistent interpreter (a forked child of the agent) -----------------------------


def interpreter_main(ctl: object, memory_bytes: int | None) -> None:
    """The interpreter's loop: one ``run`` frame at a time from the agent over ``ctl``
    (a socketpair end), each answered with ``done``; fds 1/2 are the agent's pipes."""
    import builtins
    import io
    import resource
    import threading
    import traceback

    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, resource.RLIM_INFINITY))
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
        line_buffering=True,
    )  # fmt: skip
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
        write_through=True,
    )  # fmt: skip
    sys.argv = ["-c"]
    if "" not in sys.path:
        sys.path.insert(0, "")
    names = {"__name__": "__main__", "__builtins__": builtins}
    recorder = None
    while True:
        try:
            req, _ = recv(ctl, 0)
        except (EOFError, OSError):
            os._exit(0)
        if req.get("op") == "reap":
            _reap_all()
            send(ctl, {"op": "reaped"})
            continue
        stdin = os.open(req.get("stdin") or os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        sys.stdin = io.TextIOWrapper(
            io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="surrogateescape"
        )
        os.environ.clear()
        os.environ.update(req.get("env") or {})
        try:
            os.chdir(req.get("cwd") or WORKSPACE)
        except OSError:
            pass
        cap = req.get("events")
        if cap and recorder is None:
            recorder = _recorder(cap)
        if recorder is not None:
            recorder.events, recorder.count, recorder.lost, recorder.sent = [], 0, 0, 0
            recorder.cap = cap or 0
            recorder.on = bool(cap)
        before = resource.getrusage(resource.RUSAGE_SELF)
        exit_code = 0
        try:
            exec(compile(req["code"], "<string>", "exec"), names)
        except SystemExit as exc:
            if exc.code is None:
                exit_code = 0
            elif isinstance(exc.code, int):
                exit_code = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
                exit_code = 1
        except BaseException as exc:
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, tb)
            exit_code = 1
        finally:
            if recorder is not None:
                recorder.on = False
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        _reap_all()  # nothing a step starts outlives it
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        answer = {
            "op": "done",
            "exit_code": exit_code,
            "threads": threading.active_count() - 1,
            "cpu_time_ms": int(cpu * 1000),
            "max_rss_kb": after.ru_maxrss,
        }
        if cap and recorder is not None:
            answer["events"] = {
                "events": recorder.events,
                "count": recorder.count,
                "lost": recorder.lost,
            }
            answer["events"]["events"].append(
                ["process", os.getpid(), sys.executable or "python3", ["python3", "-c", "..."],
                 exit_code, None]
            )  # fmt: skip
        send(ctl, answer)


def _recorder(cap: int):  # type: ignore[no-untyped-def]
    """The guest init's audit recorder (``gh_audit``), its hook installed once (a hook
    cannot be removed: it is switched off between steps)."""
    try:
        from gh_audit import GuestEvents
    except ImportError:
        return None
    rec = GuestEvents(None, cap)
    rec.start()
    rec.on = False
    return rec


def _reap_all() -> None:
    """SIGKILL every process this one may signal, except init and itself (the kernel's
    ``kill(-1)``; kernel threads ignore signals)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


# ----- the agent (PID 1) ------------------------------------------------------------------


class Agent:
    def __init__(self, config: dict) -> None:
        self.port = int(config["port"])
        self.token = str(config["token"])
        self.memory_bytes = config.get("memory_bytes")
        self.files = Files()
        self.conn: object = None
        self.interp_pid = 0
        self.ctl: object = None
        self.pipes: tuple[int, int] = (-1, -1)  # the interpreter's stdout/stderr (read ends)
        self.step: dict | None = None  # the step in flight
        self.restarted = False  # the interpreter was started afresh since the last code step
        self.wake_r, self.wake_w = os.pipe()
        self.forks = 0
        self.told = False  # the step that lost the interpreter said "restarted"
        self.pending_fork = True  # fork an interpreter once no step runs

    # -- connection ----------------------------------------------------------------------
    def connect(self, **hello: object) -> None:
        import _socket

        delay = 0.01
        for _ in range(400):
            sock = _socket.socket(_socket.AF_VSOCK, _socket.SOCK_STREAM)
            try:
                sock.connect((HOST_CID, self.port))
                break
            except OSError:
                sock.close()
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        else:
            raise OSError("cannot reach the host")
        self.conn = sock
        send(sock, {"op": "hello", "token": self.token, "pid": os.getpid(), **hello})

    def wait_wake(self) -> None:
        """Block until the host's wake line on the serial console (sent after a restore)."""
        fd = os.open("/dev/ttyS0", os.O_RDONLY | os.O_NOCTTY)
        buf = b""
        try:
            while b"GH-WAKE" not in buf:
                buf = (buf + os.read(fd, 256))[-256:]
        finally:
            os.close(fd)

    # -- the interpreter -------------------------------------------------------------------
    def fork_interpreter(self) -> None:
        import _socket

        parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the interpreter
            try:
                os.setsid()
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                fd = os.dup2(child.fileno(), 3)
                os.closerange(4, 1 << 16)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                ctl = __import__("_socket").socket(fileno=fd)
                interpreter_main(ctl, self.memory_bytes)
            finally:
                os._exit(70)
        child.close()
        os.close(out_w)
        os.close(err_w)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        self.interp_pid, self.ctl, self.pipes = pid, parent, (out_r, err_r)
        # The first one is no restart, nor one whose killed step already said so.
        self.restarted = self.forks > 0 and not self.told
        self.told = False
        self.forks += 1

    def interpreter_gone(self) -> None:
        if self.ctl is not None:
            self.ctl.close()  # type: ignore[attr-defined]
        for fd in self.pipes:
            if fd >= 0:
                os.close(fd)
        self.interp_pid, self.ctl, self.pipes = 0, None, (-1, -1)

    def reap_all(self) -> None:
        """End everything but init and the interpreter: the interpreter's ``kill(-1)`` spares
        itself; without one, ours spares only init (us)."""
        if self.ctl is not None:
            try:
                send(self.ctl, {"op": "reap"})
                self.ctl.settimeout(5.0)  # type: ignore[attr-defined]
                recv(self.ctl, 0)
                self.ctl.settimeout(None)  # type: ignore[attr-defined]
                return
            except (OSError, EOFError, FrameError, ValueError):
                pass
        _reap_all()

    # -- steps -----------------------------------------------------------------------------
    def start_code(self, req: dict) -> None:
        if not self.interp_pid:
            self.fork_interpreter()
        self.step = {"id": req["id"], "code": True, "restarted": self.restarted}
        self.restarted = False
        msg = {
            "op": "run",
            "code": req["code"],
            "env": req.get("env") or {},
            "cwd": req.get("cwd"),
            "stdin": self._stdin(req),
            "events": req.get("events"),
        }
        try:
            send(self.ctl, msg)
        except OSError:
            pass  # it died: its reaping ends the step

    def _stdin(self, req: dict) -> str | None:
        data = req.get("_stdin") or b""
        if not data:
            return None
        os.makedirs("/run/ghs", exist_ok=True)
        path = f"/run/ghs/stdin-{req['id']}"
        with open(path, "wb") as f:
            f.write(data)
        return path

    def start_spawn(self, req: dict) -> None:
        import subprocess

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = self._stdin(req)
        step = {"id": req["id"], "code": False, "pipes": (out_r, err_r), "argv": req["argv"]}
        in_fd = os.open(stdin or os.devnull, os.O_RDONLY)
        try:
            proc = subprocess.Popen(
                req["argv"],
                stdin=in_fd,
                stdout=out_w,
                stderr=err_w,
                cwd=req.get("cwd") or WORKSPACE,
                env=req.get("env") or {},
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            os.write(err_w, f"{req['argv'][0]}: {exc.strerror}\n".encode())
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            step.update(pid=0, status=code << 8, exec_errno=exc.errno)
        else:
            # Kept so subprocess never reaps it behind our back (we set its returncode).
            step.update(pid=proc.pid, proc=proc)
            if self.memory_bytes:
                import resource

                limit = (self.memory_bytes, self.memory_bytes)
                try:
                    resource.prlimit(proc.pid, resource.RLIMIT_AS, limit)
                except OSError:
                    pass
        os.close(in_fd)
        os.close(out_w)
        os.close(err_w)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        self.step = step
        if not step["pid"]:
            self.finish_spawn()

    def finish_spawn(self) -> None:
        step = self.step
        assert step is not None
        self.reap_all()
        deadline = time.monotonic() + 2.0
        pipes = [fd for fd in step["pipes"] if fd >= 0]
        while pipes and time.monotonic() < deadline:
            import select

            ready, _, _ = select.select(pipes, [], [], 0.05)
            for fd in ready:
                if not self.forward(fd, step["pipes"].index(fd) + 1, step["id"]):
                    pipes.remove(fd)
        for fd in step["pipes"]:
            if fd >= 0:
                os.close(fd)
        status = step.get("status", 0)
        answer = {"op": "done", "id": step["id"], "status": status}
        if step.get("exec_errno"):
            answer["exec_errno"] = step["exec_errno"]
        if step.get("events"):
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            argv = step["argv"]
            answer["events"] = {
                "events": [["process", step["pid"], argv[0], argv, code, sig]],
                "count": 1,
                "lost": 0,
            }
        if step.get("killed"):
            answer["killed"] = True
        self.step = None
        send(self.conn, answer)

    def forward(self, fd: int, stream: int, ident: int | None) -> bool:
        """Move what ``fd`` holds to the host (as ``ident``'s output); False at EOF."""
        while True:
            try:
                chunk = os.read(fd, _READ)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            if ident is not None:
                send(self.conn, {"op": "out", "id": ident, "s": stream}, chunk)

    def kill_step(self, ident: int) -> None:
        step = self.step
        if step is None or step["id"] != ident:
            return
        step["killed"] = True
        if step["code"]:
            self.interp_died(int(signal.SIGKILL), kill=True)
        elif step.get("pid"):
            try:
                os.killpg(step["pid"], signal.SIGKILL)
            except OSError:
                pass
            self.reap_all()

    def interp_died(self, status: int, kill: bool = False) -> None:
        """The interpreter is gone (or must go): end the code step in flight with
        ``status``; a new interpreter is forked once the answer is out."""
        pid = self.interp_pid
        if kill and pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pipes = self.pipes
        step = self.step if self.step is not None and self.step["code"] else None
        if step is not None:
            for i, fd in enumerate(pipes):
                if fd >= 0:
                    self.forward(fd, i + 1, step["id"])
        self.interpreter_gone()
        if step is not None:
            self.told = True
            _reap_all()  # the code step's leftovers too: nothing to spare now
            self.step = None
            answer = {"op": "done", "id": step["id"], "status": status, "restarted": True}
            if step.get("killed"):
                answer["killed"] = True
            send(self.conn, answer)
        self.pending_fork = True

    # -- the loop ------------------------------------------------------------------------
    def serve(self) -> None:
        import select

        signal.signal(signal.SIGCHLD, lambda *_: None)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        self.connect()
        self.pending_fork = True
        while True:
            if self.pending_fork and self.step is None:
                self.pending_fork = False
                if not self.interp_pid:
                    self.fork_interpreter()
            watch = [self.conn, self.wake_r]
            if self.ctl is not None:
                watch.append(self.ctl)
            watch += [fd for fd in self.pipes if fd >= 0]
            if self.step is not None and not self.step["code"]:
                watch += [fd for fd in self.step["pipes"] if fd >= 0]
            ready, _, _ = select.select(watch, [], [], 1.0)
            try:
                self.dispatch(ready)
            except Exception as exc:  # a bug here must not end the session (nor PID 1)
                _console(f"gh-session: {type(exc).__name__}: {exc}")

    def dispatch(self, ready: list) -> None:
        for item in ready:
            if item is self.conn:
                self.on_host()
            elif item is self.ctl:
                self.on_interpreter()
            elif item == self.wake_r:
                try:
                    os.read(self.wake_r, 512)
                except BlockingIOError:
                    pass
            else:
                self.on_pipe(item)
        self.reap_children()

    def on_pipe(self, fd: int) -> None:
        step = self.step
        if fd in self.pipes:
            ident = step["id"] if step is not None and step["code"] else None
            self.forward(fd, self.pipes.index(fd) + 1, ident)  # at EOF: it is dying
        elif (
            step is not None
            and fd in step["pipes"]
            and not self.forward(fd, step["pipes"].index(fd) + 1, step["id"])
        ):
            pipes = list(step["pipes"])
            pipes[pipes.index(fd)] = -1
            os.close(fd)
            step["pipes"] = tuple(pipes)

    def on_interpreter(self) -> None:
        try:
            answer, _ = recv(self.ctl, 0)
        except (EOFError, OSError, FrameError, ValueError):
            return  # it died: reap_children ends the step
        step = self.step
        if answer.get("op") != "done" or step is None or not step["code"]:
            return
        for i, fd in enumerate(self.pipes):
            self.forward(fd, i + 1, step["id"])
        self.step = None
        answer["id"] = step["id"]
        answer["restarted"] = step["restarted"]
        send(self.conn, answer)

    def reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.interp_pid:
                self.interp_died(status)
            elif self.step is not None and self.step.get("pid") == pid:
                self.step["status"] = status
                self.step["proc"].returncode = os.waitstatus_to_exitcode(status)
                self.finish_spawn()

    def on_host(self) -> None:
        try:
            req, data = recv(self.conn, 1 << 30)
        except (EOFError, OSError, FrameError, ValueError):
            # The host dropped us (a reset of the vsock transport, or the VM is being
            # killed): offer ourselves again. PID 1 must not exit (a kernel panic).
            self.conn.close()  # type: ignore[attr-defined]
            self.connect(reconnected=True)
            return
        op = req.get("op")
        ident = req.get("id")
        try:
            if op in ("code", "spawn"):
                if self.step is not None:
                    send(self.conn, {"op": "error", "id": ident, "error": "a step is running"})
                    return
                req["_stdin"] = data
                if op == "code":
                    self.start_code(req)
                else:
                    self.start_spawn(req)
                    if self.step is not None:
                        self.step["events"] = bool(req.get("events"))
            elif op == "kill":
                self.kill_step(int(req.get("step", 0)))
            elif op == "pause":
                send(self.conn, {"op": "paused", "id": ident})
                self.conn.close()  # type: ignore[attr-defined]
                self.wait_wake()
                self.connect(resumed=True)
            elif op == "reseed":
                from gh_reseed import reseed  # the guest init's (on its sys.path)

                facts = reseed({"entropy": req.get("entropy", ""), "time_ns": req.get("time_ns")})
                send(self.conn, {"op": "ok", "id": ident, "facts": facts})
            else:
                self.file_op(op, req, data)
        except (OSError, TooLarge) as exc:
            kind = "toolarge" if isinstance(exc, TooLarge) else error_kind(exc)
            msg = str(exc) if isinstance(exc, TooLarge) else exc.strerror or str(exc)
            send(self.conn, {"op": "error", "id": ident, "kind": kind, "error": msg})

    def file_op(self, op: str | None, req: dict, data: bytes) -> None:
        ident, path = req.get("id"), str(req.get("path", ""))
        if op == "write":
            send(self.conn, {"op": "ok", "id": ident, "info": self.files.write(path, data)})
        elif op == "read":
            body = self.files.read(path, int(req["limit"]))
            send(self.conn, {"op": "ok", "id": ident}, body)
        elif op == "list":
            entries = self.files.list(path, int(req["limit"]))
            send(self.conn, {"op": "ok", "id": ident, "entries": entries})
        elif op == "delete":
            self.files.delete(path)
            send(self.conn, {"op": "ok", "id": ident})
        else:
            send(self.conn, {"op": "error", "id": ident, "kind": "op", "error": f"unknown {op!r}"})


def _console(line: str) -> None:
    try:
        from gh_system import console

        console(line.encode("utf-8", "replace")[:2000])
    except ImportError:
        pass


def configure(config: dict) -> None:
    """Once, before serving: the workspace's size (``disk_bytes``, a tmpfs remount), and no
    heap cap: the guest init caps a one-shot in-process run's memory (a soft RLIMIT_DATA
    this agent, run as one, inherits); a session's is RLIMIT_AS per step process and the
    VM's RAM."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))
    size = config.get("disk_bytes")
    if size:
        _, libc = _libc()
        ms_remount, nosuid_nodev = 32, 2 | 4
        opts = f"size={int(size)}".encode()
        if libc.mount(b"tmpfs", b"/work", b"tmpfs", ms_remount | nosuid_nodev, opts) != 0:
            raise OSError("cannot size the workspace")


def main(argv: list[str]) -> None:
    config = json.loads(argv[-1])
    configure(config)
    Agent(config).serve()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[-1].startswith("{"):
    main(sys.argv)
