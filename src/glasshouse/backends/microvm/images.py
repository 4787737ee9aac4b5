"""Guest artifacts: the kernel, rootfs and Firecracker binaries built by
``scripts/build-guest.sh``, the kernel command line for this host, and the warm snapshot.

Everything is content-addressed under ``/var/cache/glasshouse/guest`` (``GLASSHOUSE_CACHE``
overrides the root), so a changed kernel, rootfs, VMM or command line gets a new snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from glasshouse.core.execution import BackendUnavailable

CACHE = Path(os.environ.get("GLASSHOUSE_CACHE", "/var/cache/glasshouse"))
GUEST_DIR = CACHE / "guest"
MANIFEST = GUEST_DIR / "manifest.json"
#: Bump when the snapshot recipe (boot flow, guest memory, devices) changes.
SNAPSHOT_RECIPE = 3

BASE_ARGS = "console=ttyS0 reboot=k panic=-1 quiet rootfstype=ext4 init=/init no-kvmapf"
#: Needed on kvm_pvm, whose instruction emulator lacks XSAVE, CMPXCHG16B, CLAC/STAC, POPCNT
#: and makes ERMS string ops slow (docs/microvm.md). Harmless but unneeded on hardware KVM.
PVM_ARGS = "noxsave nofsgsbase clearcpuid=308,515,516,141,151,297,580 rodata=off"


@dataclass(frozen=True)
class GuestImages:
    kernel: str
    kernel_digest: str
    rootfs: str
    rootfs_digest: str
    firecracker: str
    jailer: str

    @classmethod
    def load(cls) -> GuestImages:
        try:
            data = json.loads(MANIFEST.read_text())
            images = cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                f"guest images are not built ({MANIFEST}: {exc}); run scripts/build-guest.sh"
            ) from None
        for path in (images.kernel, images.rootfs):
            if not os.path.isfile(path):
                raise BackendUnavailable(
                    f"guest image {path} is missing; run scripts/build-guest.sh"
                )
        return images

    def firecracker_binary(self) -> str | None:
        found = shutil.which("firecracker")
        if found:
            return found
        return self.firecracker if os.access(self.firecracker, os.X_OK) else None


def kvm_kind() -> str | None:
    """kvm_intel, kvm_amd, kvm_pvm, kvm (unknown provider) or None (no /dev/kvm)."""
    if not os.path.exists("/dev/kvm"):
        return None
    for kind in ("kvm_intel", "kvm_amd", "kvm_pvm"):
        if os.path.exists(f"/sys/module/{kind}"):
            return kind
    return "kvm"


def boot_args(*, serial: bool = False, warm: bool = False) -> str:
    args = BASE_ARGS
    if kvm_kind() == "kvm_pvm":
        args += " " + PVM_ARGS
    if serial:
        args += " gh.transport=serial"
    if warm:
        args += " gh.warm=1"
    return args


def snapshot_key(images: GuestImages, vmm_version: str, mem_mib: int) -> str:
    text = json.dumps(
        [
            SNAPSHOT_RECIPE,
            images.kernel_digest,
            images.rootfs_digest,
            vmm_version,
            boot_args(),
            mem_mib,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "vm.snap"

    @property
    def memory(self) -> Path:
        return self.dir / "vm.mem"

    def exists(self) -> bool:
        return self.state.is_file() and self.memory.is_file()


class FileLock:
    """An exclusive flock on a file: serialises snapshot builds across processes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> FileLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
