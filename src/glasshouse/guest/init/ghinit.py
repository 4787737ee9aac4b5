#!/usr/bin/python3 -IS
"""Glasshouse guest init: PID 1 of every microVM (seed 001).

Runs inside the guest with only the standard library. It mounts the pseudo filesystems and
a RAM workspace, imports what user code commonly needs, announces ``GH-READY`` on the
console and waits for exactly one request (vsock port 52, or the serial console when the VM
has no vsock device). A warm snapshot is taken while it waits, so every restored VM starts
here with Python already running.

For the request it: mixes the host's fresh entropy into the kernel pool and reseeds the
CRNG and Python's ``random`` (clones of one snapshot must not share random state), sets the
clock, writes the files into /work, runs the command with its limits, and answers with one
result frame (exit status, capped stdout/stderr with their full size and sha256, rusage,
requested output files). Then it powers the VM off. ``python3 -c CODE`` runs in this warm
interpreter (no fork/exec: those run in the emulated guest kernel on kvm_pvm hosts and cost
seconds); anything else is executed as a child process.

The host trusts none of this: it parses the result strictly (glasshouse.guest.transport).
"""

from __future__ import annotations

# Only built-in modules at start-up: on kvm_pvm every page fault and file read runs in the
# emulated guest kernel, so loading e.g. hashlib's libcrypto costs seconds of boot.
import _socket
import ctypes
import fcntl
import os
import struct
import sys
import time
from _sha256 import sha256

sys.path.insert(0, "/usr/lib/glasshouse")
import gh_transport as T

# Modules user code commonly imports: loaded before the snapshot so a restored run does not
# pay for reading them through the (emulated) guest kernel.
_WARM = (
    "json",
    "base64",
    "hashlib",
    "hmac",
    "random",
    "math",
    "statistics",
    "decimal",
    "fractions",
    "re",
    "collections",
    "itertools",
    "functools",
    "datetime",
    "time",
    "string",
    "textwrap",
    "struct",
    "io",
    "csv",
    "copy",
    "dataclasses",
    "enum",
    "typing",
    "pathlib",
    "tempfile",
    "shutil",
    "subprocess",
    "traceback",
    "heapq",
    "bisect",
    "operator",
    "secrets",
    "uuid",
    "urllib.parse",
    "zlib",
    "gzip",
    "pprint",
    "contextlib",
    "abc",
    "numbers",
    "array",
    "resource",
    "builtins",
)

_RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
_RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
_DEFAULT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8"}
#: A primed VM's clock is set again at the request only when it is off by more than this
#: (the host's timestamp is already a few ms old when it arrives).
_CLOCK_SLACK_NS = 20_000_000
_PYTHONS = {"python", "python3", "python3.11", "/usr/bin/python3", "/usr/bin/python3.11"}
_libc = ctypes.CDLL(None, use_errno=True)


def _console(line: bytes) -> None:
    try:
        os.write(_PRE.get("console", 2), line + b"\n")
    except OSError:
        pass


