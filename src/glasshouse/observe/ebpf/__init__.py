"""The eBPF host observer: one BPF object loaded and attached once per process, one
session per run.

Scope is a tracked-tgid map: ``start(root_pid)`` seeds it with the gated root, the fork
tracepoint adds children, the exit tracepoint removes them, so a run's records are exactly
its own process tree's, and concurrent runs (different session slots) never mix. Records
go through one ring buffer, read by one thread that copies them and folds each session's
batch incrementally; ``stop()`` drains, reads the per-CPU counters (syscall counts, socket
bytes, lost events, truncations) and returns an
:class:`~glasshouse.core.profiling.Observation`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import struct
import threading
import time
from collections.abc import Callable

from glasshouse.core import procfs
from glasshouse.core.execution import DEFAULT_LIST_CAP, WorkloadStart
from glasshouse.core.profiling import CoverageGap, Observation, ObserverUnavailable
from glasshouse.observe.ebpf import _decode, _libbpf

OBJECT = "exec.o"
PROGRAMS = ("gh_fork", "gh_exec", "gh_exit", "gh_sys_enter", "gh_sys_exit")
#: Programs on tracepoints (and kernel types) a kernel may lack: without them the observer
#: still runs, and every receipt says what it could not see. Feature -> its programs.
OPTIONAL = {
    "connect outcomes": ("gh_sock_state",),
    "io_uring operations": ("gh_uring_submit", "gh_uring_complete"),
}
DEFAULT_RINGBUF_BYTES = 64 << 20
#: The kernel wakes the reader once this much is waiting; else the reader's 50 ms poll
#: (or a drain) picks records up. One wake-up per record would cost a context switch each.
_WAKEUP_BYTES = 256 << 10
_POLL_S = 0.05
_TRACK = struct.Struct("<II")
_LAUNCH = struct.Struct("<IIQ")  # struct gh_launch: kernel dev_t, pad, inode
#: GH_WS_* (events.h): where a session's workload starts, by WorkloadStart.kind
_WS_MODES = {"root_exec": 0, "launcher": 1, "none": 2}
_WS_SHIFT = 24
_U32 = struct.Struct("<I")
#: A map each layout change added, so an object built before it is refused, not misread.
_LAYOUT_MAPS = (
    ("launch", "the workload/harness split"),
    ("conns", "the counters for io_uring and connect outcomes"),
)
_PACKAGE_OBJECTS = os.path.join(os.path.dirname(__file__), "objects")


def object_dirs() -> list[str]:
    """Where the BPF object is looked for: ``$GLASSHOUSE_BPF_DIR`` alone when set, else the
    build cache and the package's own ``objects/`` directory."""
    env = os.environ.get("GLASSHOUSE_BPF_DIR")
    if env:
        return [env]
    cache = os.environ.get("GLASSHOUSE_CACHE", "/var/cache/glasshouse")
    return [os.path.join(cache, "bpf"), _PACKAGE_OBJECTS]


def find_object() -> str:
    for d in object_dirs():
        path = os.path.join(d, OBJECT)
        if os.path.isfile(path):
            return path
    raise ObserverUnavailable(
        f"BPF object {OBJECT} not found in {', '.join(object_dirs())} "
        "(build it with scripts/build-ebpf.sh, or set GLASSHOUSE_BPF_DIR)"
    )


