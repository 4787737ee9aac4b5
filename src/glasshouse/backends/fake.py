"""The ``fake`` backend: an in-memory workload for contract and engine tests.

It runs no process. It interprets a small shell subset, enough for the backend contract
suite: ``sh -c 'cmd; cmd'`` or a bare argv, where each command is one of ``true``,
``false``, ``exit N``, ``echo [-n] WORDS [>&2]``, ``sleep SECONDS``, ``kill -N $$``,
``cat`` (stdin to stdout), ``head -c N /dev/zero``. Anything else exits 127 with a message,
as a shell would. Failure injection (``fail_prepare``, ``fail_start``, ``fail_wait``) lets
tests drive the Engine's error paths.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field

from glasshouse.core.execution import (
    BackendError,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    OutputCapture,
    Sink,
    utcnow,
)


@dataclass
class _FakeHandle(Handle):
    stdout_cap: OutputCapture | None = None
    stderr_cap: OutputCapture | None = None
    released: threading.Event = field(default_factory=threading.Event)
    killed: threading.Event = field(default_factory=threading.Event)
    cleaned: int = 0


class _Exit(Exception):
    def __init__(self, code: int | None = None, signal: int | None = None) -> None:
        self.code, self.signal = code, signal


class FakeBackend:
    name = "fake"
    isolation = "fake"

    def __init__(
        self,
        *,
        fail_prepare: str | None = None,
        fail_start: str | None = None,
        fail_wait: str | None = None,
    ) -> None:
        self.fail_prepare = fail_prepare
        self.fail_start = fail_start
        self.fail_wait = fail_wait
        self.prepared = 0
        self.live: set[str] = set()

    def prepare(self) -> None:
        if self.fail_prepare:
            raise BackendError(self.fail_prepare)
        self.prepared += 1

    def start(
        self, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        if self.fail_start:
            raise BackendError(self.fail_start)
        limit = spec.limits.output_bytes
        handle = _FakeHandle(
            spec=spec,
            pid=None,
            stdout_cap=OutputCapture(limit, stdout),
            stderr_cap=OutputCapture(limit, stderr),
        )
        self.live.add(handle.id)
        return handle

    def release(self, handle: Handle) -> None:
        assert isinstance(handle, _FakeHandle)
        handle.released.set()

    def wait(self, handle: Handle) -> ExecutionResult:
        assert isinstance(handle, _FakeHandle)
        assert handle.stdout_cap is not None and handle.stderr_cap is not None
        if self.fail_wait:
            raise BackendError(self.fail_wait)
        spec = handle.spec
        started = utcnow()
        deadline = time.monotonic() + spec.deadline_s if spec.deadline_s else None
        result = ExecutionResult(started_at=started)
        try:
            for command in _script(spec.argv):
                self._step(handle, command, deadline)
            raise _Exit(0)
        except _Exit as done:
            result.exit_code, result.signal = done.code, done.signal
        if handle.killed_reason == "timeout":
            result.timed_out = True
            result.error = f"timed out after {spec.deadline_s:g}s"
        elif handle.killed_reason is not None:
            result.error = f"killed: {handle.killed_reason}"
        result.stdout = handle.stdout_cap.result()
        result.stderr = handle.stderr_cap.result()
        result.ended_at = utcnow()
        result.network = "disabled"
        return result

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        assert isinstance(handle, _FakeHandle)
        if handle.killed_reason is None:
            handle.killed_reason = reason
        handle.killed.set()

    def cleanup(self, handle: Handle) -> None:
        assert isinstance(handle, _FakeHandle)
        handle.cleaned += 1
        self.live.discard(handle.id)

    # -- the interpreter ----------------------------------------------------------------
    def _step(self, handle: _FakeHandle, argv: list[str], deadline: float | None) -> None:
        assert handle.stdout_cap is not None and handle.stderr_cap is not None
        if handle.killed.is_set():
            raise _Exit(signal=9)
        name, args = argv[0], argv[1:]
        if name == "true" or name == ":":
            return
        if name == "false":
            raise _Exit(1)
        if name == "exit":
            raise _Exit(int(args[0]) if args else 0)
        if name == "echo":
            to_err = bool(args) and args[-1] == ">&2"
            if to_err:
                args = args[:-1]
            newline = not (args and args[0] == "-n")
            if not newline:
                args = args[1:]
            text = (" ".join(args) + ("\n" if newline else "")).encode()
            (handle.stderr_cap if to_err else handle.stdout_cap).feed(text)
            return
        if name == "sleep":
            until = time.monotonic() + float(args[0])
            while True:
                remaining = until - time.monotonic()
                if deadline is not None and time.monotonic() >= deadline:
                    self.kill(handle, "timeout")
                if handle.killed.is_set():
                    raise _Exit(signal=9)
                if remaining <= 0:
                    return
                step = (
                    remaining if deadline is None else min(remaining, deadline - time.monotonic())
                )
                handle.killed.wait(max(0.0, step))
        if name == "kill" and len(args) == 2 and args[1] == "$$":
            raise _Exit(signal=int(args[0].lstrip("-")))
        if name == "cat" and not args:
            handle.stdout_cap.feed(handle.spec.stdin or b"")
            return
        if name == "head" and args[:1] == ["-c"] and args[2:] == ["/dev/zero"]:
            remaining = int(args[1])
            while remaining > 0:
                n = min(remaining, 1 << 16)
                handle.stdout_cap.feed(b"\0" * n)
                remaining -= n
            return
        handle.stderr_cap.feed(f"fake: {name}: command not found\n".encode())
        raise _Exit(127)


def _script(argv: list[str] | tuple[str, ...] | object) -> list[list[str]]:
    argv = list(argv)  # type: ignore[call-overload]
    if len(argv) >= 3 and argv[0] in ("sh", "/bin/sh", "bash") and argv[1] == "-c":
        commands = []
        for part in argv[2].split(";"):
            words = shlex.split(part.replace(">&2", " >&2"))
            if words:
                commands.append(words)
        return commands
    return [argv]
