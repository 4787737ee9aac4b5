"""The library entry point: run a command isolated and get its sealed receipt.

    import glasshouse

    result = glasshouse.run(["python3", "-c", "print(2 + 2)"], backend="sandbox", timeout=10)
    print(result.returncode, result.stdout, result.receipt["digest"])

:func:`run` feels like :func:`subprocess.run`: one call, keyword-only options, a typed
:class:`Result`. A command's non-zero exit, timeout or crash is data (``returncode``,
``timed_out``, ``error``, and always a receipt); exceptions are only for Glasshouse's own
failures (:class:`~glasshouse.core.errors.GlasshouseError` and its subclasses).

:class:`Runner` is the reusable object underneath (like ``httpx.Client`` under
``httpx.get``): one backend, its observers and one
:class:`~glasshouse.receipt.pipeline.ReceiptPipeline`, prepared once and shared by many runs
(thread-safe). The CLI and the server are thin layers over it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from glasshouse.core.execution import (
    DEFAULT_LIST_CAP,
    Backend,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    Limits,
    Sink,
    close_backend,
    new_execution_id,
)
from glasshouse.engine import Engine, Run
from glasshouse.receipt.pipeline import FinishedReceipt, ReceiptHook, ReceiptPipeline

if TYPE_CHECKING:
    from glasshouse.core.profiling import Observer
    from glasshouse.receipt.model import Receipt

__all__ = ["Result", "Runner", "pipeline_for", "result_of", "run"]


@dataclass(frozen=True)
class Result:
    """What a run did, and its sealed receipt."""

    args: list[str]
    #: Shell-style: the command's own code, 124 timeout, 128+N signal N, 125 Glasshouse's
    #: own failure, 126/127 not executable / not found.
    returncode: int
    stdout: bytes
    stderr: bytes
    #: The sealed receipt as JSON data (``digest`` set; linked when stored in a log).
    receipt: dict[str, Any]
    #: The backend's raw result (signal, cpu time, details...).
    execution: ExecutionResult = field(repr=False)
    receipt_path: Path | None = None
    envelope: dict[str, Any] | None = field(default=None, repr=False)
    envelope_path: Path | None = None

    @property
    def execution_id(self) -> str:
        return str(self.receipt["execution_id"])

    @property
    def timed_out(self) -> bool:
        return self.execution.timed_out

    @property
    def error(self) -> str | None:
        return self.execution.error

    @property
    def duration_ms(self) -> int:
        return self.execution.duration_ms

    @property
    def outputs(self) -> dict[str, bytes]:
        """Workspace files copied back (``outputs=``), name -> bytes."""
        return self.execution.outputs

    def receipt_model(self) -> Receipt:
        """The receipt validated into its pydantic model."""
        from glasshouse.receipt.model import Receipt

        return Receipt.model_validate(self.receipt)

    def check_returncode(self) -> None:
        """Raise :class:`~glasshouse.core.errors.CommandFailed` if the command did not exit 0."""
        if self.returncode != 0:
            from glasshouse.core.errors import CommandFailed

            raise CommandFailed(self.args, self.returncode, self.error)


class Runner:
    """Run commands with receipts: one backend, its observers, one receipt pipeline.

    ``backend``: a name (``"process"``, ``"sandbox"``, ``"gvisor"``, ``"microvm"``,
    ``"auto"``...) or a :class:`~glasshouse.core.execution.Backend` instance. ``profile``:
    ``"host"`` (eBPF, fail-open: the receipt says why when it cannot observe), ``"guest"``,
    ``"combined"`` or ``"disabled"``. ``observers``: override the profile's default ones.
    ``pipeline``: how receipts are finished (default: sealed, not stored, not signed).
    ``list_cap``: the most entries each receipt list keeps (the rest is counted).
    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        backend: str | Backend = "auto",
        *,
        profile: str = "host",
        observers: Sequence[Observer] | None = None,
        pipeline: ReceiptPipeline | None = None,
        allow_unsandboxed: bool = True,
        backend_options: Mapping[str, Any] | None = None,
        list_cap: int = DEFAULT_LIST_CAP,
    ) -> None:
        from glasshouse import backends

        if isinstance(backend, str):
            name = backends.auto_select(allow_unsandboxed) if backend == "auto" else backend
            backend = backends.create(name, **dict(backend_options or {}))
        if observers is None:
            observers = []
            if profile in ("host", "combined"):  # (no observe import on the disabled path)
                from glasshouse.observe import observers_for

                observers = observers_for(profile)
        self.backend = backend
        self.engine = Engine(backend, observers=observers, profile=profile, list_cap=list_cap)
        self.pipeline = pipeline if pipeline is not None else ReceiptPipeline()

    @property
    def profile(self) -> str:
        return str(self.engine.profile)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the backend's background teardown (call once no more runs start)."""
        close_backend(self.backend)

    def kill_all(self, reason: str = "killed") -> int:
        """Kill every run in flight (their receipts record ``reason``); return how many."""
        return self.engine.kill_all(reason)

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float | None = None,
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | str | None = None,
        network: bool | None = None,
        files: Mapping[str, bytes | str] | None = None,
        outputs: Sequence[str] = (),
        **options: Any,
    ) -> Result:
        """Run ``args`` (a list, as :func:`subprocess.run` takes); see :meth:`run_spec` for
        ``options`` (streaming callbacks, where the receipt goes...)."""
        if isinstance(stdin, str):
            stdin = stdin.encode()
        spec = ExecutionSpec(
            argv=args if isinstance(args, str | bytes) else list(args),  # validate() says why
            env=env,
            cwd=cwd,
            stdin=stdin,
            timeout=timeout,
            limits=limits or Limits(),
            network=network,
            files={k: v.encode() if isinstance(v, str) else v for k, v in (files or {}).items()},
            outputs=tuple(outputs),
        )
        return self.run_spec(spec, **options)

    def run_spec(
        self,
        spec: ExecutionSpec,
        *,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
        receipt_path: str | os.PathLike[str] | None = None,
        envelope_path: str | os.PathLike[str] | None = None,
        execution_id: str | None = None,
        on_start: Callable[[Handle], None] | None = None,
        extra: Mapping[str, Any] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
    ) -> Result:
        """Run ``spec``; finish its receipt through the pipeline; return the result.

        ``on_stdout``/``on_stderr`` get each output chunk as it arrives. ``receipt_path``:
        where the receipt is written (pipelines without a log). ``extra``: top-level
        receipt fields set before the hooks run (the server's ``code_hash``). ``output_dir``:
        save the copied-back ``spec.outputs`` there (atomically, never through a symlink; one
        that cannot be saved is marked so in ``artifacts.outputs``). Never raises
        for the command's or the backend's failures: they are in the result and receipt; a
        receipt that cannot be stored raises the store's error.
        """
        run = self.execute(
            spec,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            execution_id=execution_id,
            on_start=on_start,
        )
        data = {**run.receipt_data, **dict(extra or {})}
        if output_dir is not None and spec.outputs:
            from glasshouse.core.outputs import mark_unsaved, save_outputs

            mark_unsaved(data, save_outputs(run.result.outputs, output_dir))
        finished = self.pipeline.finish(data, path=receipt_path, envelope_path=envelope_path)
        return result_of(run, finished)

    def execute(
        self,
        spec: ExecutionSpec,
        *,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
        execution_id: str | None = None,
        on_start: Callable[[Handle], None] | None = None,
    ) -> Run:
        """The run and its unfinished receipt data (no hooks, not sealed, not stored).

        The one place a run becomes a receipt: even a backend that raises (a bug) gets a
        receipt saying so."""
        execution_id = execution_id or new_execution_id()
        try:
            return self.engine.run(
                spec,
                stdout=on_stdout,
                stderr=on_stderr,
                execution_id=execution_id,
                on_start=on_start,
            )
        except Exception as exc:  # a backend bug: the run still leaves a receipt
            import logging  # (only here: importing it costs the CLI ~4 ms per run)

            logging.getLogger("glasshouse").exception("run %s failed in the engine", execution_id)
            return failed_run(self.engine, spec, execution_id, exc)


