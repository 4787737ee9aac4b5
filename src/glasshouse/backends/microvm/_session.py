"""A microVM session: one Firecracker VM that lives for the whole session.

Opening restores a VM from the warm snapshot, exactly as a run does (jailer, cgroup of its
own), and sends it one ordinary request: ``python3 -c <session agent> <config>``. The guest
init runs that in its warm interpreter, which becomes the session agent
(:mod:`glasshouse.guest.vm_session`): it connects out to the host over vsock, forks the
session's persistent interpreter and serves the steps and the files API until the VM is
killed. Nothing in the guest image changes for this: the agent travels in the request.

Pause takes a Firecracker snapshot of the live VM (memory and device state) into the
session's directory and stops the VMM; resume restores it in a fresh VMM (a new jail and
cgroup): every process in the guest, the interpreter's variables included, goes on where it
was. Only Firecracker can do this here (QEMU has no vsock on this host and no snapshots in
this backend): sessions refuse QEMU.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glasshouse.core.errors import SessionPaused
from glasshouse.core.execution import (
    BackendError,
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    utcnow,
)
from glasshouse.core.session import SessionSpec
from glasshouse.guest import transport as T

from . import images as _images
from ._handle import VMHandle
from ._request import build_request
from ._session_files import VMWorkspaceFiles
from ._session_link import PORT, Link, accept_hello, listen
from ._session_steps import VMSteps
from .firecracker import FirecrackerVM

if TYPE_CHECKING:
    from ._backend import MicroVMBackend

_AGENT_SOURCE = (Path(__file__).parent.parent.parent / "guest" / "vm_session.py").read_text()
#: Where paused sessions' snapshots live (on disk, beside the jails: hard links, no copies).
SESSION_DIR = Path(os.environ.get("GLASSHOUSE_VM_SESSION_DIR", "/var/lib/glasshouse/vm-sessions"))
#: The agent connects within this after the request (it only compiles itself and connects).
HELLO_S = 60.0
_SNAP, _MEM = "session.snap", "session.mem"


class MicroVMLiveSandbox:
    """:class:`~glasshouse.core.session.LiveSandbox` over one Firecracker VM (module doc)."""

    isolation = "vm"

    def __init__(self, backend: MicroVMBackend, spec: SessionSpec) -> None:
        spec.validate()
        if spec.network:
            raise BackendError(
                "the microvm backend gives guests no network device (network=True not supported)"
            )
        backend.prepare()
        if backend._snapshot is None:
            raise BackendUnavailable(
                "microVM sessions need Firecracker restored from its warm snapshot (a live "
                "snapshot for pause, vsock for the steps); QEMU and cold boots have no sessions"
            )
        self._backend = backend
        self._spec = spec
        self.env = dict(spec.env or {})
        self.backend_name = backend.name
        self._token = secrets.token_hex(16)
        self._handle: VMHandle | None = None
        self._link: Link | None = None
        self._dir: Path | None = None  # the paused snapshot's directory
        self._cpu_done = 0  # VMM CPU of the session's earlier VMs (before a pause)
        self._peak_kb = 0
        self.closed = False
        self.timings: dict[str, int] = {}
        self.commands = VMSteps(self, code=False)
        self.interpreter = VMSteps(self, code=True)
        self.files = VMWorkspaceFiles(self.link, spec.max_file_bytes)
        t0 = time.monotonic()
        self._open()
        self.timings["open_ms"] = _ms(t0)
        assert self._handle is not None
        self.facts: dict[str, Any] = {
            "vm": backend.name,
            "guest_memory_mib": backend.mem_mib,
            "session_vm": "one Firecracker VM for the whole session, restored from the warm "
            "snapshot; steps are served by a session agent over vsock",
            "workspace": "/work (a tmpfs in the guest, kept across steps)",
            "disk": f"tmpfs size {spec.limits.disk_bytes} bytes"
            if spec.limits.disk_bytes
            else "no quota (the guest's RAM)",
            "memory": "the VM's RAM"
            + (
                f"; RLIMIT_AS {spec.limits.memory_bytes} per step process and the interpreter"
                if spec.limits.memory_bytes
                else ""
            ),
            "pids": "not enforced (the guest kernel has no cgroups)",
            "jailer": self._handle.vm is not None and self._handle.vm.jailed,
        }

    # -- the VM ------------------------------------------------------------------------------
    def _open(self) -> None:
        limits = self._spec.limits
        config = {
            "port": PORT,
            "token": self._token,
            "memory_bytes": limits.memory_bytes,
            "disk_bytes": limits.disk_bytes,
        }
        boot = ExecutionSpec(
            argv=["python3", "-c", _AGENT_SOURCE, json.dumps(config)],
            env=None,
            files=dict(self._spec.files),
        )
        handle = self._backend.start(boot)
        assert isinstance(handle, VMHandle) and isinstance(handle.vm, FirecrackerVM)
        try:
            listener, path = listen(handle.vm)
            try:
                self._backend.release(handle)
                assert handle.vm.conn is not None
                handle.vm.conn.sendall(T.encode_frame(build_request(boot)))
                conn, _ = accept_hello(listener, self._token, handle.vm, HELLO_S)
            finally:
                listener.close()
                path.unlink(missing_ok=True)
        except BaseException:
            self._backend.cleanup(handle)
            raise
        self._handle = handle
        self._link = Link(conn)

    def link(self) -> Link:
        """The live connection to the session agent."""
        if self.closed:
            raise BackendError("the session's VM is closed")
        if self._link is None:
            raise SessionPaused("the session's VM is paused: resume it first")
        return self._link

    @property
    def current_link(self) -> Link | None:
        return self._link

    @property
    def vmm_pid(self) -> int | None:
        return self._handle.pid if self._handle is not None else None

    def vmm_cpu_ms(self) -> int | None:
        handle = self._handle
        if handle is None or handle.cgroup is None:
            return None
        now = handle.cgroup.cpu_time_ms()
        return None if now is None else self._cpu_done + now

    def vm_details(self) -> dict[str, Any]:
        """Host facts of the VM serving the session now (for each step's receipt)."""
        facts = self._backend._facts
        handle = self._handle
        assert facts is not None
        return {
            "backend": facts.backend,
            "isolation": "vm",
            "vmm": facts.vmm_version,
            "vmm_pid": self.vmm_pid,
            "kvm": _images.kvm_kind(),
            "guest_kernel_digest": facts.images.kernel_digest,
            "guest_rootfs_digest": facts.images.rootfs_digest,
            "vm_source": handle.source if handle is not None else "",
            "jailer": handle is not None and handle.vm is not None and handle.vm.jailed,
            "vmm_cgroup": handle.cgroup_note if handle is not None else "none",
            "host_fields": "vmm_pid,vmm_cgroup,vmm_cpu_ms,timings,timeout,digests,vm_source",
        }

    def usage(self) -> dict[str, int | None]:
        """The VMM's memory (its cgroup: guest RAM it touched, the VMM, page cache of the
        snapshot files it read) and CPU (all of the session's VMMs so far)."""
        handle = self._handle
        memory = None
        if handle is not None and handle.cgroup is not None:
            memory = handle.cgroup.memory_current()
        elif handle is not None and handle.pid:
            memory = _rss(handle.pid)
        return {"memory_bytes": memory, "cpu_ms": self.vmm_cpu_ms(), "pids": None}

    # -- pause and resume --------------------------------------------------------------------
    def pause(self) -> str:
        """Snapshot the live VM (memory and state) to disk and stop its VMM."""
        if self.closed or self._handle is None:
            return _KEPT
        t0 = time.monotonic()
        link = self.link()
        link.request({"op": "pause"}, timeout=30.0)  # the agent now waits for a wake line
        link.close()
        self._link = None
        handle = self._handle
        vm = handle.vm
        assert isinstance(vm, FirecrackerVM)
        SESSION_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir = SESSION_DIR / f"s-{secrets.token_hex(8)}"
        self._dir.mkdir(mode=0o700)
        if vm.jailed:  # the VMM writes inside its jail; the files move out before it goes
            vm.snapshot(Path(_SNAP), Path(_MEM))
            for name in (_SNAP, _MEM):
                _move(vm.run_dir / name, self._dir / name)
        else:
            vm.snapshot(self._dir / _SNAP, self._dir / _MEM)
        self._retire(handle)
        self.timings["pause_ms"] = _ms(t0)
        return _KEPT

    def resume(self) -> None:
        if self.closed:
            raise BackendError("the session's VM is closed")
        if self._handle is not None or self._dir is None:
            return
        t0 = time.monotonic()
        backend = self._backend
        driver = backend._driver
        assert driver is not None
        handle = backend._new_handle(ExecutionSpec(argv=["glasshouse-session"]), None, None)
        try:
            vm = driver.new_vm(handle.run_dir, backend.mem_mib)
            assert isinstance(vm, FirecrackerVM)
            handle.vm = vm
            vm.spawn()
            handle.pid = vm.pid
            backend._contain(handle)
            listener, path = listen(vm)
            try:
                if vm.jailed:
                    for name in (_SNAP, _MEM):
                        os.chown(self._dir / name, vm.uid, vm.uid)
                vm.restore(self._dir / _SNAP, self._dir / _MEM)  # and the wake line
                handle.source = "session-snapshot"
                conn, _ = accept_hello(listener, self._token, vm, HELLO_S)
            finally:
                listener.close()
                path.unlink(missing_ok=True)
        except BaseException:
            backend.cleanup(handle)
            raise
        self._handle = handle
        self._link = Link(conn)
        # A VM restored once, but its entropy and clock are made fresh all the same.
        self._link.request(
            {"op": "reseed", "entropy": T.b64(secrets.token_bytes(64)), "time_ns": time.time_ns()}
        )
        shutil.rmtree(self._dir, ignore_errors=True)  # the VMM holds what it still needs
        self._dir = None
        self.timings["resume_ms"] = _ms(t0)

    def _retire(self, handle: VMHandle) -> None:
        """Account for and stop one of the session's VMMs."""
        if handle.cgroup is not None:
            self._cpu_done += handle.cgroup.cpu_time_ms() or 0
            self._peak_kb = max(self._peak_kb, handle.cgroup.max_rss_kb() or 0)
        self._handle = None
        self._backend.cleanup(handle)

    def close(self) -> ExecutionResult:
        if self.closed:
            return ExecutionResult.failure("closed")
        self.closed = True
        started = utcnow()
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._handle is not None:
            self._retire(self._handle)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        result = ExecutionResult(started_at=started, ended_at=utcnow(), network="disabled")
        result.details.update(
            {
                "vmm_cpu_ms": self._cpu_done,
                "vmm_peak_memory_kb": self._peak_kb or None,
                "timings_ms": dict(self.timings),
            }
        )
        return result


_KEPT = (
    "the whole VM (a Firecracker snapshot of its memory and state): the interpreter's "
    "variables, imports, open files and threads, every guest process, and the workspace"
)


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError:
        shutil.move(src, dst)
    os.chown(dst, 0, 0)


def _rss(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def _ms(t0: float) -> int:
    return round((time.monotonic() - t0) * 1000)
