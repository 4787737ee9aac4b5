"""Network operations whose final result or path the observer must follow, against loopback
listeners this script opens itself (so it runs the same in a sandbox that has only lo):
non-blocking connects (connected, refused, timed out, still in progress at exit), a TCP
fast-open send, datagrams without connect (sendto, sendmsg, sendmmsg to two destinations, a
unix datagram), bytes through sendfile/splice/pwritev2/preadv2/recvmmsg, a netlink request
and a packet socket bound to lo. Prints one JSON line: the ports and paths it used, each
call's result, and the socket bytes it moved (tx, rx) by its own count.

    net_outcomes.py WORK
"""

import ctypes
import errno
import json
import os
import select
import socket
import struct
import sys

work = sys.argv[1]
LO = "127.0.0.1"
TCP_USER_TIMEOUT = 18
MSG_FASTOPEN = 0x20000000
out: dict[str, object] = {}
tx = rx = 0
libc = ctypes.CDLL(None, use_errno=True)


def port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def settled(sock: socket.socket, timeout: float = 30) -> int:
    """Wait until a non-blocking connect is over: its SO_ERROR (0: connected)."""
    select.select([], [sock], [], timeout)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def recv_exactly(sock: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            break
        got += len(chunk)
    return got


# -- connects that do not finish inside the syscall --------------------------------------
srv = socket.create_server((LO, 0), backlog=8)
out["listening"] = port(srv)
a = socket.socket()
a.setblocking(False)
out["nb_connect"] = a.connect_ex((LO, out["listening"]))  # EINPROGRESS
out["nb_connected"] = settled(a)  # 0

gone = socket.socket()
gone.bind((LO, 0))
out["closed"] = port(gone)
gone.close()
b = socket.socket()
b.setblocking(False)
out["nb_refused_rc"] = b.connect_ex((LO, out["closed"]))
out["nb_refused"] = settled(b)  # ECONNREFUSED

# a listener whose accept queue is full drops SYNs: one connect times out, one is left
full = socket.socket()
full.bind((LO, 0))
full.listen(0)
out["full"] = port(full)
filler = socket.create_connection((LO, out["full"]))  # takes the queue's only place
c = socket.socket()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
c.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 300)  # give up at the first retransmit
c.setblocking(False)
out["timeout_rc"] = c.connect_ex((LO, out["full"]))
out["timeout"] = settled(c)  # ETIMEDOUT
pending = socket.socket()
pending.setblocking(False)
out["pending_rc"] = pending.connect_ex((LO, out["full"]))  # still connecting at exit

# TCP fast open: a send that connects (no cookie yet: the SYN goes alone)
srv2 = socket.create_server((LO, 0))
out["fastopen"] = port(srv2)
t = socket.socket()
t.setblocking(False)
try:
    t.sendto(b"f" * 5, MSG_FASTOPEN, (LO, out["fastopen"]))
    out["fastopen_rc"] = 0
except OSError as exc:
    out["fastopen_rc"] = exc.errno  # EINPROGRESS
out["fastopen_settled"] = settled(t)

# -- datagrams without connect -------------------------------------------------------------
r1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r1.bind((LO, 0))
r2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r2.bind((LO, 0))
out["udp1"], out["udp2"] = port(r1), port(r2)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx += u.sendto(b"a" * 42, (LO, out["udp1"]))
tx += u.sendmsg([b"b" * 7], [], 0, (LO, out["udp1"]))


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(Iovec)),
        ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]  # fmt: skip


class Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]


def sockaddr_in(p: int) -> ctypes.Array:
    return ctypes.create_string_buffer(struct.pack("<H", socket.AF_INET) + struct.pack(">H", p)
                                       + socket.inet_aton(LO) + bytes(8), 16)  # fmt: skip


