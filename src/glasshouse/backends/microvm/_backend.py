"""The microvm backend's lifecycle: prepare (KVM, images, the VMM driver, the warm
snapshot), start (a VM per run, in a cgroup of its own), release (the request), wait (the
result), kill and cleanup, and the warm pool's prewarm. Which VMM runs the VMs is the
driver's business (:mod:`._driver`); the backend never asks."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from glasshouse.core.execution import (
    BackendError,
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    Sink,
    WorkloadStart,
    utcnow,
)
from glasshouse.core.session import LiveSandbox, SessionSpec
from glasshouse.guest import transport as T

from .. import _cgroup
from . import _snapshots
from . import images as _images
from ._driver import VMMDriver
from ._handle import VMHandle
from ._probe import check_kvm
from ._request import (
    build_prime,
    build_request,
    check_streams,
    join_streams,
    parse_guest_result,
    result_limit,
)
from ._result import VMFacts, build_result
from ._streamed import StreamedOutput
from ._vm import REAPER, GuestFailure, make_run_dir, remove_run_dir
from .firecracker import FirecrackerDriver
from .qemu import QemuDriver

#: Guest RAM. The snapshot's memory file has this size; restored VMs only touch a few MiB.
DEFAULT_MEM_MIB = 512
#: A VMM's cgroup: guest RAM plus this much for the VMM itself (page cache of the snapshot
#: file it reads is charged too, and reclaimable), and at most this many tasks (Firecracker
#: runs ~4 threads, QEMU ~10).
VMM_OVERHEAD_MIB = 128
VMM_PIDS = 64
_CGROUP_PREFIX = "vm-"
#: Bound on a cold boot to a ready guest (20 s on an idle kvm_pvm host, minutes on a busy one).
BOOT_TIMEOUT_S = 600.0

#: The drivers a ``vmm`` choice may use, in order of preference.
_DRIVERS: dict[str, tuple[type[VMMDriver[Any]], ...]] = {
    "auto": (FirecrackerDriver, QemuDriver),
    "firecracker": (FirecrackerDriver,),
    "qemu": (QemuDriver,),
}


def _driver_for(choice: str, images: _images.GuestImages, jailer: bool | None) -> VMMDriver[Any]:
    """The first driver of ``choice`` whose VMM is installed."""
    for kind in _DRIVERS[choice]:
        binary = kind.locate(images)
        if binary is not None:
            return kind(binary, images, jailer=jailer)
    if choice == "firecracker":
        raise BackendUnavailable("firecracker binary not found; run scripts/build-guest.sh")
    raise BackendUnavailable("neither firecracker nor qemu-system-x86_64 is installed")


class MicroVMBackend:
    """A fresh VM per run. ``vmm``: "auto" (Firecracker if present, else QEMU),
    "firecracker" or "qemu". ``snapshot``: serve Firecracker runs from the warm snapshot
    (default) or cold-boot each one."""

    isolation = "vm"

    def __init__(
        self,
        *,
        vmm: str = "auto",
        snapshot: bool = True,
        mem_mib: int = DEFAULT_MEM_MIB,
        boot_timeout: float = BOOT_TIMEOUT_S,
        jailer: bool | None = None,
        snapshot_max_age_s: float | None = None,
    ) -> None:
        if vmm not in ("auto", "firecracker", "qemu"):
            raise BackendUnavailable(f"unknown VMM {vmm!r} (auto, firecracker, qemu)")
        self._vmm_choice = vmm
        self.snapshot = snapshot
        self.mem_mib = mem_mib
        self.boot_timeout = boot_timeout
        #: Run Firecracker under its jailer: None = whenever we are root and have the jailer.
        self._jailer_choice = jailer
        #: Refresh the snapshot in the background when it is older than this (None: never).
        #: A stock kernel restored from an old snapshot catches up the elapsed time second
        #: by second, which is slow when the guest kernel is emulated (kvm_pvm); our guest
        #: kernel's patch 0004 makes that O(1), so this is off by default.
        self.snapshot_max_age_s = snapshot_max_age_s
        self._refresh: threading.Thread | None = None
        self.name = "qemu" if vmm == "qemu" else "firecracker"
        self._lock = threading.Lock()
        self._prepared = False
        self._driver: VMMDriver[Any] | None = None
        self._facts: VMFacts | None = None
        self._snapshot: _images.Snapshot | None = None
        self._snapshot_key = ""

    # ----- prepare ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Check KVM, the VMM and the guest images; build the warm snapshot if missing.
        Idempotent and thread-safe; the snapshot build is also serialised across processes."""
        if self._prepared:
            return
        with self._lock:
            if self._prepared:
                return
            check_kvm()
            images = _images.GuestImages.load()
            try:
                for kind in _DRIVERS["auto"]:
                    kind.sweep_orphans()
                _cgroup.sweep_empty(_CGROUP_PREFIX)
            except OSError:
                pass
            driver = _driver_for(self._vmm_choice, images, self._jailer_choice)
            self.name = driver.name
            self._driver = driver
            self._facts = VMFacts(driver.name, driver.version, images, self.mem_mib)
            if driver.snapshots and self.snapshot:
                self._snapshot_key = _images.snapshot_key(images, driver.version, self.mem_mib)
                self._snapshot = self._ensure_snapshot()
            self._prepared = True

    def _ensure_snapshot(self, newer_than: float = 0.0) -> _images.Snapshot:
        driver = self._driver
        assert driver is not None

        def build(dest: _images.Snapshot) -> None:
            driver.build_snapshot(dest, self.mem_mib, self.boot_timeout)

        return _snapshots.ensure(driver.images, self._snapshot_key, build, newer_than=newer_than)

    def _maybe_refresh(self, snap: _images.Snapshot) -> None:
        """Start building a fresh snapshot in the background when ``snap`` is too old; runs
        keep being served from ``snap`` until the new one is ready."""
        max_age = self.snapshot_max_age_s
        if max_age is None or _snapshots.age_s(snap) < max_age:
            return
        with self._lock:
            if self._refresh is not None and self._refresh.is_alive():
                return
            self._refresh = threading.Thread(
                target=self._rebuild, args=(time.time(),), name="gh-snapshot", daemon=True
            )
            self._refresh.start()

    def _rebuild(self, newer_than: float) -> None:
        try:
            fresh = self._ensure_snapshot(newer_than=newer_than - 1)
        except Exception:  # keep serving from the old snapshot; retried on a later run
            return
        self._snapshot = fresh

    # ----- lifecycle --------------------------------------------------------------------

    def start(
        self, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        self.prepare()
        _check_spec(spec)
        handle = self._new_handle(spec, stdout, stderr)
        t0 = time.monotonic()
        try:
            self._launch(handle, t0)
        except BaseException:
            self.cleanup(handle)
            raise
        assert handle.vm is not None
        handle.pid = handle.vm.pid
        return handle

    def _new_handle(
        self, spec: ExecutionSpec, stdout: Sink | None, stderr: Sink | None
    ) -> VMHandle:
        assert self._driver is not None
        run_dir = make_run_dir(self.name) if self._driver.needs_run_dir else None
        handle = VMHandle(
            spec=spec, pid=None, run_dir=run_dir, vmm=self.name, sinks=(stdout, stderr)
        )
        handle.workload_start = WorkloadStart("none")  # the host sees the VMM, not the guest
        handle.started_at = utcnow()
        return handle

    def _launch(self, handle: VMHandle, t0: float) -> None:
        """Bring ``handle``'s VM up to the point where its guest waits for a request."""
        driver = self._driver
        assert driver is not None
        vm = driver.new_vm(handle.run_dir, self.mem_mib)
        handle.vm = vm
        vm.spawn()
        self._contain(handle)
        snap = self._snapshot
        if snap is not None:
            self._maybe_refresh(snap)
        handle.source = driver.start_guest(
            vm,
            snap,
            mem_mib=self.mem_mib,
            boot_timeout=self.boot_timeout,
            timings=handle.timings,
            t0=t0,
        )

    def _contain(self, handle: VMHandle) -> None:
        """Put the VMM in a cgroup of its own: its memory (guest RAM + the VMM) and its
        thread count are capped on the host, and its CPU and peak memory go into the receipt
        as host facts. Fail-open (not root, no cgroup filesystem): the receipt says why."""
        assert handle.vm is not None and handle.vm.pid is not None
        memory = (self.mem_mib + VMM_OVERHEAD_MIB) << 20
        try:
            group = _cgroup.Cgroup.create(f"{_CGROUP_PREFIX}{secrets.token_hex(6)}")
        except _cgroup.CgroupUnavailable as exc:
            handle.cgroup_note = f"none ({exc})"
            return
        try:
            applied = group.set_limits(memory_bytes=memory, pids=VMM_PIDS)
            group.add(handle.vm.pid)
        except OSError as exc:
            group.remove()
            handle.cgroup_note = f"none ({exc})"
            return
        handle.cgroup = group
        limits = {"memory": f"memory <= {memory >> 20} MiB", "pids": f"pids <= {VMM_PIDS}"}
        handle.cgroup_note = ", ".join(limits[name] for name in applied) or "accounting only"

    # ----- Prewarmable (glasshouse.core.execution): the server's warm pool --------------

    def prewarm(self) -> VMHandle:
        """A VM restored ahead of any request, connected and *primed*: it was sent fresh
        entropy and the time, which its guest mixes into its pool, reseeds and sets while
        the VM waits in the pool, before any request can reach it (the guest reports it in
        its result). Only Firecracker snapshot restores can be prewarmed (a cold boot takes
        minutes)."""
        self.prepare()
        if self._snapshot is None:  # only drivers with snapshots have one
            raise BackendError("only Firecracker snapshot restores can be prewarmed")
        slot = self._new_handle(ExecutionSpec(argv=["true"]), None, None)
        t0 = time.monotonic()
        try:
            self._launch(slot, t0)
            assert slot.vm is not None
            slot.vm.open_channel(timeout=10.0)
            slot.vm.send_prime(T.encode_frame(build_prime()))
        except BaseException:
            self.cleanup(slot)
            raise
        slot.primed = True
        slot.timings["prewarm_ms"] = _ms(t0)
        slot.prewarmed_at = time.monotonic()
        return slot

    def start_prewarmed(
        self,
        slot: VMHandle,
        spec: ExecutionSpec,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
    ) -> Handle:
        """Hand ``slot``'s VM this run (it serves exactly one: the slot is spent)."""
        if slot.closed or slot.used or slot.vm is None:
            raise BackendError("a prewarmed VM can be used only once")
        if slot.vm.proc is None or slot.vm.proc.poll() is not None:
            self.cleanup(slot)
            raise BackendError(f"the prewarmed VM died while waiting: {slot.vm.console_tail()}")
        try:
            _check_spec(spec)
        except BaseException:
            self.cleanup(slot)
            raise
        slot.used = True
        slot.spec = spec
        slot.sinks = (stdout, stderr)
        slot.started_at = utcnow()
        slot.timings["pool_idle_ms"] = _ms(slot.prewarmed_at)
        slot.pid = slot.vm.pid
        return slot

    def discard(self, slot: VMHandle) -> None:
        self.cleanup(slot)

    def release(self, handle: Handle) -> None:
        """Send the request: only now does user code run in the guest."""
        assert isinstance(handle, VMHandle) and handle.vm is not None
        handle.released_at = time.monotonic()
        deadline_s = handle.spec.deadline_s
        handle.deadline = None if deadline_s is None else handle.released_at + deadline_s
        try:
            attempts = handle.vm.open_channel(timeout=10.0)
        except GuestFailure:
            if handle.killed_reason is None:
                raise
            attempts = None
        if attempts is not None:
            handle.timings["connect_ms"] = _ms(handle.released_at)
            handle.timings["connect_attempts"] = attempts

    def wait(self, handle: Handle) -> ExecutionResult:
        assert isinstance(handle, VMHandle) and handle.vm is not None
        spec = handle.spec
        request = T.encode_frame(build_request(spec, primed=handle.primed))
        limit = result_limit(spec)
        timed_out = False
        data: dict[str, Any] | None = None
        error: str | None = None
        streamed = handle.streamed = StreamedOutput(spec.limits.output_bytes, handle.sinks)
        try:
            if handle.killed_reason is not None:
                raise GuestFailure("killed before the request was sent")
            events = handle.events if spec.guest_events else None  # uninvited: refused
            body = handle.vm.exchange(request, limit, handle.deadline, events, streamed)
            data = parse_guest_result(body, spec)
            join_streams(data, streamed)
            check_streams(data)
        except TimeoutError:
            timed_out = handle.killed_reason is None
        except GuestFailure as exc:
            error = str(exc)
        except OSError as exc:
            error = f"guest connection failed: {exc}"
        ended = utcnow()
        handle.timings["run_ms"] = _ms(handle.released_at)
        self.kill(handle, "run finished")
        assert self._facts is not None
        return build_result(handle, data, error, timed_out, ended, self._facts)

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        assert isinstance(handle, VMHandle)
        if handle.killed_reason is None and reason != "run finished":
            handle.killed_reason = reason
        if handle.vm is not None:
            handle.vm.kill()

    def cleanup(self, handle: Handle) -> None:
        """Kill the VM now; its reaping and directory removal finish in the background
        (:data:`REAPER`, ~15-20 ms that no result waits for). :meth:`close` waits for them."""
        assert isinstance(handle, VMHandle)
        with handle.lock:
            if handle.closed:
                return
            handle.closed = True
            vm, run_dir, group = handle.vm, handle.run_dir, handle.cgroup
            if vm is not None:
                vm.disconnect()
                vm.kill()

        def teardown() -> None:
            if vm is not None:
                vm.close()
            if group is not None:
                group.remove()
            remove_run_dir(run_dir)

        REAPER.submit(teardown)

    def close(self) -> None:
        """Wait until every VM this process killed is reaped and its directory removed."""
        REAPER.drain()

    # ----- SessionCapable (glasshouse.core.session) -------------------------------------

    def open_session(self, spec: SessionSpec) -> LiveSandbox:
        """One VM that lives for the whole session (``_session``; Firecracker only)."""
        from ._session import MicroVMLiveSandbox

        return MicroVMLiveSandbox(self, spec)


class FirecrackerBackend(MicroVMBackend):
    def __init__(self, **options: Any) -> None:
        super().__init__(vmm="firecracker", **options)


class QemuBackend(MicroVMBackend):
    def __init__(self, **options: Any) -> None:
        options.pop("snapshot", None)
        super().__init__(vmm="qemu", snapshot=False, **options)


def _check_spec(spec: ExecutionSpec) -> None:
    if spec.network:
        raise BackendError(
            "the microvm backend gives guests no network device (network=True not supported)"
        )


def _ms(t0: float) -> int:
    return round((time.monotonic() - t0) * 1000)
