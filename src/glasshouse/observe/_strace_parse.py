"""The parser of ``strace -f -q -ttt -yy -xx`` output (:class:`Parser`), fed a line at a
time, into an :class:`~glasshouse.core.profiling.Observation`.

Per-pid state (unfinished calls, thread group, cwd) follows the live processes; each receipt
list keeps at most ``cap`` entries and counts the rest in ``omitted``. Nothing before the
root's first successful execve is counted: that is the workload starting.
"""

from __future__ import annotations

import contextlib
import re
import signal

from glasshouse.core.execution import DEFAULT_LIST_CAP
from glasshouse.core.profiling import Observation
from glasshouse.observe.fold import (
    CONNECT_RESULTS,
    NAMESPACE_CALLS,
    CappedSums,
    Dedup,
    changed_paths,
    folded_omissions,
    normalize,
)
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
    Syscalls,
)

_LINE = re.compile(r"^(\d+) +(\d+\.\d+) (.*)$")
_HEX = re.compile(r'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?')
_ANNOT = re.compile(r"^(-?\w+)<(.*)>$")


def _unhex(s: str) -> bytes:
    return bytes.fromhex(s.replace("\\x", ""))


def _split_args(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur).strip())
    return out


class Parser:
    def __init__(self, root: int, ppid: int, cwd: str, cap: int = DEFAULT_LIST_CAP) -> None:
        self.root = root
        self.cap = cap
        self.procs_omitted = 0
        self.dropped: set[int] = set()  # live processes left out of procs (counted once)
        self.started = False  # the root's first successful execve: the workload begins
        self.pending: dict[int, str] = {}
        self.tgid: dict[int, int] = {root: root}
        self.cwd: dict[int, str] = {root: cwd}
        self.procs: dict[int, ProcessNode] = {root: ProcessNode(pid=root, ppid=ppid)}
        self.counts: dict[str, int] = {}
        self.truncations = 0
        self.events = 0
        self.reads, self.writes, self.deletes = Dedup(cap), Dedup(cap), Dedup(cap)
        self.mkdirs, self.renames, self.links = Dedup(cap), Dedup(cap), Dedup(cap)
        self.failed, self.attempts, self.binds = Dedup(cap), Dedup(cap), Dedup(cap)
        self.bind_by_fd: dict[tuple[int, int], NetworkBind] = {}  # kept binds only
        self.sends = CappedSums(cap)
        self.tx = self.rx = 0
        self.now: str | None = None

    def _when(self) -> str | None:
        """The current line's strace timestamp (-ttt), as the receipt's RFC 3339."""
        import datetime as _dt

        from glasshouse.receipt.aggregate import rfc3339

        try:
            return rfc3339(_dt.datetime.fromtimestamp(float(self.now), _dt.UTC))
        except (TypeError, ValueError):
            return None

    # strings and paths
    def _str(self, arg: str) -> str:
        m = _HEX.search(arg)
        if not m:
            return ""
        if m.group(2):
            self.truncations += 1
        return _unhex(m.group(1)).decode("utf-8", "backslashreplace")

    def _base(self, arg: str, pid: int) -> str | None:
        m = _ANNOT.match(arg)
        if m:
            inner = _HEX.fullmatch('"' + m.group(2) + '"') if "\\x" in m.group(2) else None
            if inner:
                path = _unhex(inner.group(1)).decode("utf-8", "backslashreplace")
                if m.group(1) == "AT_FDCWD":
                    self.cwd[self.tgid.get(pid, pid)] = path
                return path
        return self.cwd.get(self.tgid.get(pid, pid))

    def _path(self, parg: str, pid: int, dirarg: str | None = None) -> str:
        path = self._str(parg)
        base = self._base(dirarg, pid) if dirarg else self.cwd.get(self.tgid.get(pid, pid))
        return normalize(path, base)

    def line(self, raw: str) -> None:
        m = _LINE.match(raw)
        if not m:
            return
        pid, text = int(m.group(1)), m.group(3)
        self.now = m.group(2)
        if text.startswith("+++ "):
            self._exit(pid, text)
            return
        if text.startswith("---"):
            return
        if text.endswith(" <unfinished ...>"):
            self.pending[pid] = text[: -len(" <unfinished ...>")]
            return
        if text.startswith("<... "):
            head = self.pending.pop(pid, None)
            rest = text[text.index(" resumed>") + len(" resumed>") :]
            if head is None:
                return
            text = head + rest
        paren = text.find("(")
        if paren <= 0 or " = " not in text:
            return
        name = text[:paren]
        args_s, ret_s = text[paren + 1 :].rsplit(" = ", 1)
        args_s = args_s.rstrip()
        if args_s.endswith(")"):
            args_s = args_s[:-1]
        tgid = self.tgid.get(pid, pid)
        ret_parts = ret_s.split()
        ret_txt = ret_parts[0] if ret_parts else "?"
        ret_num = ret_txt.split("<", 1)[0]
        try:
            ret = int(ret_num, 0)
        except ValueError:
            ret = 0
        err = ret_parts[1] if ret == -1 and len(ret_parts) > 1 else None
        if not self.started:
            if tgid == self.root and name == "execve" and ret == 0:
                self.started = True
            else:
                return
        self.events += 1
        self.counts[name] = self.counts.get(name, 0) + 1
        args = _split_args(args_s)
        self._syscall(pid, tgid, name, args, ret, err)

    def _exit(self, pid: int, text: str) -> None:
        # the pid is gone: forget its per-pid state (memory follows the live processes)
        self.pending.pop(pid, None)
        if self.tgid.get(pid, pid) != pid:
            self.tgid.pop(pid, None)
            return
        self.tgid.pop(pid, None)
        self.cwd.pop(pid, None)
        self.dropped.discard(pid)
        if pid not in self.procs:
            return
        node = self.procs[pid]
        m = re.match(r"\+\+\+ exited with (\d+)", text)
        if m:
            node.exit_code = int(m.group(1))
            node.ended_at = self._when()
            return
        m = re.match(r"\+\+\+ killed by (SIG\w+)", text)
        if m:
            with contextlib.suppress(KeyError):
                node.signal = int(signal.Signals[m.group(1)])
            node.ended_at = self._when()

    def _drop(self, pid: int) -> None:
        """A process past the cap: counted once while it lives."""
        if pid not in self.dropped:
            self.dropped.add(pid)
            self.procs_omitted += 1

    def _fail(self, op: str, path: str, err: str) -> None:
        self.failed.add((op, path, err), FailedFileOp(op=op, path=path, errno=err))

    def _syscall(
        self, pid: int, tgid: int, name: str, a: list[str], ret: int, err: str | None
    ) -> None:
        if name in ("clone", "clone3", "fork", "vfork") and ret > 0:
            if "CLONE_THREAD" in ",".join(a):
                self.tgid[ret] = tgid
                return
            self.tgid[ret] = ret
            self.cwd[ret] = self.cwd.get(tgid, "/")
            if ret not in self.procs and len(self.procs) >= self.cap:
                self._drop(ret)
                return
            parent = self.procs.get(tgid)
            node = ProcessNode(pid=ret, ppid=tgid, forked_only=True, started_at=self._when())
            if parent is not None:
                node.exe, node.argv = parent.exe, list(parent.argv)
                node.working_dir = self.cwd.get(tgid)
            self.procs[ret] = node
            return
        if name == "execve":
            path = self._path(a[0], pid) if a else ""
            if ret != 0:
                self._fail("execve", path, err or "?")
                return
            # a successful exec by a thread makes it the leader: strace reports the tgid
            node = self.procs.get(tgid)
            if node is None:
                if len(self.procs) >= self.cap:
                    self._drop(tgid)  # (a clone into a pid namespace names no host pid)
                    return
                node = self.procs[tgid] = ProcessNode(pid=tgid, ppid=0)
            node.exe = path
            argv = a[1] if len(a) > 1 else "[]"
            node.argv = [
                _unhex(x.group(1)).decode("utf-8", "backslashreplace") for x in _HEX.finditer(argv)
            ]
            node.argv_truncated = argv.rstrip().endswith("...") or "..." in argv
            node.working_dir = self.cwd.get(tgid)
            node.forked_only = False
            if node.started_at is None:
                node.started_at = self._when()
            return
        if name == "chdir" and ret == 0 and a:
            self.cwd[tgid] = self._path(a[0], pid)
            return
        if name == "fchdir" and ret == 0 and a:
            m = _ANNOT.match(a[0])
            if m:
                self.cwd[tgid] = self._base(a[0], pid) or self.cwd.get(tgid, "/")
            return
        self._file(pid, name, a, ret, err)
        self._net(pid, tgid, name, a, ret, err)

    def _file(self, pid: int, name: str, a: list[str], ret: int, err: str | None) -> None:
        p1 = p2 = None
        flags = ""
        if name == "open" and a:
            p1, flags = self._path(a[0], pid), a[1] if len(a) > 1 else ""
        elif name in ("openat", "openat2") and len(a) > 1:
            p1, flags = self._path(a[1], pid, a[0]), a[2] if len(a) > 2 else ""
        elif name == "creat" and a:
            p1, flags = self._path(a[0], pid), "O_WRONLY|O_CREAT|O_TRUNC"
        elif name in ("truncate", "unlink", "rmdir", "mkdir", "mknod") and a:
            p1 = self._path(a[0], pid)
        elif name in ("unlinkat", "mkdirat", "mknodat") and len(a) > 1:
            p1 = self._path(a[1], pid, a[0])
            if name == "unlinkat" and len(a) > 2 and "AT_REMOVEDIR" in a[2]:
                name = "rmdir"
        elif name in ("rename", "link") and len(a) > 1:
            p1, p2 = self._path(a[0], pid), self._path(a[1], pid)
        elif name in ("renameat", "renameat2", "linkat") and len(a) > 3:
            p1, p2 = self._path(a[1], pid, a[0]), self._path(a[3], pid, a[2])
        elif name == "symlink" and len(a) > 1:
            p1, p2 = self._str(a[0]), self._path(a[1], pid)
        elif name == "symlinkat" and len(a) > 2:
            p1, p2 = self._str(a[0]), self._path(a[2], pid, a[1])
        elif name == "ftruncate" and a:
            base = self._base(a[0], pid) if _ANNOT.match(a[0]) else None
            # a file with no name (an O_TMPFILE file, a memfd): strace shows "... (deleted)"
            if base and ret == 0 and not base.endswith(" (deleted)"):
                self.writes.add(base, base)
            return
        else:
            return
        if ret < 0:
            self._fail(name, f"{p1} -> {p2}" if p2 else p1, err or "?")
            return
        if name in ("open", "openat", "openat2", "creat"):
            if "O_PATH" in flags or "O_TMPFILE" in flags:  # a lookup; a file with no name
                return
            if "O_WRONLY" not in flags:
                self.reads.add(p1, p1)
            if any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")):
                self.writes.add(p1, p1)
        elif name == "truncate":
            self.writes.add(p1, p1)
        else:
            self._namespace(name, p1, p2 or "", a)

    def _namespace(self, name: str, p1: str, p2: str, a: list[str]) -> None:
        """A successful namespace call: the seed's writes and deletes (fold.changed_paths)
        and the richer section it belongs to."""
        exchange = name == "renameat2" and len(a) > 4 and "RENAME_EXCHANGE" in a[4]
        kind = "exchange" if exchange else NAMESPACE_CALLS.get(name)
        if kind is None:
            return
        written, deleted = changed_paths(kind, p1, p2)
        for path in written:
            self.writes.add(path, path)
        for path in deleted:
            self.deletes.add(path, path)
        if kind == "mkdir":
            self.mkdirs.add(p1, p1)
        elif kind in ("rename", "exchange"):
            rename = Rename(src=p1, dst=p2, exchange=True) if exchange else Rename(src=p1, dst=p2)
            self.renames.add((p1, p2, exchange), rename)
        elif kind == "link":
            self.links.add((p1, p2, "h"), Link(target=p1, path=p2, kind="hard"))
        elif kind == "symlink":
            self.links.add((p1, p2, "s"), Link(target=p1, path=p2, kind="symbolic"))

    def _sockaddr(self, text: str) -> tuple[str, str] | None:
        fam = re.search(r"sa_family=(AF_\w+)", text)
        if not fam:
            return None
        family = fam.group(1)
        port = re.search(r"sin6?_port=htons\((\d+)\)", text)
        if family == "AF_INET":
            addr = re.search(r'inet_addr\("([^"]*)"\)', text)
            if addr and port:
                return "ipv4", f"{_unhex(addr.group(1)).decode()}:{port.group(1)}"
        elif family == "AF_INET6":
            addr = re.search(r'inet_pton\(AF_INET6, "([^"]*)"', text)
            if addr and port:
                return "ipv6", f"[{_unhex(addr.group(1)).decode()}]:{port.group(1)}"
        elif family == "AF_UNIX":
            m = re.search(r'sun_path=(@?)"([^"]*)"', text)
            if m:
                return "unix", m.group(1) + _unhex(m.group(2)).decode("utf-8", "backslashreplace")
            return "unix", "(unnamed)"
        return None

    @staticmethod
    def _proto(fdarg: str) -> str:
        m = _ANNOT.match(fdarg)
        kind = m.group(2).split(":", 1)[0] if m else ""
        if kind.startswith("TCP"):
            return "tcp"
        if kind.startswith("UDP"):
            return "udp"
        if kind.startswith("UNIX"):
            return "unix"
        return kind.lower() or "unknown"

    def _net(self, pid: int, tgid: int, name: str, a: list[str], ret: int, err: str | None) -> None:
        if not a:
            return
        fdarg = a[0]
        is_sock = bool(re.match(r"^\d+<(TCP|UDP|UNIX|socket:|NETLINK|RAW)", fdarg))
        if name in ("read", "readv", "pread64", "recvfrom", "recvmsg") and ret > 0 and is_sock:
            self.rx += ret
        if name in ("write", "writev", "pwrite64", "sendto", "sendmsg") and ret > 0 and is_sock:
            self.tx += ret
        if name not in ("connect", "bind", "listen", "sendto", "sendmsg"):
            return
        proto = self._proto(fdarg)
        fd = int(re.match(r"^(\d+)", fdarg).group(1)) if re.match(r"^\d+", fdarg) else -1
        if name == "listen":
            b = self.bind_by_fd.get((tgid, fd))
            if b is not None and ret == 0:
                b.listening = True
            return
        addr = self._sockaddr(",".join(a[1:]))
        if addr is None:
            return
        fam, dst = addr
        if fam == "unix":
            proto = "unix"
        errno_num = _errno_num(err) if ret < 0 else 0
        if name == "connect":
            result = CONNECT_RESULTS.get(errno_num, (err or "error").lower())
            self.attempts.add(
                (dst, proto, result, tgid),
                NetworkAttempt(dst=dst, protocol=proto, result=result, family=fam, pid=tgid),
            )
        elif name == "bind" and ret == 0:
            b = NetworkBind(addr=dst, protocol=proto)
            if self.binds.add(id(b), b):
                self.bind_by_fd[(tgid, fd)] = b
        elif name in ("sendto", "sendmsg") and ret >= 0:
            self.sends.add((dst, proto), ret)

    def observation(self, observer: str, reason: str) -> Observation:
        return Observation(
            observer=observer,
            provenance="host",
            reason=reason,
            process_tree=list(self.procs.values()),
            filesystem=Filesystem(
                reads=self.reads.items,
                writes=self.writes.items,
                deletes=self.deletes.items,
                renames=self.renames.items,
                links=self.links.items,
                mkdirs=self.mkdirs.items,
                failed=self.failed.items,
            ),
            network=Network(
                attempts=self.attempts.items,
                bytes_sent=self.tx,
                bytes_received=self.rx,
                binds=self.binds.items,
                sends=[
                    NetworkSend(dst=d, protocol=p, bytes=n) for (d, p), n in self.sends.sums.items()
                ],
            ),
            syscalls=Syscalls(counts=dict(sorted(self.counts.items()))),
            events=self.events,
            truncations=self.truncations,
            omitted=self._omitted(),
        )

    def _omitted(self) -> dict[str, int]:
        return folded_omissions(self)


def _errno_num(name: str | None) -> int:
    import errno

    return getattr(errno, name or "", 0) or 0