def mmsg(sizes: list[int], to: list[ctypes.Array | None]) -> tuple[ctypes.Array, list]:
    vec = (Mmsghdr * len(sizes))()
    keep = []
    for i, (size, addr) in enumerate(zip(sizes, to, strict=True)):
        buf = ctypes.create_string_buffer(b"m" * size, size)
        iov = Iovec(ctypes.cast(buf, ctypes.c_void_p), size)
        keep += [buf, iov]
        vec[i].hdr.iov = ctypes.pointer(iov)
        vec[i].hdr.iovlen = 1
        if addr is not None:
            vec[i].hdr.name = ctypes.cast(addr, ctypes.c_void_p)
            vec[i].hdr.namelen = 16
    return vec, keep


to1, to2 = sockaddr_in(out["udp1"]), sockaddr_in(out["udp2"])
vec, keep = mmsg([10, 20, 5], [to1, to1, to2])  # two runs: 30 B to udp1, then 5 B to udp2
out["sendmmsg"] = libc.sendmmsg(u.fileno(), vec, 3, 0)
tx += sum(vec[i].len for i in range(3))
got, keep2 = mmsg([64] * 4, [None] * 4)
out["recvmmsg"] = libc.recvmmsg(r1.fileno(), got, 4, 0, None)  # 42, 7, 10, 20
rx += sum(got[i].len for i in range(max(out["recvmmsg"], 0)))
rx += len(r2.recv(64))

dgram_path = os.path.join(work, "dgram.sock")
ux_in = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ux_in.bind(dgram_path)
ux = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
tx += ux.sendto(b"u" * 13, dgram_path)
rx += len(ux_in.recv(64))
out["dgram"] = dgram_path

# -- socket bytes through other paths --------------------------------------------------------
pair = socket.create_server((LO, 0))
out["pair"] = port(pair)
s1 = socket.create_connection((LO, out["pair"]))
s2, _ = pair.accept()
data_path = os.path.join(work, "payload")
with open(data_path, "wb") as f:
    f.write(b"p" * 1000)
with open(data_path, "rb") as f:
    n = os.sendfile(s1.fileno(), f.fileno(), 0, 1000)
tx += n
rx += recv_exactly(s2, n)
pr, pw = os.pipe()
os.write(pw, b"s" * 300)
n = os.splice(pr, s1.fileno(), 300)  # pipe -> socket
tx += n
rx += recv_exactly(s2, n)
tx += s2.send(b"r" * 200)
n = os.splice(s1.fileno(), pw, 200)  # socket -> pipe
rx += n
os.read(pr, n)
buf = ctypes.create_string_buffer(b"v" * 64, 64)
iov = Iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
n = libc.pwritev2(s1.fileno(), ctypes.byref(iov), 1, ctypes.c_long(-1), 0)
tx += max(n, 0)
n = libc.preadv2(s2.fileno(), ctypes.byref(iov), 1, ctypes.c_long(-1), 0)
rx += max(n, 0)
out["pwritev2"] = n

# -- netlink and packet sockets ------------------------------------------------------------------
nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
nl.bind((0, 0))
RTM_GETLINK, NLM_F_REQUEST_DUMP, NLMSG_DONE = 18, 0x301, 3
request = struct.pack("=LHHLL", 32, RTM_GETLINK, NLM_F_REQUEST_DUMP, 1, 0) + bytes(16)
tx += nl.sendto(request, (0, 0))
done = False
while not done:
    reply = nl.recv(65536)
    rx += len(reply)
    offset = 0
    while offset + 16 <= len(reply):
        length, kind = struct.unpack_from("=LH", reply, offset)
        done = done or kind == NLMSG_DONE
        offset += max((length + 3) & ~3, 16)
try:
    pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    pkt.bind(("lo", 0x0003))
    out["packet"] = 0
    pkt.close()
except OSError as exc:
    out["packet"] = exc.errno or errno.EPERM

out["tx"], out["rx"] = tx, rx
print(json.dumps(out), flush=True)
