"""A descriptor Glasshouse was started with never reaches a workload (issue 12, item 1).

Each test starts the real ``glasshouse`` CLI (or ``glasshouse-server``) holding a
non-close-on-exec fd on the host's ``/``, as a launcher that leaks one would (make's
jobserver, ``flock``, ``exec 7</``). The workload tries to read a host file through it
(``openat(fd, "tmp/...")``); meanwhile every process below the CLI is scanned for an fd on
the host's root (the runtimes and VMMs included: runsc, bwrap, firecracker, qemu).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_helpers import free_port

from glasshouse.core import procfs

#: The leaked fd's number: high, so it is no fd the workload (or a guest) has of its own.
_LEAK_FD_MIN = 100
#: Seconds the workload stays alive after its probe, so its host processes can be scanned.
_HOLD_S = 4
_PROBE = """
import os, time
try:
    fd = os.open({rel!r}, os.O_RDONLY, dir_fd={fd})
    print("READ:" + os.read(fd, 200).decode(), flush=True)
except OSError as exc:
    print("DENIED:" + str(exc.errno), flush=True)
time.sleep({hold})
"""

#: backend -> (probe, the host process name that must have been scanned)
_BACKENDS = {
    "process": (None, "python3"),
    "sandbox": ("glasshouse.backends.sandbox:probe", "bwrap"),
    "gvisor": ("glasshouse.backends.gvisor:probe", "runsc"),
    "firecracker": ("glasshouse.backends.microvm:probe", "firecracker"),
    "qemu": ("glasshouse.backends.microvm.qemu:qemu_binary", "qemu-system-x86"),
}


def _require(backend: str) -> None:
    target = _BACKENDS[backend][0]
    if target is None:
        return
    module, _, attr = target.partition(":")
    try:
        answer = getattr(importlib.import_module(module), attr)()
    except Exception as exc:
        pytest.skip(f"{backend} cannot run here: probe failed: {exc}")
    if backend == "qemu":  # the guest images (microvm probe) and a QEMU binary
        from glasshouse.backends import microvm

        ok, why = microvm.probe()
        if not ok or answer is None:
            pytest.skip(f"qemu cannot run here: {why if not ok else 'no qemu binary'}")
        return
    ok, why = answer
    if not ok:
        pytest.skip(f"{backend} cannot run here: {why}")


@pytest.fixture()
def leaked_root() -> Iterator[int]:
    """An fd on the host's ``/``, inheritable (no close-on-exec), numbered >= 100."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, _LEAK_FD_MIN)  # F_DUPFD: without FD_CLOEXEC
    os.close(fd)
    assert os.get_inheritable(high)
    try:
        yield high
    finally:
        os.close(high)


@pytest.fixture()
def host_secret() -> Iterator[tuple[str, str]]:
    """A host file in ``/tmp`` readable by anyone: (path relative to /, its content)."""
    secret = secrets.token_hex(16)
    path = Path("/tmp") / f"gh-fdleak-{secret[:8]}"
    path.write_text(secret)
    path.chmod(0o644)
    try:
        yield str(path.relative_to("/")), secret
    finally:
        path.unlink()


def _holders(root: int, target: os.stat_result) -> tuple[list[str], set[str]]:
    """Processes below ``root`` holding an fd on ``target``, and the names of all seen."""
    found, names = [], set()
    for pid in _below(root):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        names.add(name)
        for fd in fds:
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                    found.append(f"{name}[{pid}] fd {fd}")
    return found, names


def _below(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = procfs.ppid(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _watch(proc: subprocess.Popen[bytes], timeout: float) -> tuple[set[str], set[str]]:
    """Scan ``proc``'s descendants until it exits: (fds on the host root, process names)."""
    root = os.stat("/")
    holders: set[str] = set()
    names: set[str] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("the run did not finish in time")
        found, seen = _holders(proc.pid, root)
        holders.update(found)
        names.update(seen)
        time.sleep(0.05)
    return holders, names


def _check_probe(stdout: str, secret: str) -> None:
    assert secret not in stdout, f"the workload read a host file through the leaked fd: {stdout}"
    assert f"DENIED:{errno.EBADF}" in stdout, stdout


@pytest.mark.parametrize(
    "backend",
    [
        "process",
        "sandbox",
        "gvisor",
        pytest.param("firecracker", marks=pytest.mark.vm),
        pytest.param("qemu", marks=[pytest.mark.vm, pytest.mark.slow]),
    ],
)
def test_cli_run_does_not_pass_an_inherited_fd(
    backend: str, leaked_root: int, host_secret: tuple[str, str], tmp_path: Path
) -> None:
    _require(backend)
    rel, secret = host_secret
    code = _PROBE.format(rel=rel, fd=leaked_root, hold=_HOLD_S)
    cmd = [sys.executable, "-m", "glasshouse.cli", "run", "--backend", backend]
    cmd += ["--profile", "disabled", "--receipt", str(tmp_path / "receipt.json"), "--timeout"]
    cmd += ["200", "--", "python3", "-c", code]
    proc = subprocess.Popen(
        cmd, pass_fds=(leaked_root,), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    holders, names = _watch(proc, timeout=300)
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    _check_probe(out.decode(errors="replace"), secret)
    assert _BACKENDS[backend][1] in names, f"never saw the {backend} process: {names}"
    assert not holders, f"processes of the run hold the host's /: {sorted(holders)}"


def test_server_run_does_not_pass_an_inherited_fd(
    leaked_root: int, host_secret: tuple[str, str], tmp_path: Path
) -> None:
    """The server's own launcher is a source too: a sandbox run from a server holding the fd."""
    _require("sandbox")
    rel, secret = host_secret
    port = free_port()
    cmd = [sys.executable, "-m", "glasshouse.server.cli", "--port", str(port)]
    cmd += ["--receipts-dir", str(tmp_path / "receipts"), "--log-level", "warning"]
    cmd += ["--backend", "sandbox", "--profile", "disabled"]
    log = tmp_path / "server.log"
    with open(log, "wb") as log_fh:
        server = subprocess.Popen(
            cmd, pass_fds=(leaked_root,), stdout=log_fh, stderr=subprocess.STDOUT
        )
        try:
            _wait_healthy(server, f"http://127.0.0.1:{port}", log)
            body = {"code": _PROBE.format(rel=rel, fd=leaked_root, hold=0)}
            response = httpx.post(f"http://127.0.0.1:{port}/run", json=body, timeout=120)
        finally:
            server.terminate()
            server.wait(timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["exit_code"] == 0, result
    _check_probe(result["stdout"], secret)


def _wait_healthy(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited early:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"server not ready:\n{log.read_text(errors='replace')}")
