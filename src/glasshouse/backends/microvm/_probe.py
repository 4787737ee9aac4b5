"""Can this host run microVM guests? The cached capability probe (``probe()``, used by
``auto`` backend selection) and the checks ``glasshouse doctor`` shows."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from glasshouse.core.execution import BackendUnavailable, ExecutionSpec

from . import images as _images
from .firecracker import FirecrackerDriver
from .qemu import qemu_binary


def check_kvm() -> None:
    if not os.path.exists("/dev/kvm"):
        raise BackendUnavailable("/dev/kvm does not exist (no KVM on this host)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise BackendUnavailable("/dev/kvm is not accessible (need root or the kvm group)")


_PROBE_FAILURE_TTL_S = 600.0


def probe(*, boot: bool = True) -> tuple[bool, str]:
    """Can this host boot a guest and restore snapshots? Answered from a cache (per boot id
    and image/VMM digest) in milliseconds; otherwise, with ``boot=True``, by building the
    snapshot and running ``print(2+2)`` in a restored VM (about 25 s the first time on
    kvm_pvm), and without it from static checks only (not cached)."""
    try:
        check_kvm()
        images = _images.GuestImages.load()
        fc = FirecrackerDriver.locate(images)
    except BackendUnavailable as exc:
        return False, str(exc)
    if fc is None:
        return False, "firecracker binary not found; run scripts/build-guest.sh"
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = "unknown"
    key = hashlib.sha256(
        json.dumps(
            [boot_id, images.kernel_digest, images.rootfs_digest, fc, _images.boot_args()]
        ).encode()
    ).hexdigest()[:16]
    cache = _images.GUEST_DIR / f"probe-{key}.json"
    try:
        cached = json.loads(cache.read_text())
        # A success holds for this boot and these images; a failure is retried after a
        # while (it may have been transient: a busy host, a concurrent rebuild).
        if cached["ok"] or time.time() - float(cached["at"]) < _PROBE_FAILURE_TTL_S:
            return bool(cached["ok"]), str(cached["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not boot:
        return True, "static checks passed (guest boot not yet probed)"
    ok, reason = _probe_boot()
    try:
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"ok": ok, "reason": reason, "at": time.time()}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return ok, reason


def _probe_boot() -> tuple[bool, str]:
    from ._backend import MicroVMBackend  # the backend needs this module: imported late

    backend = MicroVMBackend(vmm="firecracker")
    try:
        backend.prepare()
        spec = ExecutionSpec(argv=["python3", "-c", "print(2+2)"], timeout=60)
        handle = backend.start(spec)
        try:
            backend.release(handle)
            result = backend.wait(handle)
        finally:
            backend.cleanup(handle)
    except Exception as exc:
        return False, f"guest boot/restore failed: {exc}"
    if result.exit_code != 0 or result.stdout.data != b"4\n":
        return (
            False,
            f"restored guest answered wrongly: {result.error or result.stdout.data[:200]!r}",
        )
    return (
        True,
        f"firecracker restores a warm guest ({_images.kvm_kind()}, {result.details['timings_ms']})",
    )


def doctor_checks() -> list[Any]:
    from glasshouse.doctor import Check

    disables = "the microvm backend"
    checks = []
    kind = _images.kvm_kind()
    ok = kind is not None and os.access("/dev/kvm", os.R_OK | os.W_OK)
    checks.append(
        Check(
            "kvm", ok, f"/dev/kvm by {kind}" if kind else "/dev/kvm missing", "" if ok else disables
        )
    )
    try:
        images: _images.GuestImages | None = _images.GuestImages.load()
    except BackendUnavailable as exc:
        images = None
        checks.append(Check("guest-images", False, str(exc), disables))
    if images is not None:
        checks.append(
            Check(
                "guest-images",
                True,
                f"kernel {images.kernel_digest[:19]}, rootfs {images.rootfs_digest[:19]}",
            )
        )
        fc = images.firecracker_binary()
        checks.append(
            Check(
                "firecracker",
                fc is not None,
                fc or "not found",
                "" if fc else "microvm snapshots (QEMU cold boots remain)",
            )
        )
        jailer = images.jailer if os.access(images.jailer, os.X_OK) else None
        checks.append(
            Check(
                "jailer",
                jailer is not None,
                jailer or "not found",
                "" if jailer else "jailed firecracker",
            )
        )
    qemu = qemu_binary()
    checks.append(
        Check(
            "qemu",
            qemu is not None,
            qemu or "qemu-system-x86_64 not found",
            "" if qemu else "the qemu VMM",
        )
    )
    ok, reason = probe(boot=False)
    cached = (
        [p for p in _images.GUEST_DIR.glob("snapshot-*") if not p.name.count(".tmp")]
        if _images.GUEST_DIR.exists()
        else []
    )
    checks.append(
        Check(
            "microvm-snapshot",
            bool(cached),
            f"{len(cached)} cached snapshot(s); probe: {reason}",
            "" if cached else "fast microvm starts (built on first use)",
        )
    )
    return checks
