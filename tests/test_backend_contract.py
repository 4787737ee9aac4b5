"""The backend contract suite: every backend must pass every case here.

A backend joins with ONE line in ``BACKENDS``. Cases are shell snippets (``sh -c``) from a
small vocabulary the fake backend also interprets; cases marked ``real`` need a real
process tree (limits enforced by the kernel) and are skipped for the fake backend.
A backend whose ``probe`` module says it cannot work on this host is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from glasshouse.backends import create
from glasshouse.core.execution import Backend, ExecutionSpec, Limits
from glasshouse.engine import Engine


@dataclass(frozen=True)
class BackendCase:
    name: str
    factory: Callable[[], Backend]
    real: bool = True
    #: module exposing ``probe() -> (ok, reason)``; the backend is skipped when not ok
    probe: str | None = None
    #: seconds a trivial run may take on this backend (to size timeouts in cases)
    slow: bool = False


_SANDBOX, _GVISOR = "glasshouse.backends.sandbox", "glasshouse.backends.gvisor"
_MICROVM = "glasshouse.backends.microvm"
BACKENDS = [
    pytest.param(BackendCase("fake", lambda: create("fake"), real=False), id="fake"),
    pytest.param(BackendCase("process", lambda: create("process")), id="process"),
    pytest.param(
        BackendCase("microvm", lambda: create("microvm"), probe=_MICROVM, slow=True),
        id="microvm",
        marks=pytest.mark.vm,
    ),
    pytest.param(BackendCase("sandbox", lambda: create("sandbox"), probe=_SANDBOX), id="sandbox"),
    pytest.param(BackendCase("gvisor", lambda: create("gvisor"), probe=_GVISOR), id="gvisor"),
]


@pytest.fixture(params=BACKENDS, scope="module")
def case(request: pytest.FixtureRequest) -> BackendCase:
    bc: BackendCase = request.param
    if bc.probe:
        try:
            ok, why = importlib.import_module(bc.probe).probe()
        except Exception as exc:
            ok, why = False, f"probe failed: {exc}"
        if not ok:
            pytest.skip(f"{bc.name} cannot run here: {why}")
    return bc


@pytest.fixture(scope="module")
def backend(case: BackendCase) -> Backend:
    b = case.factory()
    b.prepare()
    return b


def _run(backend: Backend, argv: list[str], **kw) -> object:
    return Engine(backend).run(ExecutionSpec(argv=argv, **kw))


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_contract_attributes(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name and backend.isolation


@pytest.mark.parametrize("code", [0, 1, 3, 42])
def test_exit_codes(backend: Backend, code: int) -> None:
    run = _run(backend, sh(f"exit {code}"))
    assert run.result.exit_code == code
    assert run.result.signal is None and not run.result.timed_out
    assert run.result.shell_exit_code() == code
    assert run.receipt.outcome.exit_code == code
    assert run.receipt.exit_code == code


def test_stdout_stderr_and_digests(backend: Backend) -> None:
    run = _run(backend, sh("echo hello; echo oops >&2"))
    r = run.result
    assert r.stdout.data == b"hello\n" and r.stderr.data == b"oops\n"
    assert r.stdout.sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert run.receipt.artifacts.stdout_hash == r.stdout.sha256
    assert run.receipt.artifacts.stderr_hash == hashlib.sha256(b"oops\n").hexdigest()


def test_killed_by_signal(backend: Backend) -> None:
    run = _run(backend, sh("kill -9 $$"))
    assert run.result.signal == 9
    assert run.result.exit_code is None
    assert run.result.shell_exit_code() == 137


def test_timeout_kills_and_reports(backend: Backend) -> None:
    run = _run(backend, sh("sleep 30"), timeout=1)
    assert run.result.timed_out
    assert run.result.shell_exit_code() == 124
    assert run.receipt.outcome.timed_out
    assert "timed out" in (run.result.error or "")
    assert run.result.duration_ms < 30_000  # killed, not finished


def test_wall_limit_is_a_deadline(backend: Backend) -> None:
    run = _run(backend, sh("sleep 30"), limits=Limits(wall_s=1))
    assert run.result.timed_out


def test_kill_from_another_thread(backend: Backend) -> None:
    engine = Engine(backend)
    handles = []
    started = threading.Event()

    def on_start(handle: object) -> None:
        handles.append(handle)
        started.set()

    def killer() -> None:
        started.wait(60)
        time.sleep(0.3)
        backend.kill(handles[0], "test")

    t = threading.Thread(target=killer)
    t.start()
    run = engine.run(ExecutionSpec(argv=sh("sleep 30")), on_start=on_start)
    t.join()
    assert run.result.signal == 9 or run.result.exit_code not in (0, None)
    assert run.result.error == "killed: test"
    assert not run.result.timed_out


def test_output_cap_keeps_prefix_and_hashes_everything(backend: Backend) -> None:
    n = 3_000_000
    run = _run(backend, sh(f"head -c {n} /dev/zero"), limits=Limits(output_bytes=1000))
    out = run.result.stdout
    assert out.size == n and out.truncated and out.data == b"\0" * 1000
    assert out.sha256 == hashlib.sha256(b"\0" * n).hexdigest()
    assert run.receipt.artifacts.stdout_truncated
    assert run.receipt.artifacts.stdout_bytes == n


def test_stdin_is_fed(backend: Backend) -> None:
    run = _run(backend, ["cat"], stdin=b"abc\x00def")
    assert run.result.stdout.data == b"abc\x00def"


def test_invalid_spec_still_yields_a_receipt(backend: Backend) -> None:
    run = _run(backend, [], timeout=1)
    assert run.result.error and "argv is empty" in run.result.error
    assert run.result.shell_exit_code() == 125
    assert run.receipt.outcome.error == run.result.error


def test_cleanup_is_idempotent(backend: Backend) -> None:
    handle = backend.start(ExecutionSpec(argv=sh("echo x")))
    backend.release(handle)
    result = backend.wait(handle)
    assert result.exit_code == 0
    backend.cleanup(handle)
    backend.cleanup(handle)


def test_cleanup_without_release_kills(backend: Backend) -> None:
    handle = backend.start(ExecutionSpec(argv=sh("sleep 30")))
    backend.kill(handle, "abandoned")
    backend.cleanup(handle)
    backend.cleanup(handle)


def test_memory_limit(case: BackendCase, backend: Backend) -> None:
    if not case.real:
        pytest.skip("needs a real kernel-enforced memory limit")
    # `tail -n 1` must hold one endless line in memory: it grows until the limit stops it.
    run = _run(
        backend,
        sh("head -c 400000000 /dev/zero | tail -n 1 >/dev/null; echo done-$?"),
        limits=Limits(memory_bytes=64 << 20),
        timeout=60,
    )
    assert b"done-0" not in run.result.stdout.data
    assert not run.result.timed_out


def test_pids_limit(case: BackendCase, backend: Backend) -> None:
    if not case.real:
        pytest.skip("needs a real kernel-enforced pids limit")
    script = "i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done; echo spawned"
    run = _run(backend, sh(script), limits=Limits(pids=8), timeout=60)
    assert b"spawned" not in run.result.stdout.data  # the shell could not fork past the limit
    assert run.result.exit_code != 0
    assert not run.result.timed_out