def _mount(src: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    if _libc.mount(src.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        if err != 16:  # EBUSY: already mounted
            raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def _setup() -> None:
    nosuid_nodev = 2 | 4
    _mount("proc", "/proc", "proc", nosuid_nodev | 8)
    _mount("sysfs", "/sys", "sysfs", nosuid_nodev | 8)
    _mount("devtmpfs", "/dev", "devtmpfs", 2)
    _mount("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777")
    _mount("tmpfs", "/work", "tmpfs", nosuid_nodev, "mode=0777")
    _mount("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755")
    _socket.sethostname("glasshouse")


def _warm() -> None:
    """Import what user code commonly needs. Only for the snapshot boot: a cold boot that
    runs one command would pay for imports it may not use."""
    for name in _WARM:
        try:
            __import__(name)
        except ImportError:
            pass


def _uptime() -> str:
    try:
        with open("/proc/uptime") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def _cmdline() -> dict[str, str]:
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        words = []
    return dict(w.split("=", 1) for w in words if w.startswith("gh.") and "=" in w)


# ----- transport --------------------------------------------------------------------------


class _Vsock:
    def __init__(self) -> None:
        self._listener = _socket.socket(_socket.AF_VSOCK, _socket.SOCK_STREAM)
        self._listener.bind((_socket.VMADDR_CID_ANY, T.VSOCK_PORT))
        self._listener.listen(1)
        self._conn: _socket.socket | None = None
        self._rest = b""

    def receive(self) -> dict:
        while True:
            if self._conn is not None:  # the next frame on the same connection
                conn = self._conn
            else:
                fd, _ = self._listener._accept()
                conn = _socket.socket(fileno=fd)
                self._rest = b""
            try:
                # One recv usually holds the whole (small) request: every syscall of a
                # restored guest runs through the emulated kernel on kvm_pvm (~5-15 ms).
                # A prime frame and the request may arrive in one read: keep what follows.
                data = self._rest or conn.recv(1 << 16)
                if len(data) < T.HEADER.size:
                    data += _recv_exact(conn, T.HEADER.size - len(data))
                length = T.decode_header(data[: T.HEADER.size], T.MAX_REQUEST)
                body = data[T.HEADER.size :]
                if len(body) < length:
                    body += _recv_exact(conn, length - len(body))
                body, self._rest = body[:length], body[length:]
            except (OSError, T.ProtocolError) as exc:
                _console(f"glasshouse: bad request connection: {exc}".encode())
                conn.close()
                self._conn = None
                continue
            # The listener stays open: this VM serves one request and is destroyed, and
            # closing it would be one more emulated syscall before the user's code runs.
            self._conn = conn
            return T.decode_body(body)

    def send(self, frame: bytes) -> None:
        assert self._conn is not None
        # No shutdown(): the host reads exactly the announced length.
        self._conn.sendall(frame)

    def linger(self, seconds: float) -> None:
        """Wait until the host has the result: it closes the connection or kills the VM
        once it read it. sendall() only queues the bytes; a kernel worker moves them to the
        device, and powering off first lost a whole result now and then."""
        assert self._conn is not None
        self._conn.settimeout(seconds)
        try:
            self._conn.recv(1)
        except OSError:
            pass


def _recv_exact(conn: _socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return bytes(buf)


class _Serial:
    def __init__(self) -> None:
        import termios
        import tty

        self._fd = os.open("/dev/ttyS0", os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._fd)
        attrs = termios.tcgetattr(self._fd)
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)

    def receive(self) -> dict:
        buf = bytearray()
        while True:
            chunk = os.read(self._fd, 65536)
            if not chunk:
                time.sleep(0.01)
                continue
            buf += chunk
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf = bytearray(rest)
                line = line.strip(b"\r")
                if not line.startswith(T.SERIAL_PREFIX):
                    continue
                frame = T.unb64(
                    line[len(T.SERIAL_PREFIX) :].decode("ascii", "replace"),
                    "request",
                    T.MAX_REQUEST + 8,
                )
                length = T.decode_header(frame[: T.HEADER.size], T.MAX_REQUEST)
                return T.decode_body(frame[T.HEADER.size : T.HEADER.size + length])

    def send(self, frame: bytes) -> None:
        data = b"\n" + T.serial_line(frame)
        while data:
            data = data[os.write(self._fd, data) :]
        try:
            import termios

            termios.tcdrain(self._fd)
        except OSError:
            pass


def _wait_wake() -> None:
    """Announce READY (the host snapshots us now) and block until the wake line."""
    import termios
    import tty

    fd = os.open("/dev/ttyS0", os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: that could drop an early wake line
    _console(T.READY_LINE)
    buf = b""
    while T.WAKE_LINE not in buf:
        chunk = os.read(fd, 256)
        buf = (buf + chunk)[-256:]
    _PRE["woken"] = time.monotonic()  # fd stays open: no close() syscall after restore


# ----- running the request ----------------------------------------------------------------


def _reseed(req: dict) -> dict:
    """Make this clone's randomness and clock its own: the host's fresh bytes into the
    kernel pool and Python's ``random``, the host's time into CLOCK_REALTIME. A VM primed
    ahead (the host's warm pool) already did both; its request carries no entropy, and the
    clock, running since, is set again only if it drifted."""
    facts = {}
    entropy = T.unb64(req.get("entropy", ""), "entropy", 512)
    if entropy:
        fd = _PRE.get("urandom") or os.open("/dev/urandom", os.O_WRONLY)
        try:
            try:
                fcntl.ioctl(
                    fd, _RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy
                )
                fcntl.ioctl(fd, _RNDRESEEDCRNG)
                facts["crng_reseeded"] = True
            except OSError as exc:
                facts["crng_reseeded"] = False
                facts["reseed_error"] = str(exc)
        finally:
            if fd != _PRE.get("urandom"):
                os.close(fd)
    if entropy or not _PRE.get("primed"):
        import random

        # Seeded from the host's fresh bytes (no syscall after restore); os.urandom only
        # when the request carried none.
        random.seed(entropy if entropy else os.urandom(32))
    now = req.get("time_ns")
    if type(now) is int and now > 0:
        skew = time.time_ns() - now
        facts["clock_skew_ms"] = round(skew / 1e6, 1)
        if not _PRE.get("primed") or abs(skew) > _CLOCK_SLACK_NS:
            try:
                time.clock_settime_ns(time.CLOCK_REALTIME, now)
                facts["clock_set"] = True
            except OSError:
                facts["clock_set"] = False
    return facts


def _prime(req: dict) -> dict:
    """The warm pool's step ahead of a request: fresh entropy and the time, nothing else."""
    t0 = time.monotonic()
    facts = _reseed(req)
    _PRE["primed"] = True
    facts["ms"] = round((time.monotonic() - t0) * 1000, 1)
    return facts


def _write_files(req: dict) -> None:
    for name, data in (req.get("files") or {}).items():
        path = os.path.join("/work", name)
        if os.path.realpath(path) != os.path.normpath(path):
            raise ValueError(f"bad workspace path {name!r}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(T.unb64(data, name, T.MAX_REQUEST))


def _stream(fd: int, cap: int) -> dict:
    h = sha256()
    kept = bytearray()
    size = 0
    # pread until a short read: one syscall for an empty or small stream (the old
    # fstat+lseek+read+read cost four emulated syscalls on kvm_pvm).
    while True:
        chunk = os.pread(fd, 1 << 20, size)
        h.update(chunk)
        size += len(chunk)
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
        if len(chunk) < 1 << 20:
            break
    return {
        "data": T.b64(bytes(kept)),
        "size": size,
        "sha256": h.hexdigest(),
        "truncated": size > cap,
    }


_RLIMITS = (
    ("cpu_s", "RLIMIT_CPU"),
    ("memory_bytes", "RLIMIT_AS"),
    ("pids", "RLIMIT_NPROC"),
    ("file_size_bytes", "RLIMIT_FSIZE"),
)


def _run_exec(req: dict, argv: list[str], env: dict, cwd: str, fds: tuple[int, int, int]) -> dict:
    """fork+exec the command. No preexec_fn, so CPython uses vfork: copying this big warm
    process's page tables in a real fork costs ~0.8 s of emulated kernel on kvm_pvm. The
    rlimits are applied with prlimit(2) right after the spawn (inherited by everything the
    command starts later); they shape resources inside a VM the workload fully controls
    anyway, the hard bounds being the VM's RAM and the host's wall-clock kill."""
    import resource
    import subprocess

    limits = req.get("limits") or {}
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
    for key, name in _RLIMITS:
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


def _run_inprocess(
    req: dict,
    code: str,
    args: list[str],
    env: dict,
    cwd: str,
    fds: tuple[int, int, int],
    events: _GuestEvents | None = None,
) -> dict:
    import builtins
    import resource
    import traceback

    if _PRE.get("stdio") != fds:
        _stdio(fds)
    sys.argv = ["-c", *args]
    os.environ.clear()
    os.environ.update(env)
    if cwd != _PRE.get("cwd"):
        os.chdir(cwd)
    sys.path[0:0] = [""]
    limits = req.get("limits") or {}
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


class _GuestEvents:
    """The guest's own record of what the user's code asked its runtime to do, for the
    ``guest``/``combined`` profiles: PEP 578 audit hooks (file opens, deletes, renames,
    mkdirs, links, process spawns, socket connects and binds) around an in-process run, and
    the command itself for an exec'd one. Raw events go to the host in batches (a frame
    each on vsock, the rest with the result); the host folds them into receipt sections
    and labels them the guest's claims. A hook cannot be removed, so recording stops by a
    flag once the user's code returned; past ``cap`` events are only counted as lost."""

    def __init__(self, transport: object, cap: int) -> None:
        self.events: list[list] = []
        self.count = 0
        self.lost = 0
        self.cap = cap
        self.sent = 0
        self.on = False
        self._transport = transport

    def start(self) -> None:
        self.on = True
        sys.addaudithook(self._hook)

    def stop(self) -> None:
        self.on = False

    def add(self, event: list) -> None:
        self.count += 1
        if self.sent + len(self.events) >= self.cap:
            self.lost += 1
            return
        self.events.append(event)
        if len(self.events) >= _EVENT_BATCH and isinstance(self._transport, _Vsock):
            batch, self.events = self.events, []
            self.sent += len(batch)
            was, self.on = self.on, False  # the send itself is not the user's doing
            try:
                self._transport.send(T.encode_frame({"v": 1, "kind": "events", "events": batch}))
            finally:
                self.on = was

    def _hook(self, name: str, args: tuple) -> None:
        if not self.on or name not in _AUDITED:
            return
        try:
            event = _AUDITED[name](args)
        except Exception:  # never break the user's code over a record
            event = None
        if event is not None:
            self.add(event)


def _p(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, int):
        return f"<fd {value}>"
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    return path if path.startswith("/") else os.path.join(os.getcwd(), path)


def _addr(sock: object, address: object) -> tuple[str, str, str]:
    family = getattr(sock, "family", None)
    kind = getattr(sock, "type", None)
    fam = {1: "unix", 2: "inet", 10: "inet6", 40: "vsock"}.get(int(family or 0), str(family))
    proto = {1: "tcp", 2: "udp"}.get(int(kind or 0) & 0xF, str(kind))
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        dst = f"[{host}]:{address[1]}" if fam == "inet6" else f"{host}:{address[1]}"
    else:
        dst = _p(address) if isinstance(address, (str, bytes)) else str(address)
    return fam, proto, dst


_AUDITED = {
    "open": lambda a: (
        ["open", _p(a[0]), int(a[2]) if len(a) > 2 and a[2] is not None else 0]
        if a[0] is not None
        else None
    ),
    "os.remove": lambda a: ["delete", _p(a[0])],
    "os.rmdir": lambda a: ["delete", _p(a[0])],
    "shutil.rmtree": lambda a: ["delete", _p(a[0])],
    "os.rename": lambda a: ["rename", _p(a[0]), _p(a[1])],
    "os.mkdir": lambda a: ["mkdir", _p(a[0])],
    "os.link": lambda a: ["link", _p(a[0]), _p(a[1]), "hard"],
    "os.symlink": lambda a: ["link", os.fsdecode(a[0]), _p(a[1]), "symbolic"],
    "subprocess.Popen": lambda a: [
        "spawn",
        os.fsdecode(a[0]) if a[0] is not None else "",
        [os.fsdecode(x) for x in ([a[1]] if isinstance(a[1], (str, bytes)) else a[1])],
    ],
    "os.system": lambda a: ["spawn", "/bin/sh", ["/bin/sh", "-c", os.fsdecode(a[0])]],
    "os.exec": lambda a: ["spawn", os.fsdecode(a[0]), [os.fsdecode(x) for x in a[1]]],
    "os.posix_spawn": lambda a: ["spawn", os.fsdecode(a[0]), [os.fsdecode(x) for x in a[1]]],
    "os.spawn": lambda a: ["spawn", os.fsdecode(a[1]), [os.fsdecode(x) for x in a[2]]],
    "socket.connect": lambda a: ["connect", *_addr(a[0], a[1])],
    "socket.bind": lambda a: ["bind", *_addr(a[0], a[1])],
}
#: Events per intermediate frame (each send is an emulated syscall path on kvm_pvm).
_EVENT_BATCH = 512


#: Opened before the snapshot, so a restored run makes fewer (emulated) syscalls.
_PRE: dict = {}


def _stdio(fds: tuple[int, int, int]) -> None:
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
    _PRE["stdio"] = fds


def _open_io() -> tuple[int, int, int]:
    """stdin/stdout/stderr files of the command, in tmpfs /run/gh."""
    os.makedirs("/run/gh", exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    return tuple(os.open(f"/run/gh/{n}", flags, 0o600) for n in ("stdin", "stdout", "stderr"))


#: Heap pre-faulted before the snapshot (see _prefault).
_PREFAULT_BYTES = 24 << 20
#: tmpfs pages reserved for each captured stream before the snapshot.
_STREAM_RESERVE = 256 << 10
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_FALLOC_FL_KEEP_SIZE = 1


def _reexec_with_malloc() -> None:
    """Snapshot boot only: restart this init with ``PYTHONMALLOC=malloc`` so Python's
    objects come from glibc's heap, which _prefault() grows and touches before the
    snapshot. On kvm_pvm a page the guest touches for the first time costs ~2 ms (the
    guest kernel's page-fault path and the page zeroing run in the instruction emulator):
    pymalloc's fresh 1 MiB arenas made a ``print(2+2)`` after restore pay for dozens.
    ``-P -s -S`` keep what ``-I -S`` gave (no script directory or user site on sys.path);
    the environment is the kernel's, which we control."""
    if os.environ.get("PYTHONMALLOC") == "malloc":
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONMALLOC"] = "malloc"
    exe = sys.executable or "/usr/bin/python3"
    try:
        os.execve(exe, [exe, "-P", "-s", "-S", os.path.abspath(sys.argv[0])], env)
    except OSError as exc:  # keep going with pymalloc: slower, still correct
        _console(f"gh: re-exec with PYTHONMALLOC=malloc failed: {exc}".encode())


def _prefault() -> None:
    """Grow glibc's heap by _PREFAULT_BYTES, touch every page and keep it (no trimming, no
    mmap for big blocks), and reserve tmpfs pages for stdout/stderr: a restored run then
    allocates from memory the snapshot already holds instead of faulting in fresh pages
    through the emulated guest kernel. Costs a few seconds once, at the snapshot boot."""
    _libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    _libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum: big blocks stay on the heap
    _libc.mallopt(_M_TOP_PAD, 1 << 20)
    _libc.malloc.restype = ctypes.c_void_p
    _libc.free.argtypes = [ctypes.c_void_p]
    block = _libc.malloc(_PREFAULT_BYTES)
    if block:
        ctypes.memset(block, 0, _PREFAULT_BYTES)
        _libc.free(block)
    for fd in _PRE["fds"][1:]:
        _libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(_STREAM_RESERVE))
    _prefault_files()
    _warm_compiler()


def _prefault_files() -> None:
    """Touch every page of every readable file mapping (the interpreter, libc, the
    extension modules): code never run before the snapshot, such as the compiler that
    ``python3 -c`` needs, would otherwise be read from the virtio disk and faulted in page
    by page through the emulated guest kernel after each restore."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split()
        # Only the read-only image's files (always whole pages, never truncated: no SIGBUS).
        if len(parts) != 6 or not parts[5].startswith(("/usr/", "/lib")) or parts[1][0] != "r":
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        for addr in range(start, end, 4096):
            try:
                ctypes.string_at(addr, 1)
            except (OSError, ValueError):
                break


_WARM_CODE = """
import sys
class _C:
    def __init__(self, v): self.v = v
def f(*a, k=1, **kw):
    try:
        return [x * 2 for x in a if x] + list({k: v for k, v in kw.items()}.values())
    except (ValueError, TypeError) as e:
        raise RuntimeError(f"{e!r}") from e
    finally:
        pass
r = f(1, 2, k=3, z=4) + [_C(i).v for i in range(3)] + sorted({1, 2}) + [lambda: 0]
print("warm", 2 + 2, 3.5 / 2, repr(r)[:10], b"x".hex(), file=OUT)
try:
    1 / 0
except ZeroDivisionError:
    import traceback; traceback.print_exc(file=OUT)
"""


def _warm_compiler() -> None:
    """Run the parser, compiler, eval loop, print and traceback paths once before the
    snapshot (imports load .pyc files and never compile), into a throwaway buffer."""
    import io

    out = io.StringIO()
    exec(compile(_WARM_CODE, "<string>", "exec"), {"__name__": "__warm__", "OUT": out})


def _preopen() -> None:
    """Everything a run needs that does not depend on the request, done before the
    snapshot: each syscall after restore runs through the emulated kernel on kvm_pvm."""
    _PRE["console"] = os.dup(2)
    _PRE["release"] = os.uname().release
    _PRE["fds"] = _open_io()
    _PRE["urandom"] = os.open("/dev/urandom", os.O_WRONLY)
    _stdio(_PRE["fds"])
    os.chdir("/work")
    _PRE["cwd"] = "/work"
    # Move every object alive now out of the collector's reach: a collection after restore
    # would otherwise walk (touch) the whole warm heap, and every page a restored guest
    # touches costs a fault on the host.
    import gc

    gc.collect()
    gc.freeze()


def _handle(req: dict, transport: object = None) -> dict:
    if req.get("v") != 1:
        raise ValueError(f"unsupported request version {req.get('v')!r}")
    marks = [("start", time.monotonic())]
    guest: dict = {"kernel": _PRE.get("release") or os.uname().release, "steps_ms": {}}
    guest.update(_reseed(req))
    marks.append(("reseed", time.monotonic()))
    _write_files(req)
    argv = req["argv"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    env = req.get("env")
    env = dict(_DEFAULT_ENV) if env is None else {str(k): str(v) for k, v in env.items()}
    cwd = req.get("cwd") or "/work"
    if not cwd.startswith("/"):
        cwd = os.path.join("/work", cwd)
    fds = _PRE.get("fds") or _open_io()
    stdin = T.unb64(req.get("stdin") or "", "stdin", T.MAX_REQUEST)
    if stdin:
        os.write(fds[0], stdin)
        os.lseek(fds[0], 0, os.SEEK_SET)
    marks.append(("files", time.monotonic()))
    # The exit status of the in-process run is not an OS exit status, so the result says
    # which way the command ran.
    events = None
    if req.get("events"):
        events = _GuestEvents(transport, int(req.get("events_cap") or 10000))
    if len(argv) >= 3 and argv[0] in _PYTHONS and argv[1] == "-c":
        outcome = _run_inprocess(req, argv[2], argv[3:], env, cwd, fds, events)
        outcome["mode"] = "inprocess"
        pid, exe = os.getpid(), sys.executable
    else:
        outcome = _run_exec(req, argv, env, cwd, fds)
        outcome["mode"] = "exec"
        pid, exe = outcome.pop("pid", 0), argv[0]
        missing = outcome.pop("not_found", None)
        if missing is not None:
            os.write(fds[2], f"{missing}: command not found\n".encode())
    if events is not None:
        code, sig = outcome.get("exit_code"), outcome.get("signal")
        events.events.append(["process", pid, exe, list(argv), code, sig])  # never capped
        outcome["events"] = {"events": events.events, "count": events.count, "lost": events.lost}
    marks.append(("run", time.monotonic()))
    cap = int(req.get("output_bytes", 1 << 20))
    outcome["stdout"] = _stream(fds[1], cap)
    outcome["stderr"] = _stream(fds[2], cap)
    outputs = {}
    budget = int(req.get("outputs_bytes", 0))
    for name in req.get("outputs") or []:
        path = os.path.join("/work", name)
        try:
            with open(path, "rb") as f:
                data = f.read(budget + 1)
        except OSError:
            continue
        if len(data) > budget:
            break
        budget -= len(data)
        outputs[name] = T.b64(data)
    outcome["outputs"] = outputs
    marks.append(("collect", time.monotonic()))
    for i in range(1, len(marks)):
        (_, t0), (label, t1) = marks[i - 1], marks[i]
        guest["steps_ms"][label] = round((t1 - t0) * 1000, 1)
    outcome["guest"] = guest
    outcome["v"] = 1
    outcome.setdefault("error", None)
    return outcome


def _empty_stream() -> dict:
    return {"data": "", "size": 0, "sha256": sha256(b"").hexdigest(), "truncated": False}


def main() -> None:
    if os.getpid() == 1:
        _setup()
    options = _cmdline()
    if options.get("gh.warm") == "1":
        _reexec_with_malloc()
    _console(f"gh: init up {_uptime()}".encode())
    if options.get("gh.warm") == "1":
        # Snapshot boot: the snapshot is taken while we wait for the wake line on the
        # console. Only then listen on vsock: Firecracker resets the vsock transport of a
        # restored VM, which would kill a connection the host opened before the guest
        # kernel processed that reset, but never a listener created after it.
        _warm()
        _preopen()
        _prefault()
        _console(f"gh: warm {_uptime()}".encode())
        _wait_wake()
        transport = _Vsock()
        # "Listening now": the host connects once instead of polling, and each refused
        # poll would cost the guest kernel an emulated vsock reset.
        _console(T.READY_LINE)
    else:
        transport = _Serial() if options.get("gh.transport") == "serial" else _Vsock()
        _console(T.READY_LINE)
    t_listen = time.monotonic()
    try:
        req = transport.receive()
        primed = None
        if req.get("kind") == "prime":  # the host's warm pool: no answer, the request follows
            primed = _prime(req)
            req = transport.receive()
        t_request = time.monotonic()
        result = _handle(req, transport)
        if primed is not None:
            result["guest"]["prime"] = primed
        result["guest"]["ms"] = {
            "wake_to_listen": round((t_listen - _PRE.get("woken", t_listen)) * 1000, 1),
            "listen_to_request": round((t_request - t_listen) * 1000, 1),
            "handle": round((time.monotonic() - t_request) * 1000, 1),
        }
    except Exception as exc:  # a broken request still gets an answer
        result = {
            "v": 1,
            "error": f"guest init: {type(exc).__name__}: {exc}"[:4000],
            "stdout": _empty_stream(),
            "stderr": _empty_stream(),
        }
    transport.send(T.encode_frame(result))
    if isinstance(transport, _Vsock):
        transport.linger(10.0)
    os.sync()
    if os.getpid() == 1:
        _libc.reboot(0x01234567)  # RB_AUTOBOOT: with reboot=k the VMM sees the reset and exits
    sys.exit(0)


if __name__ == "__main__":
    main()
