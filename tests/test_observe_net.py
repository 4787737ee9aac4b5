"""Network as it happened and io_uring (issue 14, items 3 and 5): a non-blocking connect ends
up with its real outcome, datagrams are attempts with their bytes, socket bytes are counted on
every path, netlink and packet sockets are named, and io_uring operations appear like their
syscall twins (or the receipt says what it could not see). Real BPF programs under the
process and sandbox backends (loopback and the sandbox's own network namespace only), then
the decoder's rules on hand-made records."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from _support import ebpf_observer

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.core.profiling import ObserverUnavailable
from glasshouse.engine import Engine
from glasshouse.observe.ebpf import _decode as d
from glasshouse.observe.ebpf import _net, _uring
from glasshouse.receipt.model import NetworkAttempt, Syscalls

CORPUS = Path(__file__).parent / "observe_corpus"
EBPF_SRC = Path(__file__).parents[1] / "src/glasshouse/observe/ebpf"
PY = os.path.realpath(sys.executable)
LO = "127.0.0.1"


@pytest.fixture(scope="module")
def observer():
    with ebpf_observer() as obs:
        yield obs


def _backend(name: str):
    if name == "sandbox":
        from glasshouse.backends import sandbox

        ok, why = sandbox.probe()
        if not ok:
            pytest.skip(f"sandbox unavailable: {why}")
    return create(name)


def _run(observer, backend: str, argv: list[str], **kw):
    r = Engine(_backend(backend), observers=[observer], profile="host").run(
        ExecutionSpec(argv=argv, timeout=90, **kw)
    )
    return r.receipt, r.result.stdout.data.decode(), r.result


@pytest.fixture(scope="module")
def uring_binary(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler for the io_uring corpus program")
    out = tmp_path_factory.mktemp("uring") / "uring"
    subprocess.run([cc, "-O2", "-o", str(out), str(CORPUS / "uring.c")], check=True)
    return out


# -- connects, datagrams and bytes, under both backends -----------------------------------------


@pytest.mark.root
@pytest.mark.bpf
@pytest.mark.parametrize("backend", ["process", "sandbox"])
def test_connect_outcomes_datagrams_and_socket_bytes(observer, backend, tmp_path) -> None:
    script = (CORPUS / "net_outcomes.py").read_bytes()
    if backend == "process":
        work = str(tmp_path)
        argv, kw = [PY, str(CORPUS / "net_outcomes.py"), work], {"cwd": work}
    else:
        work = "/workspace"
        argv, kw = ["python3", "net_outcomes.py", work], {"files": {"net_outcomes.py": script}}
    receipt, stdout, result = _run(observer, backend, argv, **kw)
    assert result.exit_code == 0, (result.error, result.stderr.data[-2000:])
    out = json.loads(stdout.strip().splitlines()[-1])
    # the workload did what it says (each connect really was left in progress first)
    assert out["nb_connect"] == out["nb_refused_rc"] == out["timeout_rc"] == errno.EINPROGRESS
    assert out["pending_rc"] == errno.EINPROGRESS
    assert (out["nb_connected"], out["nb_refused"], out["timeout"]) == (
        0, errno.ECONNREFUSED, errno.ETIMEDOUT,
    )  # fmt: skip
    net = receipt.network
    at = f"{LO}:{{}}".format
    attempts = sorted((a.dst, a.protocol, a.result, a.family, a.bytes) for a in net.attempts)
    expected = [
        (at(out["listening"]), "tcp", "connected", "ipv4", None),  # EINPROGRESS, then connected
        (at(out["closed"]), "tcp", "refused", "ipv4", None),  # EINPROGRESS, then refused
        (at(out["full"]), "tcp", "connected", "ipv4", None),  # the blocking one that fits
        (at(out["full"]), "tcp", "timeout", "ipv4", None),  # SYNs dropped, gave up
        (at(out["full"]), "tcp", "in_progress", "ipv4", None),  # still connecting at exit
        (at(out["fastopen"]), "tcp", "connected", "ipv4", None),  # a send that connected
        (at(out["pair"]), "tcp", "connected", "ipv4", None),
        (at(out["udp1"]), "udp", "sent", "ipv4", 42 + 7 + 10 + 20),  # sendto, sendmsg, sendmmsg
        (at(out["udp2"]), "udp", "sent", "ipv4", 5),  # sendmmsg's second destination
        (out["dgram"], "unix", "sent", "unix", 13),
        ("portid 0", "netlink_route", "sent", "netlink", 32),
    ]
    assert attempts == sorted(expected)  # everything that happened, nothing invented
    root = receipt.process_tree[0].pid
    assert {a.pid for a in net.attempts} == {root}
    binds = sorted((b.addr, b.protocol, b.listening) for b in net.binds)
    expected_binds = [
        (at(out["listening"]), "tcp", True),
        (at(0), "tcp", False),  # the port it closed again, to be refused on
        (at(out["full"]), "tcp", True),
        (at(out["fastopen"]), "tcp", True),
        (at(out["pair"]), "tcp", True),
        (at(0), "udp", False),
        (at(0), "udp", False),
        (out["dgram"], "unix", False),
        ("portid 0", "netlink_route", False),
    ]
    if out["packet"] == 0:  # a packet socket needs CAP_NET_RAW (the sandbox has none)
        expected_binds.append(("ifindex 1 all", "packet_raw", False))
    assert binds == sorted(expected_binds)
    assert sorted((s.dst, s.protocol, s.bytes) for s in net.sends) == sorted(
        (a[0], a[1], a[4]) for a in expected if a[2] == "sent"
    )
    # sendfile, splice both ways, pwritev2/preadv2 and recvmmsg counted like send/recv
    assert (net.bytes_sent, net.bytes_received) == (out["tx"], out["rx"])
    assert receipt.observation.events_lost == 0
    assert receipt.syscalls.io_uring is None  # no io_uring: no block at all


# -- io_uring -------------------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.bpf
def test_io_uring_ops_appear_like_their_syscall_twins(observer, uring_binary, tmp_path) -> None:
    receipt, stdout, result = _run(observer, "process", [str(uring_binary)], cwd=str(tmp_path))
    assert result.exit_code == 0, stdout
    lines = dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)
    assert lines["rename"] == lines["link"] == lines["connect"] == lines["listen"] == "0"
    srv, closed, udp, ring_srv = (int(p) for p in lines["ports"].split())
    tx, rx = (int(kv.split("=")[1]) for kv in stdout.splitlines()[-1].split())
    p = str(tmp_path)
    fs = receipt.filesystem
    # the seed's writes and deletes: every path made or changed, every path removed
    assert sorted(fs.writes) == [
        f"{p}/{x}" for x in ("u-created.txt", "u-dir", "u-dir/u-renamed.txt", "u-hard", "u-link")
    ]
    assert sorted(fs.deletes) == [f"{p}/u-created.txt", f"{p}/u-hard"]  # renamed, unlinked
    assert fs.mkdirs == [f"{p}/u-dir"]
    assert [(r.src, r.dst) for r in fs.renames] == [
        (f"{p}/u-created.txt", f"{p}/u-dir/u-renamed.txt")
    ]
    assert sorted((ln.target, ln.path, ln.kind) for ln in fs.links) == [
        (f"{p}/u-dir/u-renamed.txt", f"{p}/u-hard", "hard"),
        ("u-dir/u-renamed.txt", f"{p}/u-link", "symbolic"),  # a target as written
    ]
    assert [(f.op, f.path, f.errno) for f in fs.failed] == [("openat", f"{p}/u-missing", "ENOENT")]
    net = receipt.network
    assert sorted((a.dst, a.protocol, a.result, a.bytes) for a in net.attempts) == sorted([
        (f"{LO}:{srv}", "tcp", "connected", None),
        (f"{LO}:{closed}", "tcp", "refused", None),
        (f"{LO}:{udp}", "udp", "sent", 77),  # a send with a destination address
    ])  # fmt: skip
    assert sorted((b.addr, b.protocol, b.listening) for b in net.binds) == sorted([
        (f"{LO}:{srv}", "tcp", True),  # bind(2) + listen(2)
        (f"{LO}:0", "tcp", False),
        (f"{LO}:0", "udp", False),
        (f"{LO}:{ring_srv}", "tcp", True),  # IORING_OP_BIND + IORING_OP_LISTEN
    ])  # fmt: skip
    assert (net.bytes_sent, net.bytes_received) == (tx, rx) == (250, 250)
    ring = receipt.syscalls.io_uring
    assert ring is not None and ring.observed and ring.not_decoded == [] and ring.unfinished == 0
    assert ring.ops == {
        "openat": 2, "write": 1, "mkdirat": 1, "renameat": 1, "symlinkat": 1, "linkat": 1,
        "unlinkat": 1, "connect": 2, "send": 2, "recv": 1, "bind": 1, "listen": 1, "nop": 3,
    }  # fmt: skip
    assert receipt.syscalls.counts["io_uring_setup"] == 1
    assert receipt.observation.events_lost == 0


@pytest.mark.root
@pytest.mark.bpf
def test_io_uring_refused_in_the_sandbox_is_noted(observer, uring_binary) -> None:
    """The sandbox's seccomp filter denies io_uring_setup: the receipt says io_uring was
    tried, with no operation, and nothing of the program's ring work appears."""
    receipt, stdout, result = _run(
        observer, "sandbox", ["sh", "-c", "chmod +x uring && exec ./uring"],
        files={"uring": uring_binary.read_bytes()},
    )  # fmt: skip
    assert result.exit_code == 3 and stdout.strip() == f"setup {errno.EPERM}", stdout
    ring = receipt.syscalls.io_uring  # the refused setup never reached sys_enter's count
    assert ring is not None and ring.ops == {} and ring.observed
    assert "io_uring_setup" not in receipt.syscalls.counts
    assert not any(p.startswith("/workspace/u-") for p in receipt.filesystem.writes)


