"""Decode the BPF ring-buffer records (``events.h``) and fold one session's records into an
:class:`~glasshouse.core.profiling.Observation`.

Records arrive as raw bytes (the reader thread only copies them); decoding happens once,
when the session stops, so the reader keeps up with bursts.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import struct
import time
from collections.abc import Iterable
from pathlib import Path

from glasshouse.core.execution import DEFAULT_LIST_CAP
from glasshouse.observe.ebpf._net import NetFolder, protocol, sockaddr
from glasshouse.observe.ebpf._uring import UringFolder, io_uring_block
from glasshouse.observe.fold import (
    NAMESPACE_CALLS,
    Dedup,
    changed_paths,
    folded_omissions,
    normalize,
)
from glasshouse.receipt.model import (
    ExecImage,
    FailedFileOp,
    Filesystem,
    Harness,
    HarnessCounts,
    Link,
    Network,
    ProcessNode,
    Rename,
    Resources,
    Syscalls,
)

__all__ = ["Folder", "load_syscall_names", "protocol", "sockaddr"]

# struct gh_event header (events.h): keep in step with the C definition.
HDR = struct.Struct("<HHIIIQqIiQ4H")
HDR_SIZE = 56
assert HDR.size == HDR_SIZE

EV_FORK, EV_EXEC, EV_EXIT, EV_FILE, EV_NET, EV_CONN, EV_URING = 1, 2, 3, 4, 5, 6, 7
F_TRUNC = (1 << 0, 1 << 1, 1 << 2, 1 << 3)
F_DIR1, F_DIR3 = 1 << 4, 1 << 5
F_ROOT = 1 << 8
F_HARNESS = 1 << 9
F_UNLINKED1, F_UNLINKED3 = 1 << 10, 1 << 11
F_PSEUDO1, F_PSEUDO3 = 1 << 12, 1 << 13

NR_SYSCALLS = 512
STAT_LOST = NR_SYSCALLS + 0
STAT_TRUNC = NR_SYSCALLS + 1
STAT_TX = NR_SYSCALLS + 2
STAT_RX = NR_SYSCALLS + 3
STAT_EMITTED = NR_SYSCALLS + 4
STAT_UNKNOWN_NR = NR_SYSCALLS + 5
STAT_HARNESS_SYS = NR_SYSCALLS + 6
STAT_HARNESS_FILE = NR_SYSCALLS + 7
STAT_HARNESS_NET = NR_SYSCALLS + 8
URING_OPS = 64
STAT_URING = NR_SYSCALLS + 16
STAT_ASYNC_EMITTED = NR_SYSCALLS + 80
STAT_ASYNC_LOST = NR_SYSCALLS + 81
STAT_URING_SETUP = NR_SYSCALLS + 82
STAT_STRIDE = NR_SYSCALLS + 96
MAX_SLOTS = 64
PENDING = 0x80000000
SLOT_MASK = 0x0000FFFF

_O_ACCMODE, _O_WRONLY, _O_RDWR = 0o3, 0o1, 0o2
_O_CREAT, _O_TRUNC, _O_PATH, _O_TMPFILE = 0o100, 0o1000, 0o10000000, 0o20000000
_AT_REMOVEDIR = 0x200
_RENAME_EXCHANGE = 2


def _errname(ret: int) -> str:
    return _errno.errorcode.get(-ret, f"E{-ret}")


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _dir(raw: bytes) -> str:
    parts = raw.split(b"\0")
    if parts[-1] == b"":
        parts.pop()  # after the last NUL
    if b"" in parts:  # an empty name (a pseudo file's): skipped
        parts = [p for p in parts if p]
    parts.reverse()
    return "/" + b"/".join(parts).decode("utf-8", "backslashreplace")


def _ts(mono_ns: int, offset: int) -> str:
    import datetime as _dt

    from glasshouse.receipt.aggregate import rfc3339

    return rfc3339(_dt.datetime.fromtimestamp((mono_ns + offset) / 1e9, _dt.UTC))


#: ret, nr, arg0, arg1, str_len[0..3]
_FILE_FAST = struct.Struct("<qIiQ4H")
#: successful ones carry the opened file itself, walked in the kernel (slot 1 alone)
_OPENS = frozenset(("open", "openat", "openat2", "creat", "open_by_handle_at"))


def _walked_file(raw: bytes, flags_unlinked: bool, flags_pseudo: bool) -> str:
    """A file walked in the kernel from itself, named as ``readlink /proc/PID/exe`` would:
    its path, ``PATH (deleted)`` once unlinked, a pseudo file's own name (``memfd:NAME``)."""
    if flags_pseudo:
        return _text(raw)
    path = _dir(raw)
    return f"{path} (deleted)" if flags_unlinked else path


