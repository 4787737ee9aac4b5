"""The record decoder: the fast paths for file records fold exactly like the general one;
paths and sockaddrs decode as documented; the seed's filesystem lists get every path a
namespace call changed and nothing for files that have no path; exec records give the file
the kernel ran, every image of an exec chain, and an orphan keeps its creator as parent.
Pure user-space code."""

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


def exec_rec(pid: int, exe: bytes, argv: list[str], *, flags: int = d.F_DIR3, ppid: int = 1,
             ts: int = 1, interp: str = "/as/named") -> bytes:  # fmt: skip
    args = b"".join(a.encode() + b"\0" for a in argv)
    slots = (interp.encode() + b"\0", walk("/cwd"), args, exe)
    return ev(d.EV_EXEC, flags=d.F_DIR1 | flags, tgid=pid, ts=ts, nr=ppid, arg0=pid, slots=slots)


def test_exe_is_the_file_the_kernel_ran():
    _, (tree, *_) = folded([
        d.HDR.pack(d.EV_FORK, 0, 1, 10, 10, 1, 0, n, 10, 0, 0, 0, 0, 0) for n in (11, 12, 13)
    ] + [
        exec_rec(10, walk("/usr/bin/dash"), ["/bin/sh"], interp="/bin/sh"),
        exec_rec(11, b"memfd:payload\0", ["payload"], flags=d.F_DIR3 | d.F_PSEUDO3),
        exec_rec(12, walk("/w/tool"), ["tool"], flags=d.F_DIR3 | d.F_UNLINKED3),
        exec_rec(13, b"", ["old"], flags=0, interp="/bin/old"),  # no walk: the name given
    ])  # fmt: skip
    assert [n.exe for n in tree] == [
        "/usr/bin/dash",
        "memfd:payload",
        "/w/tool (deleted)",
        "/bin/old",
    ]


def test_an_exec_chain_keeps_every_image_in_order():
    f, (tree, *_) = folded([
        exec_rec(10, walk("/usr/bin/python3.11"), ["python3", "s.py"], ts=1),
        exec_rec(10, walk("/usr/bin/python3.11"), ["/proc/self/exe", "s.py", "1"], ts=2),
        exec_rec(10, walk("/usr/bin/dash"), ["sh", "-c", "exec say"], ts=3),
        d.HDR.pack(d.EV_FORK, 0, 1, 10, 10, 4, 0, 11, 10, 0, 0, 0, 0, 0),
        exec_rec(11, walk("/usr/bin/true"), ["true"], ts=5),  # one exec: no execs list
    ])  # fmt: skip
    root, child = tree
    assert [(i.exe, i.argv[0]) for i in root.execs] == [
        ("/usr/bin/python3.11", "python3"),
        ("/usr/bin/python3.11", "/proc/self/exe"),
        ("/usr/bin/dash", "sh"),
    ]
    assert root.exe == "/usr/bin/dash" and root.argv == ["sh", "-c", "exec say"]
    assert [i.started_at for i in root.execs] == sorted(i.started_at for i in root.execs)
    assert child.execs is None and "execs" not in child.model_dump()
    assert f.omitted() == {}


def test_exec_images_past_the_cap_are_counted():
    f, (tree, *_) = folded([exec_rec(10, walk(f"/bin/x{i}"), [f"x{i}"]) for i in range(6)], cap=3)
    assert [i.exe for i in tree[0].execs] == ["/bin/x0", "/bin/x1", "/bin/x2"]
    assert tree[0].exe == "/bin/x5"
    assert f.omitted() == {"process_tree.execs": 3}


def test_the_harness_image_is_not_the_workloads_history():
    _, (tree, *_) = folded([
        exec_rec(10, walk("/usr/bin/bwrap"), ["bwrap"], flags=d.F_DIR3 | d.F_HARNESS),
        exec_rec(10, walk("/usr/bin/dash"), ["sh"]),  # the workload starts here
    ])  # fmt: skip
    assert tree[0].exe == "/usr/bin/dash" and tree[0].execs is None


def test_an_orphan_keeps_its_creator_as_parent():
    _, (tree, *_) = folded([
        d.HDR.pack(d.EV_FORK, 0, 1, 10, 10, 1, 0, 11, 10, 0, 0, 0, 0, 0),  # root -> mid
        d.HDR.pack(d.EV_FORK, 0, 1, 11, 11, 2, 0, 12, 11, 0, 0, 0, 0, 0),  # mid -> orphan
        d.HDR.pack(d.EV_EXIT, 0, 1, 11, 11, 3, 0, 0, 0, 0, 0, 0, 0, 0),  # mid exits
        exec_rec(12, walk("/usr/bin/dash"), ["sh"], ppid=1),  # reparented to init, then exec
        exec_rec(13, walk("/usr/bin/true"), ["true"], ppid=12),  # first seen at its exec
    ])  # fmt: skip
    nodes = {n.pid: n for n in tree}
    assert nodes[12].ppid == 11 and nodes[12].exe == "/usr/bin/dash"
    assert nodes[13].ppid == 12