@pytest.mark.root
@pytest.mark.bpf
def test_receipt_show_names_io_uring_and_datagrams(observer, uring_binary, tmp_path) -> None:
    env = {**os.environ, "GLASSHOUSE_OBSERVER": "ebpf"}
    cli = [sys.executable, "-m", "glasshouse.cli"]
    run = subprocess.run([*cli, "run", "-b", "process", "-q", "--", str(uring_binary)],
                         cwd=tmp_path, env=env, capture_output=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    shown = subprocess.run([*cli, "receipt", "show", "receipt.json"], cwd=tmp_path,
                           env={**env, "COLUMNS": "200"}, capture_output=True,
                           timeout=60)  # fmt: skip
    out = shown.stdout.decode()
    assert "io_uring ops: bind 1, connect 2, linkat 1, listen 1, mkdirat 1, nop 3," in out, out
    assert "connect udp" not in out and "send udp 127.0.0.1:" in out  # a datagram is a send
    assert "connect tcp 127.0.0.1:" in out and "→ refused" in out


def _build_variant(tmp_path: Path, edit) -> Path:
    """exec.o built from a copy of the sources changed by ``edit(name, text) -> text``, the
    way scripts/build-ebpf.sh builds it."""
    if not shutil.which("clang") or not shutil.which("bpftool"):
        pytest.skip("clang/bpftool not installed")
    src = tmp_path / "src"
    src.mkdir()
    for f in EBPF_SRC.iterdir():
        if f.suffix in (".c", ".h"):
            (src / f.name).write_text(edit(f.name, f.read_text()))
    with open(src / "vmlinux.h", "w") as f:
        subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                       stdout=f, check=True)  # fmt: skip
    arch = Path("/usr/include/x86_64-linux-gnu")
    obj = tmp_path / "exec.o"
    subprocess.run(
        ["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{src}", f"-I{arch}",
         "-c", str(src / "exec.bpf.c"), "-o", str(obj)],
        check=True,
    )  # fmt: skip
    return obj


