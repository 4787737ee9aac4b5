"""The VMM driver interface: what the microvm backend asks of a VMM.

A driver is one VMM kind (:class:`~.firecracker.FirecrackerDriver`,
:class:`~.qemu.QemuDriver`), located and checked once at the backend's ``prepare()``. It
makes each run's VM (a :class:`~._vm.VMProcess`) and brings it to a guest that waits for
its request: a cold boot, or a restore of the warm snapshot where the VMM can do that.
The VM then carries the run: its channel to the guest agent, the request/result exchange,
kill and reap. The backend never asks which VMM it has.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from glasshouse.core.execution import BackendError, BackendUnavailable

from . import images as _images
from ._vm import VMProcess

VM = TypeVar("VM", bound=VMProcess)


class VMMDriver(ABC, Generic[VM]):
    #: The backend name receipts carry ("firecracker", "qemu").
    name: ClassVar[str]
    #: Can build a warm snapshot and restore runs (and prewarmed VMs) from it.
    snapshots: ClassVar[bool] = False

    def __init__(
        self, binary: str, images: _images.GuestImages, *, jailer: bool | None = None
    ) -> None:
        """``jailer``: run the VMM under its jailer where the driver has one (None: when
        possible; True: required)."""
        self.binary = binary
        self.images = images
        self.version = vmm_version([binary, "--version"])

    @staticmethod
    @abstractmethod
    def locate(images: _images.GuestImages) -> str | None:
        """The VMM binary, or None where it is not installed."""

    @staticmethod
    def sweep_orphans() -> int:
        """Remove what VMs of dead Glasshouse processes left behind; how many."""
        return 0

    @property
    def needs_run_dir(self) -> bool:
        """Does a VM need a private run directory from the backend (else it makes its own)?"""
        return True

    @abstractmethod
    def new_vm(self, run_dir: Path | None, mem_mib: int) -> VM:
        """A VM not yet spawned (``VMProcess.spawn`` starts its VMM)."""

    @abstractmethod
    def start_guest(
        self,
        vm: VM,
        snapshot: _images.Snapshot | None,
        *,
        mem_mib: int,
        boot_timeout: float,
        timings: dict[str, int],
        t0: float,
    ) -> str:
        """Bring the spawned ``vm`` to a guest waiting for its request, restored from
        ``snapshot`` or cold-booted when it is None; record the steps' times since ``t0``
        (monotonic) in ``timings``. Returns the VM's source: ``snapshot:<key>`` or
        ``cold``."""

    def build_snapshot(self, dest: _images.Snapshot, mem_mib: int, boot_timeout: float) -> None:
        """Cold-boot a warm guest and write its snapshot to ``dest``'s files."""
        raise BackendError(f"{self.name} cannot build snapshots")


_VERSIONS: dict[str, str] = {}


def vmm_version(cmd: list[str]) -> str:
    """The first line ``cmd`` prints (cached per binary)."""
    key = cmd[0]
    if key not in _VERSIONS:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendUnavailable(f"{cmd[0]} does not run: {exc}") from None
        _VERSIONS[key] = (out.strip().splitlines() or ["unknown"])[0]
    return _VERSIONS[key]
