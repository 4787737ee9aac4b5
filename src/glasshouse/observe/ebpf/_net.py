"""Fold the network records (``GH_EV_NET``, ``GH_EV_CONN``) into the receipt's ``network``
section: connection attempts with their final result, datagrams as attempts with their
bytes, binds, and readable names for every address family the kernel reports."""

from __future__ import annotations

import errno as _errno
import ipaddress

from glasshouse.core.execution import DEFAULT_LIST_CAP
from glasshouse.observe.fold import CONNECT_RESULTS, CappedSums, Dedup
from glasshouse.receipt.model import Network, NetworkAttempt, NetworkBind, NetworkSend

F_FASTOPEN = 1 << 14  # GH_F_FASTOPEN (events.h)

_AF_UNSPEC, _AF_UNIX, _AF_INET, _AF_INET6 = 0, 1, 2, 10
_AF_NETLINK, _AF_PACKET, _AF_VSOCK = 16, 17, 40
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 5: "seqpacket"}
#: NETLINK_* protocols (linux/netlink.h)
_NETLINK = {
    0: "route", 2: "usersock", 4: "sock_diag", 5: "nflog", 6: "xfrm", 7: "selinux",
    8: "iscsi", 9: "audit", 10: "fib_lookup", 11: "connector", 12: "netfilter",
    13: "ip6_fw", 14: "dnrtmsg", 15: "kobject_uevent", 16: "generic", 18: "scsitransport",
    19: "ecryptfs", 20: "rdma", 21: "crypto", 22: "smc",
}  # fmt: skip
#: ETH_P_* (linux/if_ether.h) seen on packet sockets
_ETHERTYPES = {0x0003: "all", 0x0800: "ipv4", 0x0806: "arp", 0x86DD: "ipv6", 0x8100: "vlan"}
#: IPPROTO_* that name a protocol other than the socket type's default
_IP_PROTOCOLS = {1: "icmp", 58: "icmpv6", 132: "sctp", 136: "udplite", 262: "mptcp"}
_SENDS = frozenset(("sendto", "sendmsg", "sendmmsg"))
_STREAMS = frozenset(("tcp", "mptcp"))


def _errname(ret: int) -> str:
    return _errno.errorcode.get(-ret, f"E{-ret}")


def connect_result(ret: int) -> str:
    """A connect's result (0 or -errno) as the receipt names it."""
    return CONNECT_RESULTS.get(-ret if ret < 0 else 0, _errname(ret).lower())


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
    if family == _AF_NETLINK and len(raw) >= 12:
        # struct sockaddr_nl: the peer's port id (0: the kernel) and multicast groups
        portid = int.from_bytes(raw[4:8], "little")
        groups = int.from_bytes(raw[8:12], "little")
        return "netlink", f"portid {portid}" + (f" groups {groups:#x}" if groups else "")
    if family == _AF_PACKET and len(raw) >= 12:
        # struct sockaddr_ll: the frames' protocol (ethertype), the interface, its address
        ethertype = int.from_bytes(raw[2:4], "big")
        ifindex = int.from_bytes(raw[4:8], "little", signed=True)
        halen = min(raw[11], 8)
        text = f"ifindex {ifindex} {_ETHERTYPES.get(ethertype, f'{ethertype:#06x}')}"
        if halen and len(raw) >= 12 + halen:
            text += " " + raw[12 : 12 + halen].hex(":")
        return "packet", text
    if family == _AF_VSOCK and len(raw) >= 12:
        port = int.from_bytes(raw[4:8], "little")
        cid = int.from_bytes(raw[8:12], "little")
        return "vsock", f"{cid}:{port}"
    if family == _AF_UNSPEC:
        return None
    return f"af{family}", raw[2:].hex()


def protocol(kind: int, family_name: str) -> str:
    """The protocol of a socket (kind = type | family << 16 | protocol << 32, from the
    kernel; 0 when unknown) whose address is of ``family_name``."""
    sock_type, sock_family, proto = kind & 0xFFFF, (kind >> 16) & 0xFFFF, (kind >> 32) & 0xFFFF
    if sock_family == _AF_UNIX or family_name == "unix":
        return "unix"
    if sock_family == _AF_NETLINK or family_name == "netlink":
        if not kind:
            return "netlink"
        return "netlink_" + _NETLINK.get(proto, str(proto))
    if sock_family == _AF_PACKET or family_name == "packet":
        return "packet_" + _SOCK_TYPES.get(sock_type, str(sock_type)) if kind else "packet"
    if family_name == "vsock":
        return "vsock"
    if kind == 0:
        return "unknown"
    if proto in _IP_PROTOCOLS and sock_type != 3:
        return _IP_PROTOCOLS[proto]
    if sock_type == 1:
        return "tcp"
    if sock_type == 2:
        return "udp"
    return _SOCK_TYPES.get(sock_type, f"type{sock_type}")