@pytest.mark.root
@pytest.mark.bpf
def test_a_kernel_without_io_uring_types_still_observes_and_says_so(tmp_path, uring_binary) -> None:
    """A kernel whose BTF lacks the io_uring request type (built without io_uring, or one
    that renamed it): the io_uring programs cannot load, the rest of the observer does, and
    every receipt says io_uring operations were not observed."""
    from glasshouse.observe.ebpf import EbpfObserver

    obj = _build_variant(
        tmp_path, lambda name, text: text.replace("io_kiocb___gh", "io_kiocb_gone___gh")
    )
    try:
        observer = EbpfObserver(object_path=str(obj))
    except ObserverUnavailable as exc:
        pytest.skip(str(exc))
    try:
        assert set(observer.unobserved) == {"io_uring operations"}
        work = tmp_path / "w"
        work.mkdir()
        receipt, _, result = _run(observer, "process", [str(uring_binary)], cwd=str(work))
        obs = receipt.observation.observers[0]
    finally:
        observer.close()
    assert result.exit_code == 0
    ring = receipt.syscalls.io_uring
    assert ring is not None and ring.observed is False and ring.ops == {}
    assert "io_uring operations not observed on this kernel" in (obs.reason or "")
    # the rest is observed as usual: the syscalls' own connect, bytes and files
    assert receipt.filesystem.writes == [] and receipt.syscalls.counts["io_uring_setup"] == 1
    assert [b.protocol for b in receipt.network.binds].count("udp") == 1