def capture_argv_from_env() -> bool:
    value = os.environ.get("GLASSHOUSE_CAPTURE_ARGV", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def preflight() -> None:
    """Raise ObserverUnavailable with the first reason this host cannot run the observer."""
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        raise ObserverUnavailable("kernel has no BTF (/sys/kernel/btf/vmlinux missing)")
    try:
        _libbpf.lib()
    except OSError as exc:
        raise ObserverUnavailable(str(exc)) from None


class EbpfObserver:
    """Load + attach once (about 0.1-0.25 s); then ``start`` per run, also concurrently."""

    name = "ebpf"
    provenance = "host"
    #: ``start(pid, list_cap=N)``: each session keeps at most N entries per receipt list.
    list_cap_aware = True
    #: ``start(pid, workload_start=...)``: the harness is kept out of the workload's sections.
    harness_aware = True

    def __init__(
        self,
        object_path: str | None = None,
        *,
        capture_argv: bool | None = None,
        ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES,
        watch: Watch | None = None,
        list_cap: int = DEFAULT_LIST_CAP,
    ) -> None:
        """``list_cap``: entries kept per list by sessions started without their own cap
        (agent mode's sessions)."""
        preflight()
        self.list_cap = list_cap
        self.object_path = object_path or find_object()
        self.capture_argv = capture_argv_from_env() if capture_argv is None else capture_argv
        self._obj: _libbpf.BpfObject | None = None
        self._rb: _libbpf.RingBuffer | None = None
        self._lock = threading.Lock()
        self._sessions: dict[int, EbpfSession] = {}
        self._orphans = 0  # records whose session was already gone
        self._gen = 0  # session generations: unique per session (slots are reused)
        self._watch = watch
        #: feature -> why this kernel's observer cannot see it (OPTIONAL_PROGRAMS)
        self.unobserved: dict[str, str] = {}
        self._closed = False
        self._barrier_req = 0
        self._barrier_done = 0
        self._cond = threading.Condition()
        self._fold_lock = threading.Lock()
        self._paused = threading.Event()  # tests: a stalled consumer, to prove loss is counted
        #: how long a session's stop waits for the reader to hand over its records; past it,
        #: what was not handed over is lost (counted) and the receipt says so (not_drained)
        self.drain_timeout_s = 5.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._load(ringbuf_bytes, watch)
        except BaseException:
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._syscalls = _decode.load_syscall_names(
            [os.path.dirname(self.object_path), *object_dirs()]
        )
        if watch is not None:
            self._release_slot(0)  # slot 0 is never a session: it counts skipped roots
            for slot in range(1, _decode.MAX_SLOTS):
                self._release_slot(slot)
        self._thread = threading.Thread(target=self._reader, name="glasshouse-ebpf", daemon=True)
        self._thread.start()

    # -- load / attach -------------------------------------------------------------------
    def _open(
        self, ringbuf_bytes: int, watch: Watch | None, skip: tuple[str, ...] = ()
    ) -> _libbpf.BpfObject:
        """The object opened and configured for load, without the OPTIONAL features ``skip``."""
        try:
            obj = _libbpf.BpfObject(self.object_path)
        except _libbpf.LibbpfError as exc:
            raise ObserverUnavailable(f"cannot open BPF object {self.object_path}: {exc}") from None
        try:
            obj.set_rodata(
                struct.pack(
                    "<IIII", 1 if self.capture_argv else 0, _WAKEUP_BYTES, int(bool(watch)), 0
                )
            )
            obj.set_max_entries("events", _round_pow2(max(ringbuf_bytes, 1 << 16)))
            self._ncpu = _libbpf.possible_cpus()
            obj.set_max_entries("scratch", 3 * self._ncpu)
            self._maybe_size = _pid_max()
            obj.set_max_entries("maybe", self._maybe_size)
            for feature in skip:
                for prog in OPTIONAL[feature]:
                    obj.set_autoload(prog, False)
        except _libbpf.LibbpfError as exc:
            obj.close()
            raise ObserverUnavailable(_load_reason(exc)) from None
        return obj

    def _load_fallback(
        self, ringbuf_bytes: int, watch: Watch | None, exc: _libbpf.LibbpfError
    ) -> _libbpf.BpfObject:
        """The full object did not load: a kernel without an optional feature's tracepoints
        or types. Leave out one feature at a time, then all of them; when nothing loads,
        the first error (the full object's) is the reason."""
        for skip in (*((f,) for f in OPTIONAL), tuple(OPTIONAL)):
            try:
                obj = self._open(ringbuf_bytes, watch, skip)
            except ObserverUnavailable:
                break  # an object without these programs: its own error is the reason
            try:
                obj.load()
            except _libbpf.LibbpfError:
                obj.close()
                continue
            why = _load_reason(exc)
            self.unobserved = {f: why for f in skip}
            return obj
        raise exc

    def _load(self, ringbuf_bytes: int, watch: Watch | None) -> None:
        obj = self._open(ringbuf_bytes, watch)
        try:
            try:
                obj.load()
            except _libbpf.LibbpfError as exc:
                obj.close()
                obj = self._load_fallback(ringbuf_bytes, watch, exc)
            for map_name, change in _LAYOUT_MAPS:
                if not obj.has_map(map_name):
                    raise ObserverUnavailable(
                        f"BPF object {self.object_path} predates {change} "
                        f"(no {map_name} map): rebuild it with scripts/build-ebpf.sh"
                    )
            for prog in PROGRAMS:
                obj.attach(prog)
            attached = list(PROGRAMS)
            for feature, progs in OPTIONAL.items():
                if feature not in self.unobserved:
                    attached += self._attach_optional(obj, feature, progs)
            self._tracked = obj.map("tracked", 4, 8)
            self._maybe = obj.map("maybe", 4, 1)
            self._launch = obj.map("launch", 4, _LAUNCH.size)
            self._stats = obj.map("stats", 4, 8 * self._ncpu)
            events_fd = obj.map("events", 4, 4).fd
            self._prog_fds = [obj.prog_fd(p) for p in attached]
            self._rb = _libbpf.RingBuffer(events_fd, self._on_record)
            if watch is not None:
                comm = obj.map("watch_comm", 16, 1)
                for name in watch.comms:
                    comm.update(name.encode()[:15].ljust(16, b"\0"), b"\x01")
                cgroup = obj.map("watch_cgroup", 8, 1)
                for cg in watch.cgroup_ids:
                    cgroup.update(struct.pack("<Q", cg), b"\x01")
                self._free_slots = obj.map("free_slots", 0, 4)
        except _libbpf.LibbpfError as exc:
            obj.close()
            raise ObserverUnavailable(_load_reason(exc)) from None
        except ObserverUnavailable:
            obj.close()
            raise
        self._obj = obj

    def _attach_optional(
        self, obj: _libbpf.BpfObject, feature: str, progs: tuple[str, ...]
    ) -> list[str]:
        """Attach a feature's programs; one that fails leaves the feature unobserved."""
        try:
            for prog in progs:
                obj.attach(prog)
        except _libbpf.LibbpfError as exc:
            self.unobserved[feature] = _load_reason(exc)
            # the links made so far stay attached (closed with the object): harmless
        return list(progs)

    def close(self) -> None:
        """Detach and unload. Sessions still open see no more records."""
        self._closed = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(2)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._rb is not None:
            self._rb.free()
            self._rb = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    # -- the reader thread ---------------------------------------------------------------
    def _on_record(self, data: int, size: int) -> None:
        rec = ctypes.string_at(data, size)
        slot = _U32.unpack_from(rec, 4)[0]
        session = self._sessions.get(slot)
        if session is None:
            if self._watch is None or rec[0] != _decode.EV_EXEC or not _is_root(rec):
                self._orphans += 1
                return
            # agent mode: the kernel made this exec a new session's root
            tgid, ppid = _U32.unpack_from(rec, 8)[0], _U32.unpack_from(rec, 32)[0]
            session = EbpfSession(self, slot, tgid, ppid=ppid, list_cap=self.list_cap)
            with self._lock:
                self._sessions[slot] = session
            self._watch.on_root(session)
        session.pending.append(rec)
        if (
            self._watch is not None
            and rec[0] == _decode.EV_EXIT
            and _U32.unpack_from(rec, 8)[0] == session.root_pid
        ):
            self._watch.on_exit(session)

    def _reader(self) -> None:
        # epoll on libbpf's ring-buffer epoll fd plus our wake-up pipe: records are handed
        # over as soon as the kernel signals them, and a drain barrier needs no poll timeout.
        rb = self._rb
        assert rb is not None
        ep = select.epoll()
        ep.register(rb.epoll_fd(), select.EPOLLIN)
        ep.register(self._wake_r, select.EPOLLIN)
        try:
            while not self._closed:
                if self._paused.is_set():
                    ep.poll(0.01)  # a stalled consumer (tests) still answers drain barriers
                else:
                    ep.poll(_POLL_S)
                    rb.consume()
                    self._fold_pending()
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                with self._cond:
                    want = self._barrier_req
                if want != self._barrier_done:
                    rb.consume()
                    self._fold_pending()
                    with self._cond:
                        self._barrier_done = want
                        self._cond.notify_all()
        finally:
            ep.close()

    def _fold_pending(self) -> None:
        # On the reader thread only: records are appended and folded by the same thread.
        for session in list(self._sessions.values()):
            if session.pending:
                batch, session.pending = session.pending, []
                with self._fold_lock:
                    session.folder.feed(batch)

    def _wake(self) -> None:
        if self._wake_w < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _pause_reader(self, paused: bool) -> None:
        """Stop/restart consuming the ring buffer (tests: make the kernel drop records)."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def _drain(self, timeout: float = 5.0) -> bool:
        """Return once every record committed before this call has been handed over (True),
        or after ``timeout`` seconds (False: the reader did not get to them)."""
        with self._cond:
            self._barrier_req += 1
            target = self._barrier_req
        self._wake()
        with self._cond:
            return self._cond.wait_for(lambda: self._barrier_done >= target, timeout)

    # -- sessions ------------------------------------------------------------------------
    def _zero_slot(self, slot: int) -> None:
        zero = bytes(8 * self._ncpu)
        self._stats.update_range(slot * _decode.STAT_STRIDE, [zero] * _decode.STAT_STRIDE)

    def _release_slot(self, slot: int) -> None:
        """Zero a slot's counters; in agent mode hand it back to the kernel's free list."""
        self._zero_slot(slot)
        if self._watch is not None and slot:
            self._free_slots.update(None, _U32.pack(slot))

    def skipped_roots(self) -> int:
        """Agent mode: watched execs not observed because every session slot was busy."""
        return self._counters(0).get(_decode.STAT_LOST, 0)

    def start(
        self,
        root_pid: int,
        *,
        list_cap: int | None = None,
        workload_start: WorkloadStart | None = None,
    ) -> EbpfSession:
        """Track ``root_pid``'s tree. ``workload_start`` (default: the root's first exec) says
        where the workload starts; everything else in the tree is harness."""
        ws = workload_start or WorkloadStart()
        # "running" (a session's interpreter) is root_exec with the first exec already past
        mode = _WS_MODES.get("root_exec" if ws.kind == "running" else ws.kind)
        if mode is None:
            raise ObserverUnavailable(f"unknown workload start {ws.kind!r}")
        launch = _launch_key(ws)
        if self._closed or self._obj is None:
            raise ObserverUnavailable("the eBPF observer was closed")
        if self._watch is not None:
            raise ObserverUnavailable("an agent-mode observer starts sessions itself")
        with self._lock:
            free = [s for s in range(1, _decode.MAX_SLOTS) if s not in self._sessions]
            if not free:
                raise ObserverUnavailable(
                    f"too many concurrent observed runs (max {_decode.MAX_SLOTS - 1})"
                )
            slot = free[0]
            self._zero_slot(slot)
            self._gen += 1
            session = EbpfSession(self, slot, root_pid, list_cap=list_cap or self.list_cap)
            session.gen = self._gen
            session.workload_start = ws
            if ws.kind == "running":  # no exec will say what the root runs: /proc does
                session.folder.describe_root()
            self._sessions[slot] = session
        try:
            self._launch.update(_U32.pack(slot), launch)
            # "running": no first exec to wait for, the root is the workload already
            pending = 0 if ws.kind == "running" else _decode.PENDING
            value = slot | pending | mode << _WS_SHIFT
            self._tracked.update(_U32.pack(root_pid), _TRACK.pack(value, session.gen))
            if root_pid < self._maybe_size:
                self._maybe.update(_U32.pack(root_pid), b"\x01")
        except _libbpf.LibbpfError as exc:
            with self._lock:
                self._sessions.pop(slot, None)
            raise ObserverUnavailable(f"cannot track pid {root_pid}: {exc}") from None
        return session

    def _tracked_of(self, slot: int) -> list[int]:
        out = []
        for key in self._tracked.all_keys():
            value = self._tracked.lookup(key)
            if value is not None and (_TRACK.unpack(value)[0] & _decode.SLOT_MASK) == slot:
                out.append(_U32.unpack(key)[0])
        return out

    def _counters(self, slot: int) -> dict[int, int]:
        out: dict[int, int] = {}
        per_cpu = struct.Struct(f"<{self._ncpu}Q")
        values = self._stats.lookup_range(slot * _decode.STAT_STRIDE, _decode.STAT_STRIDE)
        for i, raw in enumerate(values):
            total = sum(per_cpu.unpack(raw))
            if total:
                out[i] = total
        return out

    def _recursion_misses(self) -> int:
        return sum(_libbpf.recursion_misses(fd) for fd in self._prog_fds if fd >= 0)

    def _finish(self, session: EbpfSession, linger: float) -> Observation:
        # Processes the run left behind are being killed by the backend: give their exit
        # records a moment, then stop tracking whatever is left (it is no longer ours).
        deadline = time.monotonic() + linger
        # A "running" root (a session's interpreter) outlives the step by design: it is
        # let go at once and is not "left running".
        keep = session.root_pid if session.workload_start.kind == "running" else None
        left = [p for p in self._tracked_of(session.slot) if p != keep]
        while left and time.monotonic() < deadline:
            time.sleep(0.01)
            left = [p for p in self._tracked_of(session.slot) if p != keep]
        for pid in [*left, *([keep] if keep is not None else [])]:
            self._tracked.delete(_U32.pack(pid))
            if pid < self._maybe_size:
                self._maybe.update(_U32.pack(pid), b"\x00")
        drained = self._drain(self.drain_timeout_s)
        counters = self._counters(session.slot)
        misses = self._recursion_misses() - session.misses_at_start
        with self._lock:
            self._sessions.pop(session.slot, None)
        if self._watch is not None:
            self._release_slot(session.slot)
        with self._fold_lock:  # the reader may be folding a batch it took just before
            tree, fs, net, sys_, res, harness = session.folder.result(counters)
        nrec = session.folder.records
        c = counters.get
        emitted = c(_decode.STAT_EMITTED, 0) + c(_decode.STAT_ASYNC_EMITTED, 0)
        causes = {
            "kernel": c(_decode.STAT_LOST, 0) + c(_decode.STAT_ASYNC_LOST, 0),
            "recursion": max(0, misses),
            "undelivered": max(0, emitted - nrec),
        }
        lost = sum(causes.values())
        obs = Observation(
            observer=self.name,
            provenance=self.provenance,
            process_tree=tree,
            filesystem=fs,
            network=net,
            syscalls=sys_,
            resources=res,
            events=nrec,
            events_lost=lost,
            truncations=counters.get(_decode.STAT_TRUNC, 0),
            omitted=session.folder.omitted(),
            harness=harness,
            gaps=_gaps(causes, drained, left) + _uring_gaps(sys_),
            accounts_for=_STATED
            | ({"blind:io_uring"} if session.folder.uring_observed else frozenset()),
        )
        if session.workload_start.kind == "none":
            _blind(obs)
        notes = []
        if left:
            notes.append(
                f"{len(left)} process(es) still running when the run ended were no longer "
                f"observed: {sorted(left)[:10]}"
            )
        if not self.capture_argv:
            notes.append("argv capture disabled (GLASSHOUSE_CAPTURE_ARGV=0)")
        for feature, why in sorted(self.unobserved.items()):
            notes.append(f"{feature} not observed on this kernel ({why})")
        obs.reason = "; ".join(notes) or None
        return obs


class EbpfSession:
    """One observed run. ``stop()`` once, after the run ended."""

    def __init__(
        self,
        observer: EbpfObserver,
        slot: int,
        root_pid: int,
        ppid: int | None = None,
        list_cap: int = DEFAULT_LIST_CAP,
    ) -> None:
        self.observer = observer
        self.slot = slot
        self.gen = 0
        self.root_pid = root_pid
        self.workload_start = WorkloadStart()
        self.misses_at_start = observer._recursion_misses()
        ppid = _ppid(root_pid) if ppid is None else ppid
        self.folder = _decode.Folder(root_pid, ppid, observer._syscalls, list_cap)
        self.folder.uring_observed = "io_uring operations" not in observer.unobserved
        self.pending: list[bytes] = []  # records not folded yet (reader thread only)
        self._stopped = False

    def stop(self, linger: float = 1.0) -> Observation:
        if self._stopped:
            raise RuntimeError("session already stopped")
        self._stopped = True
        return self.observer._finish(self, linger)


class Watch:
    """Agent mode: which execs start a session, and who hears about it.

    ``on_root(session)`` and ``on_exit(session)`` run on the reader thread: they must only
    hand the session over (e.g. put it on a queue); ``session.stop()`` is called elsewhere.
    """

    def __init__(
        self,
        comms: list[str],
        cgroup_ids: list[int],
        on_root: Callable[[EbpfSession], None],
        on_exit: Callable[[EbpfSession], None],
    ) -> None:
        if not comms and not cgroup_ids:
            raise ValueError("a watch needs at least one process name or cgroup")
        self.comms = comms
        self.cgroup_ids = cgroup_ids
        self.on_root = on_root
        self.on_exit = on_exit


def _launch_key(ws: WorkloadStart) -> bytes:
    """The gh_launch value for ``ws``: the launcher's (kernel dev_t, inode), or zeros."""
    if ws.kind != "launcher":
        return _LAUNCH.pack(0, 0, 0)
    if not ws.launcher:
        raise ObserverUnavailable("a launcher workload start needs the launcher's path")
    try:
        st = os.stat(ws.launcher)
    except OSError as exc:
        raise ObserverUnavailable(f"launcher {ws.launcher}: {exc.strerror}") from None
    kdev = os.major(st.st_dev) << 20 | os.minor(st.st_dev)  # the kernel's internal dev_t
    return _LAUNCH.pack(kdev, 0, st.st_ino)


