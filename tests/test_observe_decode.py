"""The record decoder: the fast paths for file records fold exactly like the general one;
paths and sockaddrs decode as documented; the seed's filesystem lists get every path a
namespace call changed and nothing for files that have no path. Pure user-space code."""

from __future__ import annotations

import errno
import socket
import struct

from glasshouse.observe.ebpf import _decode as d

NAMES = {
    2: "open",
    257: "openat",
    87: "unlink",
    83: "mkdir",
    77: "ftruncate",
    259: "mknodat",
    263: "unlinkat",
    265: "linkat",
    266: "symlinkat",
    82: "rename",
    316: "renameat2",
    59: "execve",
}
O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_PATH = 0, 1, 2, 0o100, 0o1000, 0o10000000
O_TMPFILE = 0o20000000 | 0o200000


def rec(nr: int, ret: int, flags: int, path: str) -> bytes:
    raw = path.encode() + b"\0"
    return d.HDR.pack(d.EV_FILE, 0, 1, 10, 10, 1, ret, nr, -100, flags, len(raw), 0, 0, 0) + raw


def walk(path: str) -> bytes:
    """A path as the kernel walks it: components leaf first, each NUL-terminated."""
    return b"".join(p.encode() + b"\0" for p in reversed(path.strip("/").split("/")) if p)


def ev(etype: int, *, flags: int = 0, tgid: int = 10, ts: int = 1, ret: int = 0, nr: int = 0,
       arg0: int = 0, arg1: int = 0, slots: tuple[bytes, ...] = ()) -> bytes:  # fmt: skip
    slots = (*slots, b"", b"", b"", b"")[:4]
    head = d.HDR.pack(etype, flags, 1, tgid, tgid, ts, ret, nr, arg0, arg1, *map(len, slots))
    return head + b"".join(slots)


def opened(nr: int, flags: int, path: str, extra: int = 0) -> bytes:
    """A successful open as the kernel reports it: the opened file walked from its fd."""
    return ev(d.EV_FILE, flags=d.F_DIR1 | extra, ret=3, nr=nr, arg1=flags, slots=(b"", walk(path)))


def named(nr: int, p1: str, p2: str = "", flags: int = 0, ret: int = 0) -> bytes:
    """A file call with absolute paths as given (slot 0, and slot 2 for a second path)."""
    s0 = p1.encode() + b"\0"
    s2 = p2.encode() + b"\0" if p2 else b""
    return ev(d.EV_FILE, ret=ret, nr=nr, arg1=flags, slots=(s0, b"", s2))


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
    opened(257, O_RDONLY, "/b/read"),  # the kernel's shape for a successful open
    opened(257, O_WRONLY | O_CREAT, "/b/write"),
    opened(257, O_RDWR, "/b/anon", d.F_UNLINKED1),  # a nameless file: general path, nothing
    opened(77, 0, "/b/truncated"),  # ftruncate has the same shape: the general path
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
    assert fs.reads == ["/a/read", "/a/both", "/a/trunc-rdonly", "/b/read"]
    assert fs.writes == [
        "/a/write",
        "/a/both",
        "/a/trunc-rdonly",
        "/a/made",
        "/b/write",
        "/b/truncated",
    ]
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


def folded(records, cap: int = 100):
    f = d.Folder(10, 1, NAMES, list_cap=cap)
    f.feed(records)
    return f, f.result({})


def test_namespace_calls_fill_writes_and_deletes():
    _, (_, fs, *_) = folded([
        named(83, "/w/dir"),  # mkdir
        named(259, "/w/fifo", flags=0o10644),  # mknodat S_IFIFO
        ev(d.EV_FILE, nr=266, slots=(b"target\0", b"", b"/w/sym\0")),  # symlinkat
        named(265, "/w/a", "/w/hard"),  # linkat
        named(82, "/w/new", "/w/old"),  # rename over an existing file
        named(316, "/w/left", "/w/right", flags=2),  # renameat2 RENAME_EXCHANGE
        named(263, "/w/gone"),  # unlinkat
        named(263, "/w/dir2", flags=0x200),  # unlinkat AT_REMOVEDIR
        named(82, "/w/x", "/w/y", ret=-2),  # a failed rename changes nothing
    ])  # fmt: skip
    assert fs.writes == ["/w/dir", "/w/fifo", "/w/sym", "/w/hard", "/w/old", "/w/left", "/w/right"]
    assert fs.deletes == ["/w/new", "/w/gone", "/w/dir2"]
    assert fs.mkdirs == ["/w/dir"]
    assert [r.model_dump() for r in fs.renames] == [
        {"src": "/w/new", "dst": "/w/old"},
        {"src": "/w/left", "dst": "/w/right", "exchange": True},
    ]
    assert {(ln.target, ln.path, ln.kind) for ln in fs.links} == {
        ("target", "/w/sym", "symbolic"),
        ("/w/a", "/w/hard", "hard"),
    }
    assert [(f.op, f.path) for f in fs.failed] == [("rename", "/w/x -> /w/y")]


def test_files_without_a_path_are_in_no_seed_list():
    tmpfile = ev(d.EV_FILE, flags=d.F_DIR1 | d.F_UNLINKED1, nr=265, arg0=3, arg1=0x1000,
                 slots=(b"\0", walk("/w/#123"), b"/w/named\0"))  # fmt: skip
    _, (_, fs, *_) = folded([
        opened(77, 0, "/w/#123", d.F_UNLINKED1),  # ftruncate of an O_TMPFILE file
        ev(d.EV_FILE, flags=d.F_DIR1 | d.F_PSEUDO1, nr=77, slots=(b"", b"memfd:m\0")),  # a memfd
        opened(257, O_RDWR, "/w/#123", d.F_UNLINKED1),  # /proc/self/fd/N of it reopened
        rec(257, 3, O_TMPFILE | O_WRONLY, "/w"),  # the O_TMPFILE open itself
        tmpfile,  # linkat(fd, "", AT_EMPTY_PATH): now it has a name
    ])  # fmt: skip
    assert fs.writes == ["/w/named"] and fs.reads == []
    assert [(ln.target, ln.path) for ln in fs.links] == [("/w/#123 (deleted)", "/w/named")]