MINIMAL_OLD_LAYOUT = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "events.h"
char LICENSE[] SEC("license") = "GPL";
const volatile struct { __u32 a, b, c, d; } cfg = {1, 0, 0, 0};
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, __u32);
         __type(value, struct gh_event); } scratch SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, __u32);
         __type(value, __u8); } maybe SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 64); __type(key, __u32);
         __type(value, struct gh_launch); } launch SEC(".maps");
SEC("raw_tp/sys_enter")
int gh_sys_enter(struct bpf_raw_tracepoint_args *ctx) { return 0; }
"""


@pytest.mark.root
@pytest.mark.bpf
def test_an_object_built_before_the_new_counters_is_refused(tmp_path) -> None:
    """Its counters have the old stride: read with the new one they would be wrong."""
    from glasshouse.observe.ebpf import EbpfObserver

    if not shutil.which("clang") or not shutil.which("bpftool"):
        pytest.skip("clang/bpftool not installed")
    (tmp_path / "old.bpf.c").write_text(MINIMAL_OLD_LAYOUT)
    with open(tmp_path / "vmlinux.h", "w") as f:
        subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                       stdout=f, check=True)  # fmt: skip
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", f"-I{tmp_path}", f"-I{EBPF_SRC}",
                    "-c", str(tmp_path / "old.bpf.c"), "-o", str(tmp_path / "exec.o")],
                   check=True)  # fmt: skip
    with pytest.raises(ObserverUnavailable, match=r"predates the counters for io_uring.*rebuild"):
        EbpfObserver(object_path=str(tmp_path / "exec.o"))


# -- the decoder -------------------------------------------------------------------------------

NAMES = {42: "connect", 44: "sendto", 46: "sendmsg", 307: "sendmmsg", 49: "bind", 50: "listen",
         257: "openat", 258: "mkdirat", 263: "unlinkat", 264: "renameat",
         316: "renameat2"}  # fmt: skip
V4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443) + socket.inet_aton("10.1.2.3")
V4 += bytes(8)
TCP = 1 | (socket.AF_INET << 16) | (6 << 32)
UDP = 2 | (socket.AF_INET << 16) | (17 << 32)


def _rec(etype: int, ret: int, nr: int, arg0: int = 3, arg1: int = 0, *slots: bytes,
         flags: int = 0, tgid: int = 10) -> bytes:  # fmt: skip
    s = [*slots, b"", b"", b"", b""][:4]
    head = d.HDR.pack(etype, flags, 1, tgid, tgid, 1, ret, nr, arg0, arg1, *(len(x) for x in s))
    return head + b"".join(s)


def _fold(records: list[bytes], counters: dict[int, int] | None = None, cap: int = 100):
    f = d.Folder(10, 1, NAMES, list_cap=cap)
    f.feed(records)
    return f, f.result(counters or {})


def _attempts(net) -> list[tuple]:
    return [(a.dst, a.protocol, a.result, a.bytes) for a in net.attempts]


def test_sockaddrs_of_netlink_packet_and_vsock_are_named() -> None:
    nl = struct.pack("<HHII", socket.AF_NETLINK, 0, 0, 0)
    assert _net.sockaddr(nl) == ("netlink", "portid 0")
    nl_groups = struct.pack("<HHII", socket.AF_NETLINK, 0, 4242, 0x11)
    assert _net.sockaddr(nl_groups) == ("netlink", "portid 4242 groups 0x11")
    ll = (
        struct.pack("<H", socket.AF_PACKET)
        + struct.pack(">H", 0x0806)
        + struct.pack("<iHBB", 2, 1, 0, 6)
    )
    ll += bytes.fromhex("0242ac110002") + bytes(2)
    assert _net.sockaddr(ll) == ("packet", "ifindex 2 arp 02:42:ac:11:00:02")
    assert _net.sockaddr(struct.pack("<HHII", 40, 0, 1024, 3) + bytes(4)) == ("vsock", "3:1024")
    assert _net.sockaddr(struct.pack("<H", 38) + b"hash") == ("af38", b"hash".hex())  # others: hex
    assert _net.protocol(3 | (16 << 16) | (0 << 32), "netlink") == "netlink_route"
    assert _net.protocol(3 | (16 << 16) | (9 << 32), "netlink") == "netlink_audit"
    assert _net.protocol(2 | (16 << 16) | (16 << 32), "netlink") == "netlink_generic"
    assert _net.protocol(0, "netlink") == "netlink"  # socket unknown (a fixed file)
    assert _net.protocol(3 | (17 << 16) | (0x0300 << 32), "packet") == "packet_raw"
    assert _net.protocol(1 | (2 << 16) | (262 << 32), "ipv4") == "mptcp"
    assert _net.protocol(2 | (2 << 16) | (1 << 32), "ipv4") == "icmp"  # a ping socket
    assert _net.protocol(TCP, "ipv4") == "tcp" and _net.protocol(UDP, "ipv4") == "udp"


def test_a_connect_left_in_progress_takes_its_outcome() -> None:
    sid = (0xFFFF888100AB0000).to_bytes(8, "little")
    conn = d.EV_CONN
    records = [
        _rec(d.EV_NET, -errno.EINPROGRESS, 42, 3, TCP, V4, sid),
        _rec(d.EV_NET, -errno.EALREADY, 42, 3, TCP, V4),  # polling it: not a new attempt
        _rec(conn, -errno.ECONNREFUSED, 7, 0, int.from_bytes(sid, "little")),
    ]
    _, (_, _, net, *_) = _fold(records)
    assert _attempts(net) == [("10.1.2.3:443", "tcp", "refused", None)]
    # no outcome before the run ended: in_progress, said once
    _, (_, _, net, *_) = _fold(records[:2])
    assert _attempts(net) == [("10.1.2.3:443", "tcp", "in_progress", None)]
    # a connect the kernel could not follow (no socket id): in_progress at once
    _, (_, _, net, *_) = _fold([_rec(d.EV_NET, -errno.EINPROGRESS, 42, 3, TCP, V4)])
    assert _attempts(net) == [("10.1.2.3:443", "tcp", "in_progress", None)]
    # an outcome for a socket this session never saw connect is not an attempt
    _, (_, _, net, *_) = _fold([_rec(conn, 0, 1, 0, 99)])
    assert net.attempts == []


def test_held_connects_are_bounded_by_the_cap() -> None:
    records = [
        _rec(d.EV_NET, -errno.EINPROGRESS, 42, 3, TCP, V4[:2] + struct.pack(">H", port) + V4[4:],
             port.to_bytes(8, "little"))
        for port in range(1, 11)
    ]  # fmt: skip
    f, (_, _, net, *_) = _fold(records, cap=4)
    assert len(net.attempts) == 4 + 0 and f.net.attempts.omitted == 6  # 4 held, 6 past the cap


def test_datagrams_are_attempts_with_their_bytes() -> None:
    records = [
        _rec(d.EV_NET, 42, 44, 3, UDP, V4),  # sendto
        _rec(d.EV_NET, 7, 46, 3, UDP, V4),  # sendmsg
        _rec(d.EV_NET, 30, 307, 3, UDP, V4),  # a sendmmsg run to the same address
        _rec(d.EV_NET, -errno.EPERM, 307, 3, UDP, V4),
        _rec(d.EV_NET, 5, 44, 3, TCP, V4),  # a connected TCP socket ignores the address
        _rec(d.EV_NET, -errno.EINPROGRESS, 44, 3, TCP, V4, (7).to_bytes(8, "little"),
             flags=_net.F_FASTOPEN),  # a fast-open send is a connect
        _rec(d.EV_CONN, 0, 1, 0, 7),
    ]  # fmt: skip
    _, (_, _, net, *_) = _fold(records)
    assert _attempts(net) == [
        ("10.1.2.3:443", "udp", "sent", 79),
        ("10.1.2.3:443", "udp", "send_failed:eperm", None),
        ("10.1.2.3:443", "tcp", "connected", None),
    ]
    assert [(s.dst, s.protocol, s.bytes) for s in net.sends] == [
        ("10.1.2.3:443", "udp", 79),
        ("10.1.2.3:443", "tcp", 5),
    ]


def _uring_submit(op: int, req: int, *slots: bytes, sqe_flags: int = 0, arg0: int = -100,
                  arg1: int = 0) -> bytes:  # fmt: skip
    signed = req - (1 << 64) if req >= 1 << 63 else req  # ret is signed, as the kernel writes it
    return _rec(d.EV_URING, signed, op | sqe_flags << 8, arg0, arg1, *slots,
                flags=d.F_DIR1 if len(slots) > 1 else 0)  # fmt: skip


def _uring_done(op: int, req: int, res: int, kind: int = 0, addr: bytes = b"") -> bytes:
    return _rec(d.EV_URING, res, op, kind, req, addr, flags=_uring.F_DONE)


def test_io_uring_submissions_pair_with_completions() -> None:
    req = 0xFFFF888123450000
    rename = _rec(d.EV_URING, req - (1 << 64), 35, -100, 0, b"a\0", b"w\0", b"/w/b\0",
                  flags=d.F_DIR1)  # fmt: skip
    records = [
        _uring_submit(18, req + 64, b"/w/new\0", arg1=0o101),  # openat O_CREAT|O_WRONLY
        rename,
        _uring_done(35, req, 0),
        _uring_done(18, req + 64, 5),
        _uring_submit(16, req + 128, V4, arg0=4, arg1=TCP),  # connect
        _uring_done(16, req + 128, -errno.ECANCELED),  # the ring closed first
        _uring_done(18, req + 192, 3),  # a completion with no submission seen: nothing
    ]
    _, (_, fs, net, sys_, *_) = _fold(records, {d.STAT_URING + 18: 1, d.STAT_URING + 35: 1})
    assert sorted(fs.writes) == ["/w/b", "/w/new"] and fs.deletes == ["/w/a"]  # the rename's ends
    assert [(r.src, r.dst) for r in fs.renames] == [("/w/a", "/w/b")]
    assert _attempts(net) == [("10.1.2.3:443", "tcp", "in_progress", None)]
    assert sys_.io_uring is not None and sys_.io_uring.ops == {"openat": 1, "renameat": 1}


def test_io_uring_ops_without_a_completion() -> None:
    req = 0xFFFF888123450000
    records = [
        _uring_submit(36, req, b"/w/gone\0"),  # unlinkat, never completed ...
        _uring_submit(37, req, b"/w/dir\0"),  # ... and its request reused: unfinished
        _uring_submit(36, req + 64, b"/w/skip\0", sqe_flags=1 << 6),  # CQE_SKIP_SUCCESS
    ]
    _, (_, fs, _, sys_, *_) = _fold(records, {d.STAT_URING + 36: 2, d.STAT_URING + 37: 1})
    assert fs.deletes == ["/w/skip"]  # no completion means it succeeded
    assert fs.mkdirs == [] and sys_.io_uring.unfinished == 2


def test_io_uring_block() -> None:
    assert _uring.io_uring_block({}, set(), 0, 0, True) is None  # not used: no block
    assert _uring.io_uring_block({}, set(), 0, 1, True).ops == {}  # set up, nothing submitted
    unseen = _uring.io_uring_block({18: 4}, set(), 0, 1, False)
    assert unseen.observed is False and unseen.ops == {}
    block = _uring.io_uring_block({46: 1, 22: 2, 63: 1}, {"ftruncate"}, 0, 1, True)
    assert block.ops == {"read": 2, "uring_cmd": 1, "op_63+": 1}
    assert block.not_decoded == ["ftruncate", "op_63+", "uring_cmd"]


def test_added_fields_are_left_out_of_older_shapes() -> None:
    """A v0.3.0 receipt's attempts and syscalls dump (and digest) exactly as written."""
    old = NetworkAttempt(dst="1.2.3.4:443", protocol="tcp", result="connected")
    assert "bytes" not in old.model_dump()
    assert "io_uring" not in Syscalls(counts={"read": 1}).model_dump()
    sent = NetworkAttempt(dst="1.2.3.4:53", protocol="udp", result="sent", bytes=12)
    assert sent.model_dump()["bytes"] == 12


