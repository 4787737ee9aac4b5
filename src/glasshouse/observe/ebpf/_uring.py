"""Fold io_uring records (``GH_EV_URING``, events.h) like their syscall twins' records.

The kernel emits one record when an op with a recorded twin is submitted (its paths or
address, laid out like the twin's FILE/NET record) and one when it completes (its result);
they are paired by the request's address. Every op is also counted by opcode in the
session's counters, which :func:`io_uring_block` turns into ``syscalls.io_uring``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from glasshouse.receipt.model import IoUring

F_DONE = 1 << 15  # GH_F_DONE (events.h)
_IOSQE_CQE_SKIP_SUCCESS = 1 << 6  # no completion when the op succeeds
_U64 = (1 << 64) - 1
_ECANCELED, _EINPROGRESS = errno.ECANCELED, errno.EINPROGRESS

#: IORING_OP_* names by opcode (linux/io_uring.h; the numbering is ABI, append-only)
OP_NAMES = (
    "nop", "readv", "writev", "fsync", "read_fixed", "write_fixed", "poll_add", "poll_remove",
    "sync_file_range", "sendmsg", "recvmsg", "timeout", "timeout_remove", "accept",
    "async_cancel", "link_timeout", "connect", "fallocate", "openat", "close", "files_update",
    "statx", "read", "write", "fadvise", "madvise", "send", "recv", "openat2", "epoll_ctl",
    "splice", "provide_buffers", "remove_buffers", "tee", "shutdown", "renameat", "unlinkat",
    "mkdirat", "symlinkat", "linkat", "msg_ring", "fsetxattr", "setxattr", "fgetxattr",
    "getxattr", "socket", "uring_cmd", "send_zc", "sendmsg_zc", "read_multishot", "waitid",
    "futex_wait", "futex_wake", "futex_waitv", "fixed_fd_install", "ftruncate", "bind",
    "listen", "recv_zc", "epoll_wait", "readv_fixed", "writev_fixed", "pipe",
)  # fmt: skip
#: the syscall whose record an op's records are folded as
TWINS = {
    "openat": "openat", "openat2": "openat2", "renameat": "renameat2", "unlinkat": "unlinkat",
    "mkdirat": "mkdirat", "symlinkat": "symlinkat", "linkat": "linkat",
    "ftruncate": "ftruncate", "connect": "connect", "bind": "bind", "listen": "listen",
    "send": "sendto", "send_zc": "sendto", "sendmsg": "sendmsg", "sendmsg_zc": "sendmsg",
}  # fmt: skip
NET_TWINS = frozenset(("connect", "bind", "listen", "sendto", "sendmsg"))
#: ops whose effect no receipt section shows: a driver's or socket's own command
#: (uring_cmd), zero-copy receive into registered memory (recv_zc)
NOT_DECODED = frozenset(("uring_cmd", "recv_zc"))
#: the last counter bucket: any opcode from here on (unknown to this build)
OTHER = 63

FileFold = Callable[[int, int, int, int, bytes, bytes, bytes, bytes, int], None]
NetFold = Callable[[int, int, int, str, int, int, bytes, bytes], None]


def op_name(op: int) -> str:
    if op >= OTHER:
        return f"op_{op}+" if op == OTHER else f"op_{op}"
    return OP_NAMES[op] if op < len(OP_NAMES) else f"op_{op}"


class UringFolder:
    """Pairs submissions with completions and folds each pair as its twin's record:
    ``fold_file(flags, ret, nr, arg1, s0, s1, s2, s3, l2)`` for file ops (``nr`` the twin
    syscall's number) and ``fold_net(tgid, flags, ret, op, fd, kind, s0, s1)`` for network
    ops. Submissions in flight are held (at most ``cap``)."""

    def __init__(
        self, syscall_numbers: dict[str, int], fold_file: FileFold, fold_net: NetFold, cap: int
    ) -> None:
        self._nr = syscall_numbers
        self._fold_file = fold_file
        self._fold_net = fold_net
        self._cap = cap
        self._inflight: dict[int, tuple] = {}
        self.unfinished = 0  # submitted, completion never seen
        self.undecoded: set[str] = set()

    def feed(self, tgid: int, flags: int, ret: int, nr: int, arg0: int, arg1: int,
             slots: tuple[bytes, bytes, bytes, bytes]) -> None:  # fmt: skip
        if flags & F_DONE:
            held = self._inflight.pop(arg1, None)
            if held is not None:
                self._fold(held, ret, arg0, slots[0])
            return
        req = ret & _U64  # the request's address: ret is signed, arg1 unsigned
        old = self._inflight.pop(req, None)  # the same request, used again
        if old is not None:
            self._unfinished(old)
        if len(self._inflight) < self._cap:
            self._inflight[req] = (tgid, flags, nr, arg0, arg1, slots)
        else:
            self.unfinished += 1

    def finish(self) -> None:
        """The run ended: what never completed is folded as a success when the ring was told
        to post no completion for one (IOSQE_CQE_SKIP_SUCCESS), else counted unfinished."""
        for held in self._inflight.values():
            self._unfinished(held)
        self._inflight.clear()

    def _unfinished(self, held: tuple) -> None:
        if (held[2] >> 8) & _IOSQE_CQE_SKIP_SUCCESS:
            self._fold(held, 0, 0, b"")
        else:
            self.unfinished += 1

    def _fold(self, held: tuple, res: int, done_kind: int, done_s0: bytes) -> None:
        tgid, flags, nr, arg0, arg1, (s0, s1, s2, s3) = held
        name = op_name(nr & 0xFF)
        twin = TWINS.get(name)
        if twin is None:
            return
        if twin in NET_TWINS:
            if twin == "connect" and res == -_ECANCELED:
                res = -_EINPROGRESS  # cancelled (the ring closed) before the handshake ended
            kind = arg1 or (done_kind & 0xFFFFFFFF)
            addr = done_s0 if twin in ("bind", "listen") else s0
            if twin == "bind" and not addr:
                return  # failed: the socket has no address to show (and nothing changed)
            self._fold_net(tgid, 0, res, twin, arg0, kind, addr, b"")
            return
        twin_nr = self._nr.get(twin)
        if twin_nr is None or not (s0 or s1):
            self.undecoded.add(name)  # no path (a fixed file's ftruncate)
            return
        self._fold_file(flags, res, twin_nr, arg1, s0, s1, s2, s3, len(s2))


def io_uring_block(
    counts: dict[int, int], undecoded: set[str], unfinished: int, setup_calls: int, observed: bool
) -> IoUring | None:
    """``syscalls.io_uring`` from the per-opcode counters (None: io_uring was not used)."""
    if not observed:
        return IoUring(observed=False) if setup_calls else None
    ops = {op_name(op): n for op, n in sorted(counts.items()) if n}
    if not ops and not setup_calls:
        return None
    not_decoded = sorted({*undecoded, *(n for n in ops if n in NOT_DECODED or n.startswith("op_"))})
    return IoUring(ops=ops, not_decoded=not_decoded, unfinished=unfinished)
