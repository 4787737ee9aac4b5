"""Decode the BPF ring-buffer records (``events.h``) and fold one session's records into an
:class:`~glasshouse.core.profiling.Observation`.

Records arrive as raw bytes (the reader thread only copies them); decoding happens once,
when the session stops, so the reader keeps up with bursts.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import posixpath
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from glasshouse.receipt.model import (
    FailedFileOp,
    Filesystem,
    Link,
    Network,
    NetworkAttempt,
    NetworkBind,
    NetworkSend,
    ProcessNode,
    Rename,
    Resources,
    Syscalls,
)

# struct gh_event header (events.h): keep in step with the C definition.
HDR = struct.Struct("<HHIIIQqIiQ4H")
HDR_SIZE = 56
assert HDR.size == HDR_SIZE

EV_FORK, EV_EXEC, EV_EXIT, EV_FILE, EV_NET = 1, 2, 3, 4, 5
F_TRUNC = (1 << 0, 1 << 1, 1 << 2, 1 << 3)
F_DIR1, F_DIR3 = 1 << 4, 1 << 5

NR_SYSCALLS = 512
STAT_LOST = NR_SYSCALLS + 0
STAT_TRUNC = NR_SYSCALLS + 1
STAT_TX = NR_SYSCALLS + 2
STAT_RX = NR_SYSCALLS + 3
STAT_EMITTED = NR_SYSCALLS + 4
STAT_UNKNOWN_NR = NR_SYSCALLS + 5
STAT_STRIDE = NR_SYSCALLS + 8
MAX_SLOTS = 64
PENDING = 0x80000000

_O_ACCMODE, _O_WRONLY, _O_RDWR = 0o3, 0o1, 0o2
_O_CREAT, _O_TRUNC, _O_PATH = 0o100, 0o1000, 0o10000000
_AT_REMOVEDIR = 0x200
_AF_UNSPEC, _AF_UNIX, _AF_INET, _AF_INET6 = 0, 1, 2, 10
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 5: "seqpacket"}

_CONNECT_RESULTS = {
    0: "connected",
    _errno.EINPROGRESS: "in_progress",
    _errno.EALREADY: "in_progress",
    _errno.ECONNREFUSED: "refused",
    _errno.ENETUNREACH: "unreachable",
    _errno.EHOSTUNREACH: "unreachable",
    _errno.ETIMEDOUT: "timeout",
    _errno.EACCES: "denied",
    _errno.EPERM: "denied",
    _errno.ENOENT: "not_found",
    _errno.EADDRNOTAVAIL: "address_unavailable",
}


def _errname(ret: int) -> str:
    return _errno.errorcode.get(-ret, f"E{-ret}")


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _dir(raw: bytes) -> str:
    parts = [p.decode("utf-8", "backslashreplace") for p in raw.split(b"\0") if p]
    return "/" + "/".join(reversed(parts))


def normalize(path: str, base: str | None) -> str:
    """An absolute normalized path: ``path`` as given, joined to ``base`` when relative."""
    if not path.startswith("/"):
        path = posixpath.join(base or "/", path) if path else (base or "/")
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return path


def sockaddr(raw: bytes) -> tuple[str, str] | None:
    """(family name, address string) of a struct sockaddr, or None for AF_UNSPEC/short."""
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], "little")
    if family == _AF_INET and len(raw) >= 8:
        port = int.from_bytes(raw[2:4], "big")
        return "ipv4", f"{ipaddress.IPv4Address(raw[4:8])}:{port}"
    if family == _AF_INET6 and len(raw) >= 24:
        port = int.from_bytes(raw[2:4], "big")
        return "ipv6", f"[{ipaddress.IPv6Address(raw[8:24])}]:{port}"
    if family == _AF_UNIX:
        path = raw[2:]
        if not path:
            return "unix", "(unnamed)"
        if path[0] == 0:  # abstract namespace: the name is every byte of the length
            return "unix", "@" + path[1:].decode("utf-8", "backslashreplace")
        return "unix", path.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    if family == _AF_UNSPEC:
        return None
    return f"af{family}", raw[2:].hex()


def protocol(kind: int, family_name: str) -> str:
    sock_type, sock_family = kind & 0xFFFF, kind >> 16
    if sock_family == _AF_UNIX or family_name == "unix":
        return "unix"
    if sock_type == 1:
        return "tcp"
    if sock_type == 2:
        return "udp"
    if kind == 0:
        return "unknown"
    return _SOCK_TYPES.get(sock_type, f"type{sock_type}")


@dataclass
class _Proc:
    node: ProcessNode
    order: int


@dataclass
class SessionData:
    """What one run's records and counters fold into."""

    root_pid: int
    root_ppid: int
    syscall_names: dict[int, str]
    mono_to_wall_ns: int = field(default_factory=lambda: time.time_ns() - time.monotonic_ns())
    records: list[bytes] = field(default_factory=list)


