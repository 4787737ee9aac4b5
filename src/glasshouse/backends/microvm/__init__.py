"""The ``microvm`` backend: every run in a fresh Firecracker (or QEMU ``-M microvm``) VM.

Firecracker runs are served from a warm snapshot: one cold boot (at :meth:`prepare`, cached
on disk by content hash) brings a guest to the point where its init has Python running with
common modules imported and waits for a request on vsock; each run restores that snapshot
into a new Firecracker process, hands the guest fresh entropy and the time with the
request, reads one result and destroys the VM. QEMU (and Firecracker with
``snapshot=False``) cold-boots a VM per run. See docs/microvm.md.

The guest is untrusted: its result is parsed strictly (glasshouse.guest.transport) and the
receipt says which fields come from the host (VMM pid, times, timeout, digests of what was
booted) and which from the guest (exit status, output, rusage): docs/threat-model.md.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glasshouse.core.execution import (
    BackendError,
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    Sink,
    StreamResult,
    utcnow,
)
from glasshouse.core.profiling import Observation
from glasshouse.guest import transport as T

from .. import _cgroup
from . import images as _images
from ._vm import (
    OUTPUTS_BYTES,
    REAPER,
    GuestFailure,
    build_prime,
    build_request,
    make_run_dir,
    parse_guest_result,
    remove_run_dir,
)
from .firecracker import FirecrackerVM, exchange, sweep_orphans
from .qemu import QemuVM, qemu_binary

__all__ = ["FirecrackerBackend", "MicroVMBackend", "QemuBackend", "doctor_checks", "probe"]

#: Guest RAM. The snapshot's memory file has this size; restored VMs only touch a few MiB.
DEFAULT_MEM_MIB = 256
#: A VMM's cgroup: guest RAM plus this much for the VMM itself (page cache of the snapshot
#: file it reads is charged too, and reclaimable), and at most this many tasks (Firecracker
#: runs ~4 threads, QEMU ~10).
VMM_OVERHEAD_MIB = 128
VMM_PIDS = 64
_CGROUP_PREFIX = "vm-"
#: Bound on a cold boot to a ready guest (20 s on an idle kvm_pvm host, minutes on a busy one).
BOOT_TIMEOUT_S = 600.0


@dataclass
class _VMHandle(Handle):
    vm: FirecrackerVM | QemuVM | None = None
    run_dir: Path | None = None
    vmm: str = ""
    source: str = ""  # "snapshot:<key>" or "cold"
    sinks: tuple[Sink | None, Sink | None] = (None, None)
    started_at: Any = None
    released_at: float = 0.0
    deadline: float | None = None
    conn: Any = None
    timings: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    #: The VMM's own cgroup (None where cgroups are unavailable: ``cgroup_note`` says why).
    cgroup: Any = None
    cgroup_note: str = "none"
    #: Guest events received in intermediate frames (``spec.guest_events``).
    events: list[list[Any]] = field(default_factory=list)
    #: Prewarmed VMs (the warm pool): sent their entropy and time ahead; when ready.
    primed: bool = False
    prewarmed_at: float = 0.0
    used: bool = False


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
        self._jailer: str | None = None
        #: Refresh the snapshot in the background when it is older than this (None: never).
        #: A stock kernel restored from an old snapshot catches up the elapsed time second
        #: by second, which is slow when the guest kernel is emulated (kvm_pvm); our guest
        #: kernel's patch 0004 makes that O(1), so this is off by default.
        self.snapshot_max_age_s = snapshot_max_age_s
        self._refresh: threading.Thread | None = None
        self.name = "qemu" if vmm == "qemu" else "firecracker"
        self._lock = threading.Lock()
        self._prepared = False
        self._images: _images.GuestImages | None = None
        self._binary = ""
        self._vmm_version = ""
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
            _check_kvm()
            images = _images.GuestImages.load()
            try:
                sweep_orphans()
                _cgroup.sweep_empty(_CGROUP_PREFIX)
            except OSError:
                pass
            fc = (
                images.firecracker_binary() if self._vmm_choice in ("auto", "firecracker") else None
            )
            if fc is not None:
                self.name, self._binary = "firecracker", fc
                self._vmm_version = _version([fc, "--version"])
            elif self._vmm_choice == "firecracker":
                raise BackendUnavailable("firecracker binary not found; run scripts/build-guest.sh")
            else:
                qemu = qemu_binary()
                if qemu is None:
                    raise BackendUnavailable(
                        "neither firecracker nor qemu-system-x86_64 is installed"
                    )
                self.name, self._binary = "qemu", qemu
                self._vmm_version = _version([qemu, "--version"])
            self._images = images
            if self.name == "firecracker" and self._jailer_choice is not False:
                usable = os.geteuid() == 0 and os.access(images.jailer, os.X_OK)
                if usable:
                    self._jailer = images.jailer
                elif self._jailer_choice:
                    raise BackendUnavailable("the jailer needs root and its binary")
            if self.name == "firecracker" and self.snapshot:
                self._snapshot_key = _images.snapshot_key(images, self._vmm_version, self.mem_mib)
                self._snapshot = _ensure_snapshot(
                    images, self._binary, self._snapshot_key, self.mem_mib, self.boot_timeout
                )
            self._prepared = True

    def _maybe_refresh(self, snap: _images.Snapshot) -> None:
        """Start building a fresh snapshot in the background when ``snap`` is too old; runs
        keep being served from ``snap`` until the new one is ready."""
        max_age = self.snapshot_max_age_s
        if max_age is None or _snapshot_age_s(snap) < max_age:
            return
        with self._lock:
            if self._refresh is not None and self._refresh.is_alive():
                return
            self._refresh = threading.Thread(
                target=self._rebuild, args=(time.time(),), name="gh-snapshot", daemon=True
            )
            self._refresh.start()

    def _rebuild(self, newer_than: float) -> None:
        assert self._images is not None
        try:
            fresh = _ensure_snapshot(
                self._images,
                self._binary,
                self._snapshot_key,
                self.mem_mib,
                self.boot_timeout,
                newer_than=newer_than - 1,
            )
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
    ) -> _VMHandle:
        jailed = self.name == "firecracker" and self._jailer is not None
        run_dir = None if jailed else make_run_dir(self.name)
        handle = _VMHandle(
            spec=spec, pid=None, run_dir=run_dir, vmm=self.name, sinks=(stdout, stderr)
        )
        handle.started_at = utcnow()
        return handle

    def _launch(self, handle: _VMHandle, t0: float) -> None:
        """Bring ``handle``'s VM up to the point where its guest waits for a request."""
        assert self._images is not None
        run_dir = handle.run_dir
        if self.name == "firecracker":
            rootfs = self._images.rootfs
            vm = FirecrackerVM(self._binary, run_dir or Path("/"), rootfs, self._jailer)
            handle.vm = vm
            vm.spawn()
            self._contain(handle)
            handle.timings["spawn_ms"] = _ms(t0)
            snap = self._snapshot
            if snap is not None:
                self._maybe_refresh(snap)
                vm.restore(snap.state, snap.memory)
                handle.source = f"snapshot:{snap.dir.name.removeprefix('snapshot-')}"
                handle.timings["restore_ms"] = _ms(t0)
            else:
                vm.boot(self._images.kernel, _images.boot_args(), self.mem_mib)
                vm.wait_ready(self.boot_timeout)
                handle.source = "cold"
                handle.timings["boot_ms"] = _ms(t0)
        else:
            assert run_dir is not None
            qvm = QemuVM(self._binary, run_dir, self._images.kernel, self._images.rootfs)
            handle.vm = qvm
            qvm.spawn(_images.boot_args(serial=True), self.mem_mib)
            self._contain(handle)
            handle.source = "cold"
            try:
                qvm.wait_ready(None, self.boot_timeout)
            except TimeoutError:
                raise GuestFailure(f"guest did not boot within {self.boot_timeout:g}s") from None
            handle.timings["boot_ms"] = _ms(t0)

    def _contain(self, handle: _VMHandle) -> None:
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

    def prewarm(self) -> _VMHandle:
        """A VM restored ahead of any request, connected and *primed*: it was sent fresh
        entropy and the time, which its guest mixes into its pool, reseeds and sets while
        the VM waits in the pool, before any request can reach it (the guest reports it in
        its result). Only Firecracker snapshot restores can be prewarmed (a cold boot takes
        minutes)."""
        self.prepare()
        if self.name != "firecracker" or self._snapshot is None:
            raise BackendError("only Firecracker snapshot restores can be prewarmed")
        slot = self._new_handle(ExecutionSpec(argv=["true"]), None, None)
        t0 = time.monotonic()
        try:
            self._launch(slot, t0)
            assert isinstance(slot.vm, FirecrackerVM)
            slot.conn = slot.vm.connect(timeout=10.0)
            # Not waiting for an answer saves the guest a send (every guest-kernel
            # instruction is emulated on kvm_pvm): the frame is ahead of the request on the
            # same stream, so the guest handles it first.
            slot.conn.sendall(T.encode_frame(build_prime()))
        except BaseException:
            self.cleanup(slot)
            raise
        slot.primed = True
        slot.timings["prewarm_ms"] = _ms(t0)
        slot.prewarmed_at = time.monotonic()
        return slot

    def start_prewarmed(
        self,
        slot: _VMHandle,
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

    def discard(self, slot: _VMHandle) -> None:
        self.cleanup(slot)

    def release(self, handle: Handle) -> None:
        """Send the request: only now does user code run in the guest."""
        assert isinstance(handle, _VMHandle) and handle.vm is not None
        handle.released_at = time.monotonic()
        deadline_s = handle.spec.deadline_s
        handle.deadline = None if deadline_s is None else handle.released_at + deadline_s
        if isinstance(handle.vm, FirecrackerVM) and handle.conn is None:
            try:
                handle.conn = handle.vm.connect(timeout=10.0)
                handle.timings["connect_ms"] = _ms(handle.released_at)
                handle.timings["connect_attempts"] = handle.vm.connect_attempts
            except GuestFailure:
                if handle.killed_reason is None:
                    raise
                handle.conn = None

    def wait(self, handle: Handle) -> ExecutionResult:
        assert isinstance(handle, _VMHandle) and handle.vm is not None
        spec = handle.spec
        request = T.encode_frame(build_request(spec, primed=handle.primed))
        limit = T.result_limit(spec.limits.output_bytes, OUTPUTS_BYTES)
        if spec.guest_events:
            limit += T.EVENTS_BYTES
        timed_out = False
        data: dict[str, Any] | None = None
        error: str | None = None
        try:
            if handle.killed_reason is not None:
                raise GuestFailure("killed before the request was sent")
            if isinstance(handle.vm, FirecrackerVM):
                events = handle.events if spec.guest_events else None  # uninvited: refused
                body = exchange(handle.conn, request, limit, handle.deadline, events)
            else:
                body = handle.vm.exchange(request, limit, handle.deadline)
            data = parse_guest_result(body, spec)
            _check_streams(data)
        except TimeoutError:
            timed_out = handle.killed_reason is None
        except GuestFailure as exc:
            error = str(exc)
        except OSError as exc:
            error = f"guest connection failed: {exc}"
        ended = utcnow()
        handle.timings["run_ms"] = _ms(handle.released_at)
        self.kill(handle, "run finished")
        return self._result(handle, data, error, timed_out, ended)

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        assert isinstance(handle, _VMHandle)
        if handle.killed_reason is None and reason != "run finished":
            handle.killed_reason = reason
        if handle.vm is not None:
            handle.vm.kill()

    def cleanup(self, handle: Handle) -> None:
        """Kill the VM now; its reaping and directory removal finish in the background
        (:data:`REAPER`, ~15-20 ms that no result waits for). :meth:`close` waits for them."""
        assert isinstance(handle, _VMHandle)
        with handle.lock:
            if handle.closed:
                return
            handle.closed = True
            if handle.conn is not None:
                handle.conn.close()
            vm, run_dir, group = handle.vm, handle.run_dir, handle.cgroup
            if vm is not None:
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

    # ----- result -----------------------------------------------------------------------

    def _result(
        self,
        handle: _VMHandle,
        data: dict[str, Any] | None,
        error: str | None,
        timed_out: bool,
        ended: Any,
    ) -> ExecutionResult:
        spec = handle.spec
        result = ExecutionResult(
            started_at=handle.started_at,
            ended_at=ended,
            root_pid=handle.pid,
            timed_out=timed_out,
            network="disabled",
        )
        if data is not None:
            result.exit_code = data["exit_code"]
            result.signal = data["signal"]
            result.error = data["error"]
            result.stdout = _stream(data["stdout"])
            result.stderr = _stream(data["stderr"])
            result.cpu_time_ms = data["cpu_time_ms"]
            result.max_rss_kb = data["max_rss_kb"]
            result.outputs = {k: v for k, v in data["outputs"].items() if k in spec.outputs}
            for name in set(spec.outputs) - set(result.outputs):  # the guest gives no reason
                result.output_status[name] = "not returned by the guest: missing or over budget"
            for sink, stream in zip(handle.sinks, (result.stdout, result.stderr), strict=True):
                if sink is not None and stream.data:
                    try:
                        sink(stream.data)
                    except Exception:
                        pass
        if data is None and (timed_out or handle.killed_reason is not None):
            # The host SIGKILLed the VMM: the workload ended by that signal (host fact).
            result.signal = 9
        if timed_out:
            result.error = f"timed out after {spec.deadline_s:g}s"
        elif data is None:
            if handle.killed_reason is not None:
                result.error = f"killed: {handle.killed_reason}"
            else:
                tail = handle.vm.console_tail()[-600:] if handle.vm is not None else ""
                result.error = f"{error or 'no result from the guest'}" + (
                    f" (console: {tail.strip()})" if tail.strip() else ""
                )
        assert self._images is not None
        details: dict[str, Any] = {
            "backend": self.name,
            "isolation": "vm",
            "vmm": self._vmm_version,
            "vmm_pid": handle.pid,
            "kvm": _images.kvm_kind(),
            "guest_kernel_digest": self._images.kernel_digest,
            "guest_rootfs_digest": self._images.rootfs_digest,
            "vm_source": handle.source,
            "prewarmed": handle.primed,
            "jailer": isinstance(handle.vm, FirecrackerVM) and handle.vm.jailer is not None,
            "timings_ms": dict(handle.timings),
            "vmm_cgroup": handle.cgroup_note,
            "host_fields": "vmm_pid,vmm_cgroup,vmm_cpu_ms,vmm_peak_memory_kb,timings,timeout,"
            "digests,vm_source",
        }
        if handle.cgroup is not None:
            # The VMM's whole life (restore, and for a prewarmed VM its priming and wait too):
            # the guest kernel runs inside it, emulated on kvm_pvm.
            details["vmm_cpu_ms"] = handle.cgroup.cpu_time_ms()
            details["vmm_peak_memory_kb"] = handle.cgroup.max_rss_kb()
        if data is not None:
            details["guest_mode"] = data["mode"]
            details["guest_reported"] = data["guest"]
        result.details.update(details)
        result.sandbox = {"vm": self.name, "guest_memory_mib": self.mem_mib}
        if spec.guest_events:
            result.guest_observation = _guest_observation(handle, data)
        return result


class FirecrackerBackend(MicroVMBackend):
    def __init__(self, **options: Any) -> None:
        super().__init__(vmm="firecracker", **options)


class QemuBackend(MicroVMBackend):
    def __init__(self, **options: Any) -> None:
        options.pop("snapshot", None)
        super().__init__(vmm="qemu", snapshot=False, **options)


# ----- helpers ----------------------------------------------------------------------------


def _guest_observation(handle: _VMHandle, data: dict[str, Any] | None) -> Observation:
    from . import _events

    final = data["events"] if data is not None else None
    if final is None and not handle.events:
        why = "the guest sent no events" + ("" if data is not None else " (no result)")
        return Observation.unavailable(_events.OBSERVER, "guest", why)
    raw = handle.events + (final["events"] if final else [])
    return _events.fold(
        raw,
        count=final["count"] if final else len(raw),
        lost=final["lost"] if final else 0,
        mode=data["mode"] if data is not None else "",
        complete=final is not None,
    )


def _check_spec(spec: ExecutionSpec) -> None:
    if spec.network:
        raise BackendError(
            "the microvm backend gives guests no network device (network=True not supported)"
        )
    if spec.limits.disk_bytes is not None:
        raise BackendError(
            "the microvm backend cannot enforce limits.disk yet: its workspace is a tmpfs inside"
            " the guest, bounded only by the VM's memory (use --backend sandbox or gvisor)"
        )


def _ms(t0: float) -> int:
    return round((time.monotonic() - t0) * 1000)


def _stream(s: dict[str, Any]) -> StreamResult:
    return StreamResult(s["data"], s["size"], s["sha256"], s["truncated"])


def _check_streams(data: dict[str, Any]) -> None:
    """A complete stream's digest must match its bytes (a cheap consistency check of the
    guest's claim; a truncated stream's digest cannot be checked on the host)."""
    for name in ("stdout", "stderr"):
        s = data[name]
        if not s["truncated"] and hashlib.sha256(s["data"]).hexdigest() != s["sha256"]:
            raise GuestFailure(f"guest result: {name}.sha256 does not match its data")


def _check_kvm() -> None:
    if not os.path.exists("/dev/kvm"):
        raise BackendUnavailable("/dev/kvm does not exist (no KVM on this host)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise BackendUnavailable("/dev/kvm is not accessible (need root or the kvm group)")


_VERSIONS: dict[str, str] = {}


def _version(cmd: list[str]) -> str:
    key = cmd[0]
    if key not in _VERSIONS:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendUnavailable(f"{cmd[0]} does not run: {exc}") from None
        _VERSIONS[key] = (out.strip().splitlines() or ["unknown"])[0]
    return _VERSIONS[key]


#: Snapshot-build VMs in progress (a background refresh may be mid-build at exit).
_BUILDING: set[FirecrackerVM] = set()


@atexit.register
def _kill_builds() -> None:
    for vm in list(_BUILDING):
        vm.kill()


def _generations(key: str) -> list[_images.Snapshot]:
    """Complete snapshots of ``key``, newest first (``snapshot-<key>-<unix time>``)."""
    found = []
    for path in _images.GUEST_DIR.glob(f"snapshot-{key}-*"):
        stamp = path.name.rsplit("-", 1)[1]
        if stamp.isdigit() and _images.Snapshot(path).exists():
            found.append((int(stamp), _images.Snapshot(path)))
    return [snap for _, snap in sorted(found, key=lambda t: t[0], reverse=True)]


def _snapshot_age_s(snap: _images.Snapshot) -> float:
    return time.time() - int(snap.dir.name.rsplit("-", 1)[1])


def _ensure_snapshot(
    images: _images.GuestImages,
    binary: str,
    key: str,
    mem_mib: int,
    boot_timeout: float,
    *,
    newer_than: float = 0.0,
) -> _images.Snapshot:
    """The newest snapshot of ``key`` made after ``newer_than`` (unix time), built if there
    is none. Builds are serialised across processes by a file lock."""
    found = [g for g in _generations(key) if _snapshot_age_s(g) < time.time() - newer_than]
    if found:
        return found[0]
    with _images.FileLock(_images.GUEST_DIR / ".snapshot.lock"):
        found = [g for g in _generations(key) if _snapshot_age_s(g) < time.time() - newer_than]
        if found:
            return found[0]
        for stale in _images.GUEST_DIR.glob("snapshot-*.tmp*"):  # builders that died
            pid = stale.name.rsplit(".tmp", 1)[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                remove_run_dir(stale)
        stamp = int(time.time())
        snap = _images.Snapshot(_images.GUEST_DIR / f"snapshot-{key}-{stamp}")
        tmp = _images.Snapshot(_images.GUEST_DIR / f"snapshot-{key}-{stamp}.tmp{os.getpid()}")
        remove_run_dir(tmp.dir)
        tmp.dir.mkdir(parents=True)
        run_dir = make_run_dir("snapbuild")
        vm = FirecrackerVM(binary, run_dir, images.rootfs)
        _BUILDING.add(vm)
        try:
            vm.spawn()
            vm.boot(images.kernel, _images.boot_args(warm=True), mem_mib)
            vm.wait_ready(boot_timeout)
            vm.snapshot(tmp.state, tmp.memory)
            # Jailed VMMs (unprivileged uids) read these through hard links.
            for path in (tmp.state, tmp.memory):
                path.chmod(0o644)
            meta = {
                "key": key,
                "kernel_digest": images.kernel_digest,
                "rootfs_digest": images.rootfs_digest,
            }
            (tmp.dir / "meta.json").write_text(json.dumps(meta))
        except BaseException:
            remove_run_dir(tmp.dir)
            raise
        finally:
            _BUILDING.discard(vm)
            vm.kill()
            vm.close()
            remove_run_dir(run_dir)
        os.replace(tmp.dir, snap.dir)
        # Keep the previous generation (runs may be loading it right now), drop older ones.
        for old in _generations(key)[2:]:
            remove_run_dir(old.dir)
        return snap


# ----- capability probe and doctor --------------------------------------------------------


_PROBE_FAILURE_TTL_S = 600.0


def probe(*, boot: bool = True) -> tuple[bool, str]:
    """Can this host boot a guest and restore snapshots? Answered from a cache (per boot id
    and image/VMM digest) in milliseconds; otherwise, with ``boot=True``, by building the
    snapshot and running ``print(2+2)`` in a restored VM (about 25 s the first time on
    kvm_pvm), and without it from static checks only (not cached)."""
    try:
        _check_kvm()
        images = _images.GuestImages.load()
        fc = images.firecracker_binary()
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
