"""The record decoder: the fast path for single-path file records folds exactly like the
general one, and paths/sockaddrs decode as documented. Pure user-space code."""

from __future__ import annotations

import errno
import socket
import struct

from glasshouse.observe.ebpf import _decode as d

NAMES = {2: "open", 257: "openat", 87: "unlink", 83: "mkdir"}
O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_PATH = 0, 1, 2, 0o100, 0o1000, 0o10000000


def rec(nr: int, ret: int, flags: int, path: str) -> bytes:
    raw = path.encode() + b"\0"
    return d.HDR.pack(d.EV_FILE, 0, 1, 10, 10, 1, ret, nr, -100, flags, len(raw), 0, 0, 0) + raw


RECORDS = [
    rec(257, 3, O_RDONLY, "/a/read"),
    rec(257, 3, O_WRONLY | O_CREAT | O_TRUNC, "/a/write"),
    rec(2, 4, O_RDWR, "/a/both"),
    rec(257, 5, O_PATH, "/a/lookup-only"),
    rec(257, 6, O_RDONLY | O_TRUNC, "/a/trunc-rdonly"),
    rec(257, -errno.ENOENT, O_RDONLY, "/a/missing"),
    rec(87, -errno.EACCES, 0, "/a/denied"),
    rec(87, 0, 0, "/a/deleted"),  # not an open: the general path
    rec(83, 0, 0, "/a/./dir/../made"),  # not normalized: the general path
    rec(257, 3, O_RDONLY, "/a/read"),  # a duplicate
]


def fold(fast: bool):
    f = d.Folder(10, 1, NAMES)
    if fast:
        f.feed(RECORDS)
    else:
        for r in RECORDS:
            f.records += 1
            f._one(r)
    return f.result({})


def test_fast_path_matches_general_path():
    assert fold(True)[1] == fold(False)[1]
    fs = fold(True)[1]
    assert fs.reads == ["/a/read", "/a/both", "/a/trunc-rdonly"]
    assert fs.writes == ["/a/write", "/a/both", "/a/trunc-rdonly"]
    assert {(f.op, f.path, f.errno) for f in fs.failed} == {
        ("openat", "/a/missing", "ENOENT"),
        ("unlink", "/a/denied", "EACCES"),
    }
    assert fs.deletes == ["/a/deleted"] and fs.mkdirs == ["/a/made"]


def test_normalize_and_dirs():
    assert d.normalize("x/../y", "/base") == "/base/y"
    assert d.normalize("", "/cwd") == "/cwd"
    assert d.normalize("//etc//passwd", None) == "/etc/passwd"
    assert d.normalize("/already/fine", None) == "/already/fine"
    assert d._dir(b"c\0b\0a\0") == "/a/b/c" and d._dir(b"") == "/"


def test_sockaddrs():
    v4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443) + socket.inet_aton("1.2.3.4")
    assert d.sockaddr(v4 + bytes(8)) == ("ipv4", "1.2.3.4:443")
    v6 = (
        struct.pack("<H", socket.AF_INET6)
        + struct.pack(">H", 80)
        + bytes(4)
        + socket.inet_pton(socket.AF_INET6, "::1")
    )
    assert d.sockaddr(v6) == ("ipv6", "[::1]:80")
    assert d.sockaddr(struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0") == (
        "unix",
        "/run/x.sock",
    )
    assert d.sockaddr(struct.pack("<H", socket.AF_UNIX) + b"\0abstract") == ("unix", "@abstract")
    assert d.sockaddr(struct.pack("<H", 0)) is None
    assert (
        d.protocol(1 | (2 << 16), "ipv4") == "tcp" and d.protocol(2 | (10 << 16), "ipv6") == "udp"
    )
    assert d.protocol(1 | (1 << 16), "unix") == "unix"
