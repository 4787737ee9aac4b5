"""``auto``: run each candidate's probe, then the workload check (cached on disk), then the
rule (:mod:`._auto_rule`). Imported only when a caller asks for ``auto``.

The workload check touches :data:`~._auto_rule.TOUCH_MIB` MiB of fresh memory in a
restored microVM (bounded by :data:`VM_TIMEOUT_S`: a timeout means far slower) and in the
bubblewrap sandbox, each timed inside the run. Its figures are cached in the guest cache
directory, keyed by what would change them (guest image and VMM digests, snapshot recipe,
kernel command line, host kernel and KVM kind, Glasshouse version), for :data:`CACHE_TTL_S`;
a check that failed (not a timeout) is retried after :data:`FAILURE_TTL_S`. A file lock makes
concurrent first resolutions measure once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import importlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glasshouse.core.execution import BackendUnavailable, ExecutionSpec, close_backend
from glasshouse.core.version import __version__

from ._auto_rule import TOUCH_MIB, Choice, Figures, decide

if TYPE_CHECKING:
    from glasshouse.core.checks import Check

#: Wall limit of the VM's check (restore included): past it, the VM is far slower.
VM_TIMEOUT_S = 5.0
SANDBOX_TIMEOUT_S = 30.0
CACHE_TTL_S = 24 * 3600.0
FAILURE_TTL_S = 600.0
#: Bump when the check's code or meaning changes (old cache entries then stop matching).
CHECK_VERSION = 1

_CODE = (
    "import time\n"
    "t = time.perf_counter()\n"
    f"b = bytearray({TOUCH_MIB} << 20)\n"
    "print(f'{(time.perf_counter() - t) * 1000:.3f}')\n"
)


def choose(allow_unsandboxed: bool = True) -> Choice:
    """The backend ``auto`` means on this host, with the reason (and figures if measured)."""
    vm_ok, vm_why = _probe("glasshouse.backends.microvm")
    sb_ok, sb_why = _probe("glasshouse.backends.sandbox")
    if vm_ok and sb_ok:
        return decide(workload_figures())
    if vm_ok:
        return Choice("microvm", f"guests boot here; the sandbox does not run ({sb_why})")
    if sb_ok:
        return Choice("sandbox", f"the microvm does not run here ({vm_why})")
    reasons = f"microvm: {vm_why}; sandbox: {sb_why}"
    if allow_unsandboxed:
        return Choice("process", f"no isolating backend runs here ({reasons})")
    raise BackendUnavailable("no isolating backend works on this host: " + reasons)


def _probe(module_name: str) -> tuple[bool, str]:
    try:
        ok, why = importlib.import_module(module_name).probe()
    except Exception as exc:  # missing module or failing probe: not usable here
        return False, str(exc)
    return bool(ok), str(why)


def workload_figures(*, refresh: bool = False) -> Figures:
    """The workload check's figures: from the cache, else measured now (and cached)."""
    path = cache_path()
    if not refresh:
        cached = _read(path)
        if cached is not None:
            return cached
    with _locked(path.with_name(".auto.lock")):
        cached = None if refresh else _read(path)  # another process may have measured
        if cached is not None:
            return cached
        figures = measure()
        _write(path, figures)
        return figures


def cache_path() -> Path:
    from glasshouse.backends.microvm import images

    try:
        loaded: images.GuestImages | None = images.GuestImages.load()
    except BackendUnavailable:
        loaded = None
    parts = [
        CHECK_VERSION,
        __version__,
        images.kvm_kind(),
        os.uname().release,
        loaded.kernel_digest if loaded else None,
        loaded.rootfs_digest if loaded else None,
        loaded.firecracker_binary() if loaded else None,
        images.SNAPSHOT_RECIPE,
        images.boot_args(),
    ]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    return images.GUEST_DIR / f"auto-{key}.json"


def _read(path: Path) -> Figures | None:
    try:
        data = json.loads(path.read_text())
        figures = Figures.from_dict(data["figures"])
        age = time.time() - float(data["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    failed = figures.vm_error is not None or figures.sandbox_error is not None
    return figures if 0 <= age < (FAILURE_TTL_S if failed else CACHE_TTL_S) else None


def _write(path: Path, figures: Figures) -> None:
    try:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"at": time.time(), "figures": figures.to_dict()}))
        os.replace(tmp, path)
    except OSError:
        pass  # not cached: the next resolution measures again


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        yield  # no lock possible (read-only cache): measure without it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def measure() -> Figures:
    """Run the check in the sandbox, then in a restored microVM (not cached)."""
    sandbox_ms, sandbox_error, _ = _touch("sandbox", {}, SANDBOX_TIMEOUT_S)
    vm_ms, vm_error, timed_out = _touch("microvm", {"vmm": "firecracker"}, VM_TIMEOUT_S)
    return Figures(
        sandbox_ms=sandbox_ms,
        vm_ms=vm_ms,
        vm_timeout_s=VM_TIMEOUT_S,
        vm_timed_out=timed_out,
        vm_error=None if timed_out else vm_error,
        sandbox_error=sandbox_error,
        measured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )


def _touch(
    name: str, options: dict[str, Any], timeout: float
) -> tuple[float | None, str | None, bool]:
    """(ms inside the run, or None; why it failed; timed out?) for one run of the check."""
    from glasshouse.backends import create

    try:
        backend = create(name, **options)
        backend.prepare()
        handle = backend.start(ExecutionSpec(argv=["python3", "-c", _CODE], timeout=timeout))
        try:
            backend.release(handle)
            result = backend.wait(handle)
        finally:
            backend.cleanup(handle)
            close_backend(backend)  # the VM reaped, its run directory gone
    except Exception as exc:  # a backend that cannot run the check does not serve it
        return None, f"{type(exc).__name__}: {exc}", False
    if result.timed_out:
        return None, f"timed out after {timeout:g} s", True
    try:
        if result.exit_code != 0:
            raise ValueError
        return float(result.stdout.data.decode()), None, False
    except ValueError:
        why = result.error or result.stderr.data[-200:].decode(errors="replace").strip()
        return None, f"exit {result.exit_code}: {why or result.stdout.data[:100]!r}", False


def doctor_check() -> Check:
    """The ``auto`` line of ``glasshouse doctor``: the choice, why, and the figures (measured
    now if not cached: a few seconds, plus the first guest boot if it was never probed)."""
    from glasshouse.core.checks import Check

    choice = choose(allow_unsandboxed=True)
    detail = f"{choice.backend}: {choice.reason}"
    if choice.figures is not None and choice.figures.measured_at:
        detail += f" (measured {choice.figures.measured_at})"
    isolated = choice.backend != "process"
    return Check("auto-backend", isolated, detail, "" if isolated else "isolation under auto")