def failed_run(engine: Engine, spec: ExecutionSpec, execution_id: str, exc: Exception) -> Run:
    """A receipt for a run that blew up inside the engine (a backend bug)."""
    from glasshouse.receipt.aggregate import build_receipt

    result = ExecutionResult.failure(f"{engine.backend.name}: {type(exc).__name__}: {exc}")
    data = build_receipt(
        execution_id=execution_id,
        spec=spec,
        result=result,
        observations=[],
        profile=engine.profile,
        backend=engine.backend,
    )
    return Run(execution_id, spec, result, [], data)


R = TypeVar("R", bound=Result)


def result_of(run: Run, finished: FinishedReceipt, cls: type[R] = Result, **extra: Any) -> R:  # type: ignore[assignment]
    """The :class:`Result` (or a subclass ``cls`` with ``extra`` fields) of a finished run."""
    result = run.result
    return cls(
        args=list(run.spec.argv) if not isinstance(run.spec.argv, str | bytes) else [],
        returncode=result.shell_exit_code(),
        stdout=result.stdout.data,
        stderr=result.stderr.data,
        receipt=finished.data,
        execution=result,
        receipt_path=finished.path,
        envelope=finished.envelope,
        envelope_path=finished.envelope_path,
        **extra,
    )


def pipeline_for(
    *,
    redact: bool | Any = False,
    policy: Any = None,
    signing_key: Any = None,
    log: Any = None,
    extra_hooks: Sequence[ReceiptHook] = (),
) -> ReceiptPipeline:
    """The usual pipeline: redaction (``True``, a loaded ``Redactor`` or a rules file), then
    the policy (a loaded ``Policy`` or a YAML file), then ``extra_hooks``; signed with
    ``signing_key`` (an Ed25519 private key or a key file); stored in ``log`` (a
    ``ReceiptLog`` or a directory) when given."""
    hooks: list[ReceiptHook] = []
    if redact:
        from glasshouse.receipt.redact import Redactor, load_rules
        from glasshouse.receipt.redact import receipt_hook as redact_hook

        redactor = redact if isinstance(redact, Redactor) else None
        if isinstance(redact, str | os.PathLike):
            redactor = load_rules(redact)
        hooks.append(redact_hook(redactor))
    if policy is not None:
        from glasshouse.policy import load_policy
        from glasshouse.policy import receipt_hook as policy_hook

        if isinstance(policy, str | os.PathLike):
            policy = load_policy(policy)
        hooks.append(policy_hook(policy))
    hooks += list(extra_hooks)
    if isinstance(signing_key, str | os.PathLike):
        from glasshouse.receipt.sign import load_private_key

        signing_key = load_private_key(signing_key)
    if isinstance(log, str | os.PathLike):
        from glasshouse.receipt.log import ReceiptLog

        log = ReceiptLog(log)
    return ReceiptPipeline(hooks, signing_key=signing_key, log=log)


def run(
    args: Sequence[str],
    *,
    backend: str | Backend = "auto",
    profile: str = "host",
    redact: bool | Any = False,
    policy: Any = None,
    signing_key: Any = None,
    receipts_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Result:
    """Run ``args`` once with a receipt; see :class:`Runner` and :meth:`Runner.run`.

    ``redact``/``policy``/``signing_key``: see :func:`pipeline_for`. ``receipts_dir``:
    append the receipt to that hash-linked log (else use ``receipt_path=`` to write one
    file, or keep it only in the result).
    """
    pipeline = pipeline_for(redact=redact, policy=policy, signing_key=signing_key, log=receipts_dir)
    with Runner(backend, profile=profile, pipeline=pipeline) as runner:
        return runner.run(args, **options)
