"""Firecracker driver: one ``firecracker`` process per VM, configured over its API socket.

Every device path the guest state refers to (the rootfs drive, the vsock UNIX socket) is
*relative* and the VMM runs with its working directory in a private per-VM directory. That
makes a snapshot independent of where it is restored: concurrent restores of the same
snapshot files each get their own vsock socket, and the same layout works inside a jailer
chroot.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from glasshouse.core import procfs
from glasshouse.core.execution import BackendError, BackendUnavailable
from glasshouse.guest import transport as T

from .. import _owner
from . import images as _images
from ._driver import VMMDriver
from ._streamed import StreamedOutput
from ._vm import GuestFailure, VMProcess, make_run_dir, remove_run_dir
from ._vsock import exchange, readline

ROOTFS_NAME = "rootfs.ext4"
VSOCK_NAME = "v.sock"
API_NAME = "api.sock"
PID_NAME = "firecracker.pid"
OWNER_NAME = "glasshouse.owner"
GUEST_CID = 3


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


#: Where jails live: on the same filesystem as the image cache, so the (large) snapshot
#: memory file and the rootfs are hard-linked into each jail, never copied.
JAIL_BASE = Path(os.environ.get("GLASSHOUSE_JAIL_DIR", "/var/lib/glasshouse/jailer"))
#: First host uid/gid of jailed VMMs; each VM gets a random one above it.
JAIL_UID_BASE = 0x6B000000


def boot_config(
    kernel: str, boot_args: str, mem_mib: int, *, vsock: bool = True
) -> list[tuple[str, str, dict[str, Any]]]:
    """The API calls (method, path, body) that configure and start a cold-booted VM:
    ``kernel`` as the VMM names it, the rootfs read-only at its relative name, one vCPU,
    the vsock device's socket at its relative name."""
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", "/boot-source", {"kernel_image_path": kernel, "boot_args": boot_args}),
        (
            "PUT",
            "/drives/rootfs",
            {
                "drive_id": "rootfs",
                "path_on_host": ROOTFS_NAME,
                "is_root_device": True,
                "is_read_only": True,
            },
        ),
        ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mem_mib, "smt": False}),
    ]
    if vsock:
        calls.append(("PUT", "/vsock", {"guest_cid": GUEST_CID, "uds_path": VSOCK_NAME}))
    calls.append(("PUT", "/actions", {"action_type": "InstanceStart"}))
    return calls


def restore_config(snap: str, mem: str) -> dict[str, Any]:
    """The ``/snapshot/load`` body for snapshot files as the VMM names them."""
    return {
        "snapshot_path": snap,
        # File-backed guest memory is mapped MAP_PRIVATE: clones share the page cache
        # copy of the snapshot and only pay for the pages they write.
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "enable_diff_snapshots": False,
        "resume_vm": True,
    }