#: the coverage gap codes the eBPF observer states itself (``Observation.accounts_for``)
_STATED = frozenset({"events_lost", "not_drained", "survivors_unobserved"})


def _uring_gaps(syscalls: object) -> list[CoverageGap]:
    """What io_uring did that the receipt's sections cannot show (the decoded ops are in
    ``filesystem``/``network`` like their syscall twins)."""
    uring = getattr(syscalls, "io_uring", None)
    if uring is None:
        return []
    if not uring.observed:
        return [
            CoverageGap(
                "blind:io_uring",
                "the workload set up io_uring and its operations could not be observed",
                sections=("filesystem", "network"),
            )
        ]
    missed = len(uring.not_decoded) + uring.unfinished
    if not missed:
        return []
    parts = []
    if uring.not_decoded:
        parts.append(f"ops whose effect no section shows: {', '.join(uring.not_decoded)}")
    if uring.unfinished:
        parts.append(f"{uring.unfinished} op(s) still in flight when the run ended")
    detail = {"not_decoded": len(uring.not_decoded), "unfinished": uring.unfinished}
    return [
        CoverageGap(
            "blind:io_uring",
            "io_uring: " + "; ".join(parts),
            count=missed,
            sections=("filesystem", "network"),
            detail=detail,
        )
    ]


