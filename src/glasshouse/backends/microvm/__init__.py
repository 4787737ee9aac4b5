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

Layout: ``_backend`` (the lifecycle), ``_driver`` (the VMM driver interface) implemented by
``firecracker`` and ``qemu``, ``_vm`` (what their VMs share: the VMM process, console,
reaper), ``_vsock`` (Firecracker's channel to the guest), ``_snapshots`` (the warm snapshot
store), ``_request`` (request and prime frames, the strict reading of the result),
``_result`` (the run's result and host facts), ``_events`` (guest events folded),
``_probe`` (capability probe and doctor checks), ``images`` (the guest artifacts).
"""

from __future__ import annotations

from ._backend import FirecrackerBackend, MicroVMBackend, QemuBackend
from ._probe import doctor_checks, probe

__all__ = ["FirecrackerBackend", "MicroVMBackend", "QemuBackend", "doctor_checks", "probe"]