# -- what reads the receipt: a datagram is a send, not a connection --------------------------------


def _with_datagram() -> dict:
    from trust_helpers import real_receipt

    from glasshouse.receipt.canonical import seal_data
    from glasshouse.receipt.model import Receipt

    data = json.loads(json.dumps(real_receipt(["true"])))
    data["network"]["attempts"] = [
        {"dst": "10.9.9.9:53", "protocol": "udp", "result": "sent", "family": "ipv4", "bytes": 40}
    ]
    data["network"]["sends"] = [{"dst": "10.9.9.9:53", "protocol": "udp", "bytes": 40}]
    data.pop("digest", None)
    Receipt.model_validate(seal_data(data))
    return data


def test_policy_matches_a_datagram_once_as_a_send() -> None:
    from glasshouse.policy import evaluate, parse_policy

    data = _with_datagram()
    anywhere = parse_policy("rules:\n  - {id: r, match: {network: {cidr: 10.0.0.0/8}}}\n")
    (fired,) = evaluate(anywhere, data).fired
    assert [e.at for e in fired.evidence] == ["/network/sends/0"]
    connects = parse_policy(
        "rules:\n  - {id: r, match: {network: {cidr: 10.0.0.0/8, kind: connect}}}\n"
    )
    assert evaluate(connects, data).fired == ()


def test_in_toto_exports_a_datagram_as_a_send() -> None:
    from glasshouse.receipt.intoto import runtime_trace_predicate

    log = runtime_trace_predicate(_with_datagram())["monitorLog"]["network"]
    assert [(n["eventType"], n.get("ip"), n.get("port")) for n in log] == [("send", "10.9.9.9", 53)]