def _ts(mono_ns: int, offset: int) -> str:
    import datetime as _dt

    from glasshouse.receipt.aggregate import rfc3339

    return rfc3339(_dt.datetime.fromtimestamp((mono_ns + offset) / 1e9, _dt.UTC))


class _Dedup:
    def __init__(self) -> None:
        self.items: list = []
        self._seen: set = set()

    def add(self, key: object, item: object) -> None:
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(item)


def fold(
    data: SessionData, counters: dict[int, int]
) -> tuple[list[ProcessNode], Filesystem, Network, Syscalls, Resources, int, int]:
    """Fold records + kernel counters -> (tree, fs, net, syscalls, resources, events, trunc)."""
    procs: dict[int, _Proc] = {}
    procs[data.root_pid] = _Proc(ProcessNode(pid=data.root_pid, ppid=data.root_ppid), 0)
    reads, writes, deletes, mkdirs = _Dedup(), _Dedup(), _Dedup(), _Dedup()
    renames, links, failed = _Dedup(), _Dedup(), _Dedup()
    attempts, binds = _Dedup(), _Dedup()
    sends: dict[tuple[str, str], int] = {}
    bind_by_fd: dict[tuple[int, int], NetworkBind] = {}
    max_rss = 0
    cpu_ns = 0
    names = data.syscall_names
    off = data.mono_to_wall_ns
    truncated_argv = 0

    for rec in data.records:
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

        if etype == EV_FORK:
            parent = procs.get(tgid)
            node = ProcessNode(pid=nr, ppid=arg0 or tgid, forked_only=True)
            node.started_at = _ts(ts, off)
            if parent is not None:
                node.exe = parent.node.exe
                node.argv = list(parent.node.argv)
                node.working_dir = parent.node.working_dir
                node.argv_truncated = parent.node.argv_truncated
            procs[nr] = _Proc(node, len(procs))
        elif etype == EV_EXEC:
            proc = procs.get(tgid)
            if proc is None:
                proc = procs[tgid] = _Proc(ProcessNode(pid=tgid, ppid=nr), len(procs))
            node = proc.node
            cwd = _dir(s1)
            node.working_dir = cwd
            node.exe = normalize(_text(s0), cwd) if s0 else None
            if s2:
                argv = s2[:-1] if s2.endswith(b"\0") else s2
                node.argv = [a.decode("utf-8", "backslashreplace") for a in argv.split(b"\0")]
            node.argv_truncated = bool(flags & F_TRUNC[2])
            truncated_argv += node.argv_truncated
            node.forked_only = False
            if node.started_at is None:
                node.started_at = _ts(ts, off)
            if tgid != data.root_pid:
                node.ppid = nr
        elif etype == EV_EXIT:
            proc = procs.get(tgid)
            if proc is None:
                proc = procs[tgid] = _Proc(ProcessNode(pid=tgid, ppid=0), len(procs))
            status = ret & 0xFFFF
            if status & 0x7F:
                proc.node.signal = status & 0x7F
            else:
                proc.node.exit_code = (status >> 8) & 0xFF
            proc.node.ended_at = _ts(ts, off)
            max_rss = max(max_rss, arg0)
            cpu_ns += arg1
        elif etype == EV_FILE:
            op = names.get(nr, f"syscall_{nr}")
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
                failed.add((op, shown, ret), FailedFileOp(op=op, path=shown, errno=_errname(ret)))
                continue
            if op in ("open", "openat", "openat2"):
                if arg1 & _O_PATH:
                    continue
                acc = arg1 & _O_ACCMODE
                if acc in (0, _O_RDWR):
                    reads.add(target, target)
                if acc in (_O_WRONLY, _O_RDWR) or arg1 & (_O_CREAT | _O_TRUNC):
                    writes.add(target, target)
            elif op in ("creat", "truncate", "ftruncate"):
                writes.add(target, target)
            elif op in ("unlink", "unlinkat", "rmdir"):
                deletes.add(target, target)
            elif op in ("rename", "renameat", "renameat2"):
                renames.add((target, where), Rename(src=target, dst=where))
            elif op in ("link", "linkat"):
                links.add((target, where, "h"), Link(target=target, path=where, kind="hard"))
            elif op in ("symlink", "symlinkat"):
                links.add((target, where, "s"), Link(target=target, path=where, kind="symbolic"))
            elif op in ("mkdir", "mkdirat"):
                mkdirs.add(target, target)
            # chdir/fchdir/execve(at): only their failures are recorded (above)
        elif etype == EV_NET:
            op = names.get(nr, f"syscall_{nr}")
            addr = sockaddr(s0)
            if op == "listen":
                bound = bind_by_fd.get((tgid, arg0))
                if bound is not None and ret == 0:
                    bound.listening = True
                    if addr and addr[0] != "unix":
                        bound.addr = addr[1]
                elif addr is not None and ret == 0:
                    b = NetworkBind(addr=addr[1], protocol=protocol(arg1, addr[0]), listening=True)
                    binds.add(id(b), b)
                continue
            if addr is None:
                continue
            fam, dst = addr
            proto = protocol(arg1, fam)
            if op == "connect":
                result = _CONNECT_RESULTS.get(-ret if ret < 0 else 0, _errname(ret).lower())
                key = (dst, proto, result, fam, tgid)
                attempts.add(
                    key,
                    NetworkAttempt(dst=dst, protocol=proto, result=result, family=fam, pid=tgid),
                )
            elif op == "bind":
                if ret < 0:
                    key = (dst, proto, "bind:" + _errname(ret), fam, tgid)
                    attempts.add(
                        key,
                        NetworkAttempt(
                            dst=dst,
                            protocol=proto,
                            result="bind_failed:" + _errname(ret).lower(),
                            family=fam,
                            pid=tgid,
                        ),
                    )
                    continue
                b = NetworkBind(addr=dst, protocol=proto)
                bind_by_fd[(tgid, arg0)] = b
                binds.add(id(b), b)
            elif op in ("sendto", "sendmsg"):
                if ret < 0:
                    key = (dst, proto, "send:" + _errname(ret), fam, tgid)
                    attempts.add(
                        key,
                        NetworkAttempt(
                            dst=dst,
                            protocol=proto,
                            result="send_failed:" + _errname(ret).lower(),
                            family=fam,
                            pid=tgid,
                        ),
                    )
                else:
                    sends[(dst, proto)] = sends.get((dst, proto), 0) + ret

    tree = [p.node for p in sorted(procs.values(), key=lambda p: p.order)]
    fs = Filesystem(
        reads=reads.items,
        writes=writes.items,
        deletes=deletes.items,
        renames=renames.items,
        links=links.items,
        mkdirs=mkdirs.items,
        failed=failed.items,
    )
    net = Network(
        attempts=attempts.items,
        bytes_sent=counters.get(STAT_TX, 0),
        bytes_received=counters.get(STAT_RX, 0),
        binds=binds.items,
        sends=[NetworkSend(dst=d, protocol=pr, bytes=n) for (d, pr), n in sends.items()],
    )
    counts: dict[str, int] = {}
    for nr, n in counters.items():
        if nr < NR_SYSCALLS and n:
            name = names.get(nr, f"syscall_{nr}")
            counts[name] = counts.get(name, 0) + n
    if counters.get(STAT_UNKNOWN_NR):
        counts["unknown"] = counters[STAT_UNKNOWN_NR]
    syscalls = Syscalls(counts=dict(sorted(counts.items())))
    resources = Resources(
        max_rss_kb=max_rss or None, cpu_time_ms=round(cpu_ns / 1e6) if cpu_ns else None
    )
    return tree, fs, net, syscalls, resources, len(data.records), truncated_argv


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