def _gaps(causes: dict[str, int], drained: bool, left: list[int]) -> list[CoverageGap]:
    """What this session knows it did not see: lost events by cause, a drain that timed
    out, processes still running when it stopped watching."""
    gaps = []
    lost = sum(causes.values())
    if lost:
        message = (
            f"{lost} event(s) lost: {causes['kernel']} the kernel could not record (ring "
            "buffer full, or the tracked-process map full: a child left unobserved), "
            f"{causes['recursion']} program run(s) the kernel skipped (recursion), "
            f"{causes['undelivered']} recorded but not received by the reader"
        )
        gaps.append(CoverageGap("events_lost", message, count=lost, detail=causes))
    if not drained:
        message = (
            "the run ended before the reader had handed over every record: what was still "
            "in the ring buffer is not in the receipt (counted as undelivered)"
        )
        gaps.append(CoverageGap("not_drained", message))
    if left:
        message = (
            f"{len(left)} process(es) of the run were still running when observation "
            f"stopped: what they did afterwards is not in the receipt ({sorted(left)[:10]})"
        )
        gaps.append(CoverageGap("survivors_unobserved", message, count=len(left)))
    return gaps


def _blind(obs: Observation) -> None:
    """The host saw only the harness (runsc, a VMM): the workload's sections were not
    observed, and the receipt must not read as "observed, nothing happened"."""
    why = (
        "the workload ran where the host cannot see it (gVisor's sentry or a VM guest): "
        "host observation saw only Glasshouse's harness (observation.harness)"
    )
    for section in ("process_tree", "filesystem", "network", "syscalls"):
        setattr(obs, section, None)
        obs.missing[section] = why


def _is_root(rec: bytes) -> bool:
    return bool(struct.unpack_from("<H", rec, 2)[0] & _decode.F_ROOT)


def _ppid(pid: int) -> int:
    found = procfs.ppid(pid)
    return os.getpid() if found is None else found


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return max(32768, min(int(f.read()), 1 << 22))
    except (OSError, ValueError):
        return 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit


def _round_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _load_reason(exc: _libbpf.LibbpfError) -> str:
    """A one-line reason for a failed load/attach, with the verifier's last words."""
    reason = f"eBPF {exc}"
    if exc.errno in (1, 13) and os.geteuid() != 0:  # EPERM/EACCES
        reason += " (needs root, or CAP_BPF + CAP_PERFMON)"
    log = [ln.strip() for ln in (exc.log or "").splitlines() if ln.strip()]
    verifier = [ln for ln in log if not ln.startswith("libbpf:") and not ln[0].isdigit()]
    tail = (verifier or log)[-2:]
    if tail:
        reason += ": " + " | ".join(tail)[:400]
    return reason