class FirecrackerVM(VMProcess):
    """One Firecracker process. Not thread-safe except :meth:`kill`.

    Without ``jailer`` the VMM runs as the caller with its working directory in ``run_dir``.
    With it, Firecracker's jailer starts it chrooted in a fresh jail (``run_dir`` is ignored
    and the jail's root is used), as a fresh unprivileged uid/gid, with its own /dev/kvm
    node; the files the VM needs are hard-linked into the jail before it starts.
    """

    def __init__(self, binary: str, run_dir: Path, rootfs: str, jailer: str | None = None) -> None:
        self.binary = binary
        self.jailer = jailer
        self.jail_dir: Path | None = None
        if jailer is not None:
            self.jail_id = "gh-" + secrets.token_hex(8)
            self.jail_dir = JAIL_BASE / Path(binary).name / self.jail_id
            self.run_dir = self.jail_dir / "root"
            self.run_dir.mkdir(parents=True, mode=0o755)
            self.uid = JAIL_UID_BASE + secrets.randbelow(1 << 20)
        else:
            self.run_dir = run_dir
        #: The vsock connection to the guest agent (:meth:`open_channel`).
        self.conn: socket.socket | None = None
        self.connect_attempts = 0
        # Who owns this VM: sweep_orphans() removes it once that process is gone.
        owner = (self.jail_dir if self.jail_dir is not None else self.run_dir) / OWNER_NAME
        owner.write_text(_owner.me())
        try:
            self._link(rootfs, ROOTFS_NAME)
        except BaseException:
            self.close()
            raise

    def _link(self, src: str | Path, name: str) -> None:
        if self.jailer is None:
            os.symlink(src, self.run_dir / name)
            return
        try:
            os.link(src, self.run_dir / name)
        except OSError as exc:
            raise BackendError(
                f"cannot hard-link {src} into the jail {self.run_dir} ({exc}); the jail "
                f"directory (GLASSHOUSE_JAIL_DIR) must be on the same filesystem as {src}"
            ) from None

    def path(self, src: str | Path, name: str) -> str:
        """How the VMM names host file ``src``: itself outside a jail, a link inside one."""
        if self.jailer is None:
            return str(src)
        self._link(src, name)
        return "/" + name

    def spawn(self) -> None:
        api = self.run_dir / API_NAME
        fc_args = ["--api-sock", str(api), "--level", "Error"]
        if self.jailer is None:
            cmd = [self.binary, *fc_args]
        else:
            fc_args[1] = "/" + API_NAME
            cmd = [
                self.jailer,
                "--id", self.jail_id,
                "--exec-file", self.binary,
                "--uid", str(self.uid),
                "--gid", str(self.uid),
                "--chroot-base-dir", str(JAIL_BASE),
                "--", *fc_args,
            ]  # fmt: skip
        self._start(cmd, self.run_dir)
        assert self.proc is not None
        if self.jailer is None:  # the jailer writes firecracker.pid itself
            (self.run_dir / PID_NAME).write_text(str(self.proc.pid))
        deadline = time.monotonic() + 5
        while not api.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BackendError(f"firecracker did not start: {self.console_tail()}")
            time.sleep(0.001)

    def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30
    ) -> None:
        conn = _UnixHTTPConnection(str(self.run_dir / API_NAME), timeout)
        try:
            payload = json.dumps(body) if body is not None else None
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            for attempt in range(200):
                try:
                    conn.request(method, path, body=payload, headers=headers)
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    if attempt == 199:
                        raise
                    conn.close()
                    time.sleep(0.002)
            resp = conn.getresponse()
            data = resp.read(65536)
        except OSError as exc:
            raise BackendError(f"firecracker API {method} {path}: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 300:
            fault = data.decode("utf-8", "replace")[:500]
            raise BackendError(f"firecracker API {method} {path} -> {resp.status}: {fault}")

    def boot(self, kernel: str, boot_args: str, mem_mib: int, vsock: bool = True) -> None:
        kernel = self.path(kernel, "vmlinux")
        for method, path, body in boot_config(kernel, boot_args, mem_mib, vsock=vsock):
            self.api(method, path, body)

    def wait_ready(self, timeout: float) -> None:
        assert self.console is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while not self.console.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise GuestFailure(f"guest did not become ready: {self.console_tail()}")

    def snapshot(self, snap_path: Path, mem_path: Path) -> None:
        self.api("PATCH", "/vm", {"state": "Paused"})
        self.api(
            "PUT",
            "/snapshot/create",
            {
                "snapshot_type": "Full",
                "snapshot_path": str(snap_path),
                "mem_file_path": str(mem_path),
            },
            timeout=120,
        )

    def restore(self, snap_path: Path, mem_path: Path) -> None:
        snap = self.path(snap_path, "vm.snap")
        mem = self.path(mem_path, "vm.mem")
        self.api("PUT", "/snapshot/load", restore_config(snap, mem))
        # The restored guest init waits for this line before it listens on vsock.
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(T.WAKE_LINE + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise GuestFailure(f"cannot wake the restored guest: {exc}") from None

    def connect(self, timeout: float) -> socket.socket:
        """Open the guest agent's vsock port through Firecracker's UNIX-socket bridge."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        self.connect_attempts = 0
        # A restored guest prints GH-READY once it listens: connect then, not by polling
        # (each refused attempt costs the guest an emulated vsock reset on kvm_pvm). The
        # line is only a hint from an untrusted guest; polling below stays the fallback.
        hint_until = time.monotonic() + min(timeout, 5.0)
        while self.console is not None and not self.console.ready.wait(0.02):
            if time.monotonic() > hint_until or self.proc is None or self.proc.poll() is not None:
                break
        while time.monotonic() < deadline:
            self.connect_attempts += 1
            if self.proc is None or self.proc.poll() is not None:
                break
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                sock.connect(str(self.run_dir / VSOCK_NAME))
                sock.sendall(f"CONNECT {T.VSOCK_PORT}\n".encode())
                line = readline(sock, 64)
                if line.startswith(b"OK "):
                    return sock
                last = BackendError(f"vsock handshake answered {line!r}")
            except OSError as exc:
                last = exc
            sock.close()
            time.sleep(0.005)
        raise GuestFailure(
            f"cannot reach the guest agent over vsock ({last}): {self.console_tail()}"
        )

    @property
    def jailed(self) -> bool:
        return self.jailer is not None

    def open_channel(self, timeout: float) -> int | None:
        if self.conn is not None:
            return None
        self.conn = self.connect(timeout)
        return self.connect_attempts

    def send_prime(self, frame: bytes) -> None:
        # Not waiting for an answer saves the guest a send (every guest-kernel
        # instruction is emulated on kvm_pvm): the frame is ahead of the request on the
        # same stream, so the guest handles it first.
        assert self.conn is not None
        self.conn.sendall(frame)

    def exchange(
        self,
        request: bytes,
        limit: int,
        deadline: float | None,
        events: list[list[Any]] | None = None,
        output: StreamedOutput | None = None,
    ) -> bytes:
        if self.conn is None:
            raise GuestFailure("no connection to the guest agent")
        return exchange(self.conn, request, limit, deadline, events, output)

    def disconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def close(self) -> None:
        super().close()
        if self.jail_dir is not None:
            shutil.rmtree(self.jail_dir, ignore_errors=True)


class FirecrackerDriver(VMMDriver[FirecrackerVM]):
    """Firecracker: runs restored from the warm snapshot (or cold-booted), vsock as the
    channel, under the jailer when we are root and have it."""

    name = "firecracker"
    snapshots = True

    def __init__(
        self, binary: str, images: _images.GuestImages, *, jailer: bool | None = None
    ) -> None:
        super().__init__(binary, images)
        self.jailer: str | None = None
        if jailer is not False:
            if os.geteuid() == 0 and os.access(images.jailer, os.X_OK):
                self.jailer = images.jailer
            elif jailer:
                raise BackendUnavailable("the jailer needs root and its binary")

    @staticmethod
    def locate(images: _images.GuestImages) -> str | None:
        return images.firecracker_binary()

    @staticmethod
    def sweep_orphans() -> int:
        return sweep_orphans()

    @property
    def needs_run_dir(self) -> bool:
        return self.jailer is None  # a jailed VM lives in its jail

    def new_vm(self, run_dir: Path | None, mem_mib: int) -> FirecrackerVM:
        return FirecrackerVM(self.binary, run_dir or Path("/"), self.images.rootfs, self.jailer)

    def start_guest(
        self,
        vm: FirecrackerVM,
        snapshot: _images.Snapshot | None,
        *,
        mem_mib: int,
        boot_timeout: float,
        timings: dict[str, int],
        t0: float,
    ) -> str:
        timings["spawn_ms"] = _ms(t0)
        if snapshot is not None:
            vm.restore(snapshot.state, snapshot.memory)
            timings["restore_ms"] = _ms(t0)
            return f"snapshot:{snapshot.dir.name.removeprefix('snapshot-')}"
        vm.boot(self.images.kernel, _images.boot_args(), mem_mib)
        vm.wait_ready(boot_timeout)
        timings["boot_ms"] = _ms(t0)
        return "cold"

    def build_snapshot(self, dest: _images.Snapshot, mem_mib: int, boot_timeout: float) -> None:
        run_dir = make_run_dir("snapbuild")
        vm = FirecrackerVM(self.binary, run_dir, self.images.rootfs)
        _BUILDING.add(vm)
        try:
            vm.spawn()
            vm.boot(self.images.kernel, _images.boot_args(warm=True), mem_mib)
            vm.wait_ready(boot_timeout)
            vm.snapshot(dest.state, dest.memory)
        finally:
            _BUILDING.discard(vm)
            vm.kill()
            vm.close()
            remove_run_dir(run_dir)


#: Snapshot-build VMs in progress (a background refresh may be mid-build at exit).
_BUILDING: set[FirecrackerVM] = set()


@atexit.register
def _kill_builds() -> None:
    for vm in list(_BUILDING):
        vm.kill()


def _ms(t0: float) -> int:
    return round((time.monotonic() - t0) * 1000)


def sweep_orphans(min_age_s: float = 120.0) -> int:
    """Remove VM directories and jails whose Glasshouse process died without cleaning up
    (killed, crashed): SIGKILL their VMM if it still runs orphaned (its parent is gone,
    so it was re-parented), then delete the directory. A VMM whose creator is alive is
    never touched. Returns how many directories were removed."""
    from ._vm import RUN_ROOT

    removed = 0
    now = time.time()
    candidates = list(RUN_ROOT.glob("firecracker-*")) + list(RUN_ROOT.glob("snapbuild-*"))
    candidates += [p / "root" for p in (JAIL_BASE / "firecracker").glob("gh-*")]
    for path in candidates:
        try:
            if now - path.stat().st_mtime < min_age_s:
                continue
            pid = int((path / PID_NAME).read_text().strip() or 0)
        except FileNotFoundError:
            pid = _pid_by_cwd(path)
        except (OSError, ValueError):
            continue
        owner_file = (path.parent if path.name == "root" else path) / OWNER_NAME
        try:
            owner = owner_file.read_text().strip()
        except OSError:
            owner = ""
        if owner:
            if _owner.alive(owner):
                continue  # its creator is alive and cleans up itself
        elif pid > 0 and procfs.exists(pid) and procfs.ppid(pid) != 1:
            continue  # no owner record: only an orphan re-parented to init is fair game
        if pid > 0 and procfs.exists(pid):
            if not _is_firecracker(pid):
                continue  # the pid was reused
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(path.parent if path.name == "root" else path, ignore_errors=True)
        removed += 1
    return removed


def _pid_by_cwd(path: Path) -> int:
    """A firecracker process working in ``path`` (a VM started before pid files existed)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _is_firecracker(int(proc.name)):
            try:
                if os.readlink(proc / "cwd") == str(path):
                    return int(proc.name)
            except OSError:
                continue
    return 0

    return True


def _is_firecracker(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("firecracker", "fc_vcpu 0")
    except OSError:
        return False