class _Proc:
    """A process while folding: plain slots (a pydantic model per fork costs microseconds
    on the reader thread; the ProcessNode is built once, in ``result``)."""

    __slots__ = (
        "argv",
        "code",
        "cwd",
        "end",
        "exe",
        "exec_ts",
        "execs",
        "forked",
        "harness",
        "images",
        "ns_pid",
        "pid",
        "ppid",
        "sig",
        "start",
        "trunc",
    )  # fmt: skip

    def __init__(self, pid: int, ppid: int) -> None:
        self.pid, self.ppid = pid, ppid
        self.ns_pid: int | None = None  # pid inside its pid namespace, where it differs
        self.exe: str | None = None
        self.argv: list[str] = []
        self.cwd: str | None = None
        self.code: int | None = None
        self.sig: int | None = None
        self.start: int | None = None  # CLOCK_MONOTONIC ns
        self.end: int | None = None
        self.trunc = False
        self.forked = False
        self.harness = False  # as the kernel last said (F_HARNESS on FORK/EXEC/EXIT)
        self.execs = 0  # images this pid ran (EXEC records, or the root described from /proc)
        self.exec_ts: int | None = None  # when the current image started
        #: every image (exe, argv, cwd, exec ts, argv cut), kept once there is a second one
        self.images: list[tuple[str | None, list[str], str | None, int | None, bool]] = []

    def image(self) -> tuple[str | None, list[str], str | None, int | None, bool]:
        """The current image."""
        return (self.exe, self.argv, self.cwd, self.exec_ts, self.trunc)

    def node(self, offset: int) -> ProcessNode:
        extra: dict = {"role": "harness"} if self.harness else {}
        if self.images:
            extra["execs"] = [
                ExecImage(
                    exe=exe,
                    argv=argv,
                    working_dir=cwd,
                    started_at=_ts(ts, offset) if ts is not None else None,
                    argv_truncated=cut,
                )
                for exe, argv, cwd, ts, cut in self.images
            ]
        return ProcessNode(
            **extra,
            pid=self.pid,
            ppid=self.ppid,
            ns_pid=self.ns_pid,
            exe=self.exe,
            argv=self.argv,
            working_dir=self.cwd,
            exit_code=self.code,
            signal=self.sig,
            started_at=_ts(self.start, offset) if self.start is not None else None,
            ended_at=_ts(self.end, offset) if self.end is not None else None,
            argv_truncated=self.trunc,
            forked_only=self.forked,
        )