class NetFolder:
    """One session's network records, folded as they arrive; ``network`` builds the section.

    A connect left in progress (its record carries the socket's id) is held until its
    ``GH_EV_CONN`` outcome arrives; one still held when the run ends is ``in_progress``."""

    def __init__(self, cap: int = DEFAULT_LIST_CAP) -> None:
        self.cap = cap
        self.attempts, self.binds = Dedup(cap), Dedup(cap)
        self.sends = CappedSums(cap)
        self.bind_by_fd: dict[tuple[int, int], NetworkBind] = {}  # kept binds only
        self._sent: dict[tuple[str, str, str, int], NetworkAttempt] = {}  # datagram attempts
        self._pending: dict[int, tuple[str, str, str, int]] = {}  # socket id -> the connect

    def record(
        self, tgid: int, flags: int, ret: int, op: str, fd: int, kind: int, s0: bytes, s1: bytes
    ) -> None:
        """A connect/bind/listen/send* record (or an io_uring twin's, folded the same way)."""
        addr = sockaddr(s0)
        if op == "listen":
            self._listen(tgid, ret, fd, kind, addr)
            return
        if addr is None:
            return
        fam, dst = addr
        proto = protocol(kind, fam)
        if op == "connect" or (op in _SENDS and flags & F_FASTOPEN and proto in _STREAMS):
            self._connect(tgid, ret, dst, proto, fam, s1)
        elif op == "bind":
            if ret < 0:
                self._attempt(dst, proto, "bind_failed:" + _errname(ret).lower(), fam, tgid)
                return
            b = NetworkBind(addr=dst, protocol=proto)
            if self.binds.add(id(b), b):
                self.bind_by_fd[(tgid, fd)] = b
            else:
                self.bind_by_fd.pop((tgid, fd), None)  # the fd's earlier bind, if any
        elif op in _SENDS:
            if ret < 0:
                self._attempt(dst, proto, "send_failed:" + _errname(ret).lower(), fam, tgid)
                return
            self.sends.add((dst, proto), ret)
            if proto not in _STREAMS:  # a datagram: the address is where it went
                self._datagram(dst, proto, fam, tgid, ret)

    def outcome(self, conn_id: int, ret: int) -> None:
        """A connection left in progress reached its end (``GH_EV_CONN``)."""
        held = self._pending.pop(conn_id, None)
        if held is not None:
            dst, proto, fam, pid = held
            self._attempt(dst, proto, connect_result(ret), fam, pid)

    def network(self, bytes_sent: int, bytes_received: int) -> Network:
        for dst, proto, fam, pid in self._pending.values():  # no outcome before the run ended
            self._attempt(dst, proto, "in_progress", fam, pid)
        self._pending.clear()
        return Network(
            attempts=self.attempts.items,
            bytes_sent=bytes_sent,
            bytes_received=bytes_received,
            binds=self.binds.items,
            sends=[
                NetworkSend(dst=d, protocol=pr, bytes=n) for (d, pr), n in self.sends.sums.items()
            ],
        )

    def _connect(self, tgid: int, ret: int, dst: str, proto: str, fam: str, s1: bytes) -> None:
        if ret == -_errno.EALREADY:
            return  # polling a connect already recorded (and followed) on this socket
        if ret == -_errno.EINPROGRESS and len(s1) == 8 and len(self._pending) < self.cap:
            self._pending[int.from_bytes(s1, "little")] = (dst, proto, fam, tgid)
            return
        self._attempt(dst, proto, connect_result(ret), fam, tgid)

    def _listen(
        self, tgid: int, ret: int, fd: int, kind: int, addr: tuple[str, str] | None
    ) -> None:
        bound = self.bind_by_fd.get((tgid, fd))
        if bound is not None and ret == 0:
            bound.listening = True
            if addr and addr[0] != "unix":
                bound.addr = addr[1]
        elif addr is not None and ret == 0:
            b = NetworkBind(addr=addr[1], protocol=protocol(kind, addr[0]), listening=True)
            self.binds.add(id(b), b)

    def _datagram(self, dst: str, proto: str, fam: str, pid: int, n: int) -> None:
        key = (dst, proto, fam, pid)
        att = self._sent.get(key)
        if att is None:
            att = NetworkAttempt(dst=dst, protocol=proto, result="sent", family=fam, pid=pid,
                                 bytes=0)  # fmt: skip
            if not self.attempts.add((dst, proto, "sent", fam, pid), att):
                return  # past the cap (counted)
            self._sent[key] = att
        att.bytes = (att.bytes or 0) + n

    def _attempt(self, dst: str, proto: str, result: str, fam: str, pid: int) -> None:
        self.attempts.add(
            (dst, proto, result, fam, pid),
            NetworkAttempt(dst=dst, protocol=proto, result=result, family=fam, pid=pid),
        )
