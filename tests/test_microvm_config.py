"""The microvm backend's pure parts, on any host (no KVM, no root, no VMM): the request and
prime frames, the strict reading of a result, the VM configurations (Firecracker's API
calls, QEMU's command line, the kernel command line, the snapshot key) and the result a
run's data becomes."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from glasshouse.backends.microvm import _request, images
from glasshouse.backends.microvm._handle import VMHandle
from glasshouse.backends.microvm._result import VMFacts, build_result
from glasshouse.backends.microvm._vm import GuestFailure
from glasshouse.backends.microvm.firecracker import (
    GUEST_CID,
    ROOTFS_NAME,
    VSOCK_NAME,
    boot_config,
    restore_config,
)
from glasshouse.backends.microvm.qemu import QemuVM
from glasshouse.core.execution import ExecutionSpec, Limits, utcnow
from glasshouse.guest import transport as T

# ----- frames -----------------------------------------------------------------------------


def test_request_carries_the_spec() -> None:
    spec = ExecutionSpec(
        argv=["sh", "-c", "true"],
        cwd="/abs/dir",  # a host path means nothing in the guest: its workspace is used
        files={"a.txt": b"x"},
        outputs=["o"],
        limits=Limits(memory_bytes=1 << 20, output_bytes=77, disk_bytes=3 << 20),
    )
    before = time.time_ns()
    req = _request.build_request(spec)
    after = time.time_ns()
    assert req["v"] == 1 and req["argv"] == ["sh", "-c", "true"]
    assert req["env"] is None and req["cwd"] is None
    assert req["files"] == {"a.txt": T.b64(b"x")} and req["outputs"] == ["o"]
    assert req["limits"]["memory_bytes"] == 1 << 20 and req["output_bytes"] == 77
    assert req["limits"]["disk_bytes"] == 3 << 20
    assert req["outputs_bytes"] == _request.OUTPUTS_BYTES
    assert before <= req["time_ns"] <= after
    assert len(T.unb64(req["entropy"], "entropy", 64)) == 64
    assert "events" not in req
    assert _request.build_request(ExecutionSpec(argv=["true"], cwd="sub"))["cwd"] == "sub"


def test_each_request_gets_its_own_entropy_unless_primed() -> None:
    spec = ExecutionSpec(argv=["true"], guest_events=True)
    a, b = _request.build_request(spec), _request.build_request(spec)
    assert a["entropy"] != b["entropy"]
    assert a["events"] is True and a["events_cap"] == _request.EVENTS_CAP
    primed = _request.build_request(spec, primed=True)
    assert "entropy" not in primed and "time_ns" in primed
    prime = _request.build_prime()
    assert prime["kind"] == "prime" and len(T.unb64(prime["entropy"], "e", 64)) == 64


def _result_body(**over: Any) -> bytes:
    out = {"data": T.b64(b"4\n"), "size": 2, "sha256": hashlib.sha256(b"4\n").hexdigest()}
    obj = {
        "v": 1,
        "exit_code": 0,
        "stdout": {**out, "truncated": False},
        "stderr": {"data": "", "size": 0, "sha256": hashlib.sha256(b"").hexdigest(),
                   "truncated": False},
        "outputs": {"o.txt": T.b64(b"out"), "extra": T.b64(b"not asked for")},
        "mode": "inprocess",
        "guest": {"kernel": "6.1"},
    }  # fmt: skip
    obj.update(over)
    return T.encode_frame(obj)[T.HEADER.size :]


def test_guest_result_is_read_strictly() -> None:
    spec = ExecutionSpec(argv=["true"], limits=Limits(output_bytes=1))
    with pytest.raises(GuestFailure, match=r"invalid result: stdout\.data exceeds"):
        _request.parse_guest_result(_result_body(), spec)
    with pytest.raises(GuestFailure, match="invalid result: unexpected result fields"):
        _request.parse_guest_result(_result_body(x=1), ExecutionSpec(argv=["true"]))
    data = _request.parse_guest_result(_result_body(), ExecutionSpec(argv=["true"]))
    _request.check_streams(data)
    data["stdout"]["data"] = b"5\n"  # a complete stream whose digest is not its bytes
    with pytest.raises(GuestFailure, match=r"stdout\.sha256 does not match"):
        _request.check_streams(data)
    data["stdout"]["truncated"] = True  # a truncated stream's digest cannot be checked
    _request.check_streams(data)


def test_result_limit_makes_room_for_guest_events() -> None:
    plain = _request.result_limit(ExecutionSpec(argv=["true"]))
    events = _request.result_limit(ExecutionSpec(argv=["true"], guest_events=True))
    assert events == plain + T.EVENTS_BYTES
    assert plain >= T.result_limit(Limits().output_bytes, _request.OUTPUTS_BYTES)


# ----- VM configuration -------------------------------------------------------------------


def test_firecracker_boot_config() -> None:
    calls = boot_config("/vmlinux", "console=ttyS0", 256)
    paths = [path for _, path, _ in calls]
    assert paths == ["/boot-source", "/drives/rootfs", "/machine-config", "/vsock", "/actions"]
    bodies = {path: body for _, path, body in calls}
    assert bodies["/boot-source"] == {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"}
    drive = bodies["/drives/rootfs"]
    assert drive["is_read_only"] and drive["is_root_device"]
    assert drive["path_on_host"] == ROOTFS_NAME  # relative: the VM's own directory or jail
    assert bodies["/machine-config"] == {"vcpu_count": 1, "mem_size_mib": 256, "smt": False}
    assert bodies["/vsock"] == {"guest_cid": GUEST_CID, "uds_path": VSOCK_NAME}
    assert "/vsock" not in [p for _, p, _ in boot_config("/k", "", 64, vsock=False)]
    restore = restore_config("/vm.snap", "/vm.mem")
    assert restore["resume_vm"] and not restore["enable_diff_snapshots"]
    assert restore["mem_backend"] == {"backend_type": "File", "backend_path": "/vm.mem"}


def test_qemu_command(tmp_path: Path) -> None:
    vm = QemuVM("/usr/bin/qemu", tmp_path, "/k/vmlinux", "/r/rootfs.ext4", "console=ttyS0", 128)
    cmd = vm.command()
    assert cmd[0] == "/usr/bin/qemu"
    assert cmd[cmd.index("-m") + 1] == "128"
    assert cmd[cmd.index("-kernel") + 1] == "/k/vmlinux"
    assert cmd[cmd.index("-append") + 1] == "console=ttyS0 root=/dev/vda ro"
    assert "file=/r/rootfs.ext4,format=raw,if=none,readonly=on" in cmd[cmd.index("-drive") + 1]
    assert "-no-reboot" in cmd and "-nodefaults" in cmd
    assert not any("netdev" in arg or "nic" in arg for arg in cmd)  # no network device
    assert vm.pid is None and not vm.jailed  # nothing started by building the command


def test_kernel_command_line() -> None:
    base = images.boot_args()
    assert base.startswith(images.BASE_ARGS)
    assert "gh.transport=serial" in images.boot_args(serial=True)
    assert "gh.warm=1" in images.boot_args(warm=True) and "gh." not in base
    assert (images.PVM_ARGS in base) == (images.kvm_kind() == "kvm_pvm")


def _images(rootfs_digest: str = "sha256:r") -> images.GuestImages:
    return images.GuestImages(
        kernel="/k", kernel_digest="sha256:k", rootfs="/r", rootfs_digest=rootfs_digest,
        firecracker="/fc", jailer="/jailer",
    )  # fmt: skip


def test_snapshot_key_covers_what_was_booted() -> None:
    key = images.snapshot_key(_images(), "Firecracker v1.12.1", 256)
    assert key == images.snapshot_key(_images(), "Firecracker v1.12.1", 256)
    assert len(key) == 16
    assert key != images.snapshot_key(_images(), "Firecracker v1.12.1", 512)
    assert key != images.snapshot_key(_images(), "Firecracker v1.13.0", 256)
    assert key != images.snapshot_key(_images("sha256:other"), "Firecracker v1.12.1", 256)


# ----- the run's result -------------------------------------------------------------------

_FACTS = VMFacts("firecracker", "Firecracker v1.12.1", _images(), 256)


def _handle(spec: ExecutionSpec, sinks: Any = (None, None)) -> VMHandle:
    handle = VMHandle(spec=spec, pid=4242, vmm="firecracker", source="snapshot:k-1", sinks=sinks)
    handle.started_at = utcnow()
    handle.timings["run_ms"] = 5
    return handle


def test_a_guest_answer_becomes_the_result_with_host_facts() -> None:
    spec = ExecutionSpec(argv=["true"], outputs=["o.txt"])
    seen: list[bytes] = []
    handle = _handle(spec, (seen.append, None))
    data = _request.parse_guest_result(_result_body(), spec)
    r = build_result(handle, data, None, False, utcnow(), _FACTS)
    assert (r.exit_code, r.signal, r.error) == (0, None, None)
    assert r.stdout.data == b"4\n" and seen == [b"4\n"]
    assert r.outputs == {"o.txt": b"out"}  # only what the spec asked for
    assert r.network == "disabled" and r.root_pid == 4242
    assert r.sandbox == {"vm": "firecracker", "guest_memory_mib": 256}
    d = r.details
    assert d["backend"] == "firecracker" and d["vmm"] == "Firecracker v1.12.1"
    assert d["vmm_pid"] == 4242 and d["vm_source"] == "snapshot:k-1"
    assert d["guest_kernel_digest"] == "sha256:k" and d["guest_rootfs_digest"] == "sha256:r"
    assert d["jailer"] is False and d["prewarmed"] is False
    assert d["timings_ms"] == {"run_ms": 5} and d["vmm_cgroup"] == "none"
    assert d["guest_mode"] == "inprocess" and d["guest_reported"] == {"kernel": "6.1"}
    assert "vmm_pid" in d["host_fields"] and r.guest_observation is None


def test_no_answer_timeout_and_kill_are_host_facts() -> None:
    spec = ExecutionSpec(argv=["true"], timeout=2, guest_events=True)
    timed_out = build_result(_handle(spec), None, None, True, utcnow(), _FACTS)
    assert timed_out.timed_out and timed_out.signal == 9
    assert timed_out.error == "timed out after 2s"
    assert timed_out.guest_observation is not None
    assert not timed_out.guest_observation.available
    killed = _handle(spec)
    killed.killed_reason = "server shutdown"
    r = build_result(killed, None, None, False, utcnow(), _FACTS)
    assert r.signal == 9 and r.error == "killed: server shutdown"
    silent = build_result(_handle(spec), None, "guest ended", False, utcnow(), _FACTS)
    assert silent.signal is None and silent.error == "guest ended"
    assert "guest_mode" not in silent.details


# ----- output streamed while the command runs -----------------------------------------------


def _guest_says(frames: list[bytes]) -> tuple[socket.socket, threading.Thread]:
    """The host's end of a socket pair whose other end plays a guest: it reads the request
    frame, then sends ``frames`` in order."""
    host, guest = socket.socketpair()

    def play() -> None:
        with guest:
            header = guest.recv(T.HEADER.size, socket.MSG_WAITALL)
            guest.recv(T.decode_header(header, 1 << 20), socket.MSG_WAITALL)
            for frame in frames:
                guest.sendall(frame)

    thread = threading.Thread(target=play)
    thread.start()
    return host, thread


def test_output_frames_reach_the_sinks_ahead_of_the_result() -> None:
    from glasshouse.backends.microvm._streamed import StreamedOutput
    from glasshouse.backends.microvm._vsock import exchange

    seen: list[tuple[str, bytes]] = []
    out = StreamedOutput(10, (lambda b: seen.append(("out", b)), lambda b: seen.append(("err", b))))
    result = _result_body()
    host, guest = _guest_says(
        [T.output_frame(1, b"ab"), T.output_frame(2, b"E"), T.output_frame(1, b"c"),
         T.HEADER.pack(T.MAGIC, len(result)) + result]
    )  # fmt: skip
    with host:
        body = exchange(host, T.encode_frame({"v": 1}), 1 << 20, time.monotonic() + 30, None, out)
    guest.join()
    assert body == result
    assert seen == [("out", b"ab"), ("err", b"E"), ("out", b"c")]
    assert out.sent(1) == b"abc" and out.room() == (7, 9)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (T.output_frame(1, b"x" * 11), "invalid output frame: output frame exceeds"),
        (T.output_frame(3, b"x"), "invalid output frame: an output frame's stream"),
    ],
)
def test_bad_output_frames_fail_the_run(frame: bytes, message: str) -> None:
    from glasshouse.backends.microvm._streamed import StreamedOutput
    from glasshouse.backends.microvm._vsock import exchange

    host, guest = _guest_says([frame])
    with host, pytest.raises(GuestFailure, match=message):
        exchange(host, T.encode_frame({"v": 1}), 1 << 20, time.monotonic() + 30, None,
                 StreamedOutput(10))  # fmt: skip
    guest.join()


def test_streamed_output_joins_the_result_and_survives_no_answer() -> None:
    from glasshouse.backends.microvm._streamed import StreamedOutput

    spec = ExecutionSpec(argv=["true"], timeout=2)
    seen: list[bytes] = []
    handle = _handle(spec, (seen.append, None))
    handle.streamed = StreamedOutput(spec.limits.output_bytes, handle.sinks)
    handle.streamed.feed(1, b"4")
    rest = {"data": T.b64(b"\n"), "size": 2, "sha256": hashlib.sha256(b"4\n").hexdigest(),
            "truncated": False, "sent": 1}  # fmt: skip
    data = _request.parse_guest_result(_result_body(stdout=rest), spec)
    _request.join_streams(data, handle.streamed)
    _request.check_streams(data)
    r = build_result(handle, data, None, False, utcnow(), _FACTS)
    assert r.stdout.data == b"4\n" and seen == [b"4", b"\n"]  # each byte told once
    # a result that claims more was streamed than arrived is refused
    lie = _request.parse_guest_result(
        _result_body(stdout={**rest, "sent": 0, "data": T.b64(b"4\n")}), spec
    )
    with pytest.raises(GuestFailure, match="says 0 bytes were streamed, 1 arrived"):
        _request.join_streams(lie, handle.streamed)
    # the run timed out: what streamed is its output (and its digest), nothing else
    silent = _handle(spec)
    silent.streamed = StreamedOutput(spec.limits.output_bytes)
    silent.streamed.feed(2, b"partial")
    r = build_result(silent, None, None, True, utcnow(), _FACTS)
    assert r.timed_out and r.stdout.data == b"" and r.stderr.data == b"partial"
    assert r.stderr.sha256 == hashlib.sha256(b"partial").hexdigest()
    assert not r.stderr.truncated


def test_oom_and_disk_limit_reach_the_result() -> None:
    spec = ExecutionSpec(argv=["true"], limits=Limits(disk_bytes=1 << 20))
    note = "MemoryError: the run's memory limit (64 MiB) was reached"
    body = _result_body(exit_code=1, oom=note, guest={"workspace_full": True})
    data = _request.parse_guest_result(body, spec)
    r = build_result(_handle(spec), data, None, False, utcnow(), _FACTS)
    assert r.oom_killed and r.exit_code == 1 and r.signal is None
    assert r.error == f"memory limit exceeded (oom): {note}" and r.details["oom"] == note
    assert "1048576 bytes; writes past it get ENOSPC" in r.details["disk_limit"]
    assert "full after the run" in r.details["disk_limit"]
    killed = _request.parse_guest_result(
        _result_body(exit_code=None, signal=9, oom="the guest kernel's OOM killer"), spec
    )
    r = build_result(_handle(spec), killed, None, False, utcnow(), _FACTS)
    assert r.oom_killed and r.signal == 9
    assert r.error == "killed: memory limit exceeded (oom): the guest kernel's OOM killer"
    plain = build_result(_handle(spec), _request.parse_guest_result(_result_body(), spec), None,
                         False, utcnow(), _FACTS)  # fmt: skip
    assert not plain.oom_killed and plain.error is None
    assert "full after the run" not in plain.details["disk_limit"]