class Folder:
    """Folds one session's records, incrementally (``feed``), into receipt sections; the
    reader hands records over in batches, so memory holds the folded state, not every
    record. ``result`` adds the kernel's per-session counters."""

    def __init__(
        self,
        root_pid: int,
        root_ppid: int,
        syscall_names: dict[int, str],
        list_cap: int = DEFAULT_LIST_CAP,
    ) -> None:
        self.root_pid = root_pid
        self.names = syscall_names
        self.offset = time.time_ns() - time.monotonic_ns()  # CLOCK_MONOTONIC -> wall
        self.cap = list_cap
        self.procs: dict[int, _Proc] = {root_pid: _Proc(root_pid, root_ppid)}
        self.procs_omitted = 0
        self.harness_omitted = 0  # harness processes past the cap (their own budget)
        self.images_kept = 0  # ExecImages kept over all processes (at most list_cap)
        self.images_omitted = 0
        self._nprocs = [1, 0]  # processes kept: [workload, harness]
        cap = list_cap
        self.reads, self.writes, self.deletes = Dedup(cap), Dedup(cap), Dedup(cap)
        self.mkdirs, self.renames, self.links = Dedup(cap), Dedup(cap), Dedup(cap)
        self.failed = Dedup(cap)
        self.net = NetFolder(cap)
        self.attempts, self.binds, self.sends = self.net.attempts, self.net.binds, self.net.sends
        self.uring = UringFolder(
            {name: nr for nr, name in syscall_names.items()}, self._file, self.net.record, cap
        )
        #: False when the observer could not attach its io_uring programs (set by the loader)
        self.uring_observed = True
        self.max_rss = 0
        self.cpu_ns = 0
        self.records = 0
        # FILE records already folded, byte for byte: a shortcut only, so once it holds
        # ``list_cap`` keys it stops growing (records are then decoded, and deduplicated
        # by the lists themselves).
        self._raw_seen: set[bytes] = set()

    def describe_root(self) -> None:
        """Fill the root's exe, argv, cwd and pid in its namespace from /proc: a root that
        is observed from the middle of its life (a running interpreter) has no exec to
        tell them. Whatever cannot be read stays unknown."""
        node = self.procs[self.root_pid]
        base = f"/proc/{self.root_pid}"
        with contextlib.suppress(OSError):
            raw = Path(f"{base}/cmdline").read_bytes().rstrip(b"\0")
            node.argv = [a.decode("utf-8", "backslashreplace") for a in raw.split(b"\0")]
        with contextlib.suppress(OSError):
            node.exe = os.readlink(f"{base}/exe")
        with contextlib.suppress(OSError):
            node.cwd = os.readlink(f"{base}/cwd")
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"{base}/status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    ns = int(line.split()[-1])
                    node.ns_pid = ns if ns != self.root_pid else None
        node.start = time.monotonic_ns()
        node.execs = 1  # the image it was handed over with: a later exec keeps it in execs

    def _new_proc(self, pid: int, ppid: int, harness: bool) -> _Proc | None:
        """A new process node, or None once ``list_cap`` processes of its role are kept."""
        if self._nprocs[harness] >= self.cap:
            return None
        node = self.procs[pid] = _Proc(pid, ppid)
        self._nprocs[harness] += 1
        node.harness = harness
        return node

    def _set_role(self, node: _Proc, harness: bool) -> None:
        """The kernel's word on a process's role (a harness process that exec'd the user's
        command became the workload)."""
        if node.harness != harness:
            self._nprocs[node.harness] -= 1
            self._nprocs[harness] += 1
            node.harness = harness

    def omitted(self) -> dict[str, int]:
        """Entries each receipt list left out at the cap (only the lists that did)."""
        out = folded_omissions(self)
        if self.harness_omitted:
            out["observation.harness.processes"] = self.harness_omitted
        if self.images_omitted:
            out["process_tree.execs"] = self.images_omitted
        return out

    def feed(self, records: Iterable[bytes]) -> None:
        seen = self._raw_seen
        names = self.names
        unpack_file = _FILE_FAST.unpack_from
        for rec in records:
            self.records += 1
            if rec[0] != EV_FILE:
                self._one(rec)
                continue
            # identical file records (say a loop retrying a missing path) fold to one
            # entry: skip them before any decoding (the header's ts/tid/pid differ).
            key = rec[0:4] + rec[24:36] + rec[40:]
            if key in seen:
                continue
            if len(seen) < self.cap:
                seen.add(key)
            # fast paths, the common shapes: an open that reached a named file (slot 1
            # alone, walked from the file); one absolute path that failed
            ret, nr, _a0, arg1, l0, l1, l2, l3 = unpack_file(rec, 24)
            op = names.get(nr)
            if l2 or l3 or op is None:
                self._one(rec)
            elif ret >= 0 and not l0 and l1 and rec[2] == F_DIR1 and not rec[3]:
                if op in _OPENS:
                    self._open(_dir(rec[56 : 56 + l1]), arg1)
                else:
                    self._one(rec)
            elif ret < 0 and not l1 and l0 >= 2 and rec[56] == 47:  # 47 == "/"
                raw = rec[56 : 56 + l0]
                end = raw.find(b"\0")
                path = (raw if end < 0 else raw[:end]).decode("utf-8", "backslashreplace")
                path = normalize(path, None)
                self.failed.add((op, path, ret), (op, path, ret))
            else:
                self._one(rec)

    def _open(self, path: str, flags: int) -> None:
        """A successful open of ``path``: a read, a write or both, by its flags."""
        if flags & (_O_PATH | _O_TMPFILE):  # a lookup; a file with no name (yet)
            return
        acc = flags & _O_ACCMODE
        if acc in (0, _O_RDWR):
            self.reads.add(path, path)
        if acc in (_O_WRONLY, _O_RDWR) or flags & (_O_CREAT | _O_TRUNC):
            self.writes.add(path, path)

    def _one(self, rec: bytes) -> None:
        etype, flags, _slot, tgid, _tid, ts, ret, nr, arg0, arg1, l0, l1, l2, l3 = HDR.unpack_from(
            rec
        )
        p = HDR_SIZE
        s0 = rec[p : p + l0]
        p += l0
        s1 = rec[p : p + l1]
        p += l1
        s2 = rec[p : p + l2]
        p += l2
        s3 = rec[p : p + l3]
        procs = self.procs

        if etype == EV_FORK:
            parent = procs.get(tgid)
            harness = bool(flags & F_HARNESS)
            old = procs.get(nr)
            if old is not None:  # a reused pid: a new process
                node = procs[nr] = _Proc(nr, arg0 or tgid)
                node.harness = old.harness
                self._set_role(node, harness)
            else:
                new = self._new_proc(nr, arg0 or tgid, harness)
                if new is None:  # past the cap: counted once, here
                    if harness:
                        self.harness_omitted += 1
                    else:
                        self.procs_omitted += 1
                    return
                node = new
            node.forked = True
            node.start = ts
            if arg1 and arg1 != nr:
                node.ns_pid = arg1
            if parent is not None:
                node.exe = parent.exe
                node.argv = parent.argv
                node.cwd = parent.cwd
                node.trunc = parent.trunc
        elif etype == EV_EXEC:
            self._exec(flags, tgid, ts, nr, arg0, s0, s1, s2, s3)
        elif etype == EV_EXIT:
            if not flags & F_HARNESS:  # the workload's resources only
                self.max_rss = max(self.max_rss, arg0)
                self.cpu_ns += arg1
            harness = bool(flags & F_HARNESS)
            node = procs.get(tgid) or self._new_proc(tgid, 0, harness)
            if node is None:  # past the cap (its fork was counted)
                return
            self._set_role(node, harness)
            status = ret & 0xFFFF
            if status & 0x7F:
                node.sig = status & 0x7F
            else:
                node.code = (status >> 8) & 0xFF
            node.end = ts
        elif etype == EV_FILE:
            self._file(flags, ret, nr, arg1, s0, s1, s2, s3, l2)
        elif etype == EV_NET:
            op = self.names.get(nr, f"syscall_{nr}")
            self.net.record(tgid, flags, ret, op, arg0, arg1, s0, s1)
        elif etype == EV_CONN:
            self.net.outcome(arg1, ret)
        elif etype == EV_URING:
            self.uring.feed(tgid, flags, ret, nr, arg0, arg1, (s0, s1, s2, s3))

    def _exec(
        self,
        flags: int,
        tgid: int,
        ts: int,
        ppid: int,
        ns_pid: int,
        s0: bytes,
        s1: bytes,
        s2: bytes,
        s3: bytes,
    ) -> None:
        harness = bool(flags & F_HARNESS)
        node = self.procs.get(tgid)
        seen = node is not None
        if node is None:
            node = self._new_proc(tgid, ppid, harness)
            if node is None:  # past the cap (its fork was counted)
                return
        # a chain (an exec replacing an image this pid exec'd in the same role): every image
        # is kept, in order; a harness image is never the workload's history
        chain = node.execs > 0 and node.harness == harness
        if node.harness != harness:
            node.images = []
        first = node.image()
        cwd = _dir(s1)
        node.cwd = cwd
        if flags & F_DIR3:  # the file the kernel executed, walked from bprm->file
            node.exe = _walked_file(s3, bool(flags & F_UNLINKED3), bool(flags & F_PSEUDO3))
        else:  # an object built before it was walked: the binary as named
            node.exe = normalize(_text(s0), cwd) if s0 else None
        if s2:
            argv = s2[:-1] if s2.endswith(b"\0") else s2
            node.argv = [a.decode("utf-8", "backslashreplace") for a in argv.split(b"\0")]
        else:
            node.argv = []
        node.trunc = bool(flags & F_TRUNC[2])
        node.forked = False
        self._set_role(node, harness)
        node.execs += 1
        node.exec_ts = ts
        if chain:
            self._keep_images(node, [first, node.image()] if not node.images else [node.image()])
        if ns_pid and ns_pid != tgid:
            node.ns_pid = ns_pid
        if node.start is None:
            node.start = ts
        if not seen and tgid != self.root_pid:
            # its creator, from the FORK record, stays its parent: an orphan exec'ing after
            # its parent died is reparented (to init or a subreaper), not someone else's child
            node.ppid = ppid

    def _keep_images(self, node: _Proc, images: list) -> None:
        """Add ``images`` to ``node``'s chain, within the session's budget of ``list_cap``
        images (past it they are counted, the chain stays as it was)."""
        if self.images_kept + len(images) > self.cap:
            self.images_omitted += len(images)
            return
        self.images_kept += len(images)
        node.images.extend(images)

    def _file(
        self,
        flags: int,
        ret: int,
        nr: int,
        arg1: int,
        s0: bytes,
        s1: bytes,
        s2: bytes,
        s3: bytes,
        l2: int,
    ) -> None:
        op = self.names.get(nr, f"syscall_{nr}")
        path1 = _text(s0)
        base1 = _dir(s1) if flags & F_DIR1 else None
        path2 = _text(s2)
        base2 = _dir(s3) if flags & F_DIR3 else None
        if op in ("symlink", "symlinkat"):
            target, where = path1, normalize(path2, base2)
        else:
            target = normalize(path1, base1) if (s0 or base1) else ""
            where = normalize(path2, base2) if l2 else ""
        if ret < 0:
            shown = f"{target} -> {where}" if where else target
            self.failed.add((op, shown, ret), (op, shown, ret))  # models built in result()
            return
        # the object is a file itself, walked from its fd (no path given: ftruncate, an open,
        # linkat AT_EMPTY_PATH), and it has no name: an O_TMPFILE file, a deleted file, a
        # memfd, a pipe. No path's content or existence changed through it.
        nameless = not path1 and bool(flags & (F_UNLINKED1 | F_PSEUDO1))
        if op in _OPENS:
            if not nameless:
                self._open(target, arg1)
        elif op in ("truncate", "ftruncate"):
            if not nameless:
                self.writes.add(target, target)
        elif (kind := NAMESPACE_CALLS.get(op)) is not None:
            self._namespace(op, kind, arg1, target, where, nameless)
        # chdir/fchdir/execve(at): only their failures are recorded (above)

    def _namespace(
        self, op: str, kind: str, arg1: int, target: str, where: str, nameless: bool
    ) -> None:
        """A successful mkdir, mknod, unlink, rmdir, link, symlink or rename: the seed's
        writes and deletes (fold.changed_paths), and the richer section it belongs to."""
        if kind == "unlink" and op == "unlinkat" and arg1 & _AT_REMOVEDIR:
            kind = "rmdir"
        elif kind == "rename" and op == "renameat2" and arg1 & _RENAME_EXCHANGE:
            kind = "exchange"
        written, deleted = changed_paths(kind, target, where)
        for path in written:
            self.writes.add(path, path)
        for path in deleted:
            self.deletes.add(path, path)
        if kind == "mkdir":
            self.mkdirs.add(target, target)
        elif kind in ("rename", "exchange"):
            ex = kind == "exchange"
            self.renames.add((target, where, ex), (target, where, ex))
        elif kind == "link":
            if nameless:  # linkat(fd, "", AT_EMPTY_PATH) of an O_TMPFILE file: as readlink
                target = f"{target} (deleted)"
            self.links.add((target, where, "hard"), (target, where, "hard"))
        elif kind == "symlink":
            self.links.add((target, where, "symbolic"), (target, where, "symbolic"))

    def result(
        self, counters: dict[int, int]
    ) -> tuple[list[ProcessNode], Filesystem, Network, Syscalls, Resources, Harness]:
        """The workload's sections, then the harness (its processes, its syscalls counted)."""
        self.uring.finish()  # first: an op the ring posts no completion for folds as a success
        fs = Filesystem(
            reads=self.reads.items,
            writes=self.writes.items,
            deletes=self.deletes.items,
            renames=[
                Rename(src=a, dst=b, exchange=True) if ex else Rename(src=a, dst=b)
                for a, b, ex in self.renames.items
            ],
            links=[Link(target=t, path=p, kind=k) for t, p, k in self.links.items],
            mkdirs=self.mkdirs.items,
            failed=[FailedFileOp(op=o, path=p, errno=_errname(r)) for o, p, r in self.failed.items],
        )
        net: Network = self.net.network(counters.get(STAT_TX, 0), counters.get(STAT_RX, 0))
        counts: dict[str, int] = {}
        for nr, n in counters.items():
            if nr < NR_SYSCALLS and n:
                name = self.names.get(nr, f"syscall_{nr}")
                counts[name] = counts.get(name, 0) + n
        if counters.get(STAT_UNKNOWN_NR):
            counts["unknown"] = counters[STAT_UNKNOWN_NR]
        uring = io_uring_block(
            {i - STAT_URING: n for i, n in counters.items() if 0 <= i - STAT_URING < URING_OPS},
            self.uring.undecoded,
            self.uring.unfinished,
            counters.get(STAT_URING_SETUP, 0),
            self.uring_observed,
        )
        resources = Resources(
            max_rss_kb=self.max_rss or None,
            cpu_time_ms=round(self.cpu_ns / 1e6) if self.cpu_ns else None,
        )
        tree = [p.node(self.offset) for p in self.procs.values() if not p.harness]
        harness = Harness(
            processes=[p.node(self.offset) for p in self.procs.values() if p.harness],
            counts=HarnessCounts(
                files=counters.get(STAT_HARNESS_FILE, 0),
                network=counters.get(STAT_HARNESS_NET, 0),
                syscalls=counters.get(STAT_HARNESS_SYS, 0),
            ),
        )
        extra = {"io_uring": uring} if uring is not None else {}
        syscalls = Syscalls(counts=dict(sorted(counts.items())), **extra)
        return tree, fs, net, syscalls, resources, harness


def load_syscall_names(dirs: Iterable[str]) -> dict[int, str]:
    """nr -> name, from the ``syscalls.tsv`` the build wrote, else the kernel headers."""
    for d in dirs:
        path = os.path.join(d, "syscalls.tsv")
        try:
            with open(path) as f:
                return {int(n): name for n, name in (line.split() for line in f if line.strip())}
        except (OSError, ValueError):
            continue
    for header in (
        "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
        "/usr/include/asm/unistd_64.h",
    ):
        try:
            with open(header) as f:
                out = {}
                for line in f:
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == "#define" and parts[1].startswith("__NR_"):
                        out[int(parts[2])] = parts[1][5:]
                if out:
                    return out
        except (OSError, ValueError):
            continue
    return {}
