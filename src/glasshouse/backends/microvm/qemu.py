"""QEMU ``-M microvm`` driver: a cold boot per run, the serial console as transport.

QEMU has no snapshot-per-run path here (that is Firecracker's job) and this host has no
``/dev/vhost-vsock``, so requests and results travel over ttyS0 as ``GHFRAME`` lines
(glasshouse.guest.transport). ``-cpu host,-arch-capabilities`` is needed on kvm_pvm;
``-device i8042`` with ``reboot=k`` and ``-no-reboot`` makes the guest's reboot end QEMU.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from glasshouse.core.execution import BackendError
from glasshouse.guest import transport as T

from . import images as _images
from ._driver import VMMDriver
from ._streamed import StreamedOutput
from ._vm import GuestFailure, VMProcess


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


class QemuVM(VMProcess):
    def __init__(
        self, binary: str, run_dir: Path, kernel: str, rootfs: str, boot_args: str, mem_mib: int
    ) -> None:
        self.binary = binary
        self.run_dir = run_dir
        self.kernel = kernel
        self.rootfs = rootfs
        self.boot_args = boot_args
        self.mem_mib = mem_mib

    def command(self) -> list[str]:
        boot_args, mem_mib = self.boot_args, self.mem_mib
        return [
            self.binary,
            "-M", "microvm,acpi=off",
            "-enable-kvm",
            "-cpu", "host,-arch-capabilities",
            "-m", str(mem_mib),
            "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic",
            "-serial", "stdio",
            "-no-reboot",
            "-device", "i8042",
            "-kernel", self.kernel,
            "-append", boot_args + " root=/dev/vda ro",
            "-drive", f"id=root,file={self.rootfs},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root",
        ]  # fmt: skip

    def spawn(self) -> None:
        self._start(self.command(), self.run_dir)

    def wait_ready(self, deadline: float | None, boot_timeout: float) -> None:
        assert self.console is not None and self.proc is not None
        limit = time.monotonic() + boot_timeout
        if deadline is not None:
            limit = min(limit, deadline)
        while not self.console.ready.wait(0.2):
            if self.proc.poll() is not None:
                raise GuestFailure(f"guest ended before it was ready: {self.console_tail()}")
            if time.monotonic() > limit:
                raise TimeoutError

    def exchange(
        self,
        request: bytes,
        limit: int,
        deadline: float | None,
        events: list[list[Any]] | None = None,
        output: StreamedOutput | None = None,
    ) -> bytes:
        """Over the serial console: the guest's events and output come with its result, never
        ahead."""
        assert self.console is not None and self.proc is not None and self.proc.stdin is not None
        self.console.expect_frame(limit)
        try:
            self.proc.stdin.write(T.serial_line(request))
            self.proc.stdin.flush()
        except OSError as exc:
            raise GuestFailure(f"cannot write the request to the guest console: {exc}") from None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.console.frame_event.wait(timeout):
            raise TimeoutError
        line = self.console.frame_line
        if line is None:
            raise GuestFailure(f"guest ended without sending a result: {self.console_tail()}")
        try:
            frame = T.unb64(line.decode("ascii", "replace"), "result frame", limit + T.HEADER.size)
            length = T.decode_header(frame[: T.HEADER.size], limit)
        except T.ProtocolError as exc:
            raise GuestFailure(f"guest sent an invalid result: {exc}") from None
        body = frame[T.HEADER.size :]
        if len(body) != length:
            raise GuestFailure("guest sent a truncated result frame")
        return body


class QemuDriver(VMMDriver[QemuVM]):
    """QEMU ``-M microvm``: a cold boot per run, the serial console as the channel."""

    name = "qemu"

    @staticmethod
    def locate(images: _images.GuestImages) -> str | None:
        return qemu_binary()

    def new_vm(self, run_dir: Path | None, mem_mib: int) -> QemuVM:
        assert run_dir is not None
        args = _images.boot_args(serial=True)
        return QemuVM(self.binary, run_dir, self.images.kernel, self.images.rootfs, args, mem_mib)

    def start_guest(
        self,
        vm: QemuVM,
        snapshot: _images.Snapshot | None,
        *,
        mem_mib: int,
        boot_timeout: float,
        timings: dict[str, int],
        t0: float,
    ) -> str:
        if snapshot is not None:
            raise BackendError("qemu cannot restore snapshots")
        try:
            vm.wait_ready(None, boot_timeout)
        except TimeoutError:
            raise GuestFailure(f"guest did not boot within {boot_timeout:g}s") from None
        timings["boot_ms"] = round((time.monotonic() - t0) * 1000)
        return "cold"
