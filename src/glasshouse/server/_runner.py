"""The server's run service: admission, the worker threads, the Engine, receipts.

Independent of HTTP: the FastAPI app (``glasshouse.server.app``) is a thin layer over it.
Runs happen in a thread pool of ``max_concurrency`` workers so the event loop never blocks;
at most ``max_concurrency + queue`` runs are admitted at once, the rest are refused (429).
Every admitted run that starts gets a receipt, appended to the tamper-evident
:class:`~glasshouse.receipt.log.ReceiptLog` and indexed, before its answer is returned.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from glasshouse import backends
from glasshouse.core.execution import (
    DEFAULT_LIST_CAP,
    DEFAULT_OUTPUT_LIMIT,
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    Prewarmable,
    Sink,
    close_backend,
    new_execution_id,
)
from glasshouse.core.version import __version__
from glasshouse.receipt import dsse
from glasshouse.receipt.log import ReceiptLog
from glasshouse.receipt.pipeline import ReceiptHook, ReceiptPipeline
from glasshouse.runner import Runner as LibraryRunner
from glasshouse.server import _limits
from glasshouse.server._index import ReceiptIndex
from glasshouse.server._metrics import Metrics
from glasshouse.server._pool import PooledBackend, WarmPool
from glasshouse.server._sessions import SessionManager
from glasshouse.server._tenancy import ADMIN
from glasshouse.server.models import OutputFile, RunRequest, RunResponse

_log = logging.getLogger("glasshouse.server")

#: Code up to this size runs as ``python3 -c CODE``; longer code (an argv string is capped
#: at 128 KiB by the kernel) is written to this workspace file and run from there.
MAX_ARGV_CODE = 100_000
MAIN_FILE = ".glasshouse_main.py"
#: The environment of an unsandboxed (process backend) run: never the server's own.
_PROCESS_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

#: Stored receipts kept for a retry while the SQLite index cannot take rows.
_MAX_UNINDEXED = 256


@dataclass
class ServerConfig:
    """Everything the server is configured with (the ``glasshouse-server`` flags)."""

    backend: str = "auto"
    receipts_dir: Path = Path("/var/lib/glasshouse/receipts")
    max_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    queue: int = 16
    allow_unsandboxed: bool = False
    pool_size: int = 0
    pool_max_age_s: float = 60.0
    profile: str = "host"
    body_limit: int = 1 << 20
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    memory_bytes: int | None = 512 << 20
    pids: int | None = 256
    #: Most entries each receipt list keeps (``--max-list``); the rest is counted.
    max_list: int = DEFAULT_LIST_CAP
    #: Per-run workspace disk quota (``--disk``); a request may set ``limits.disk``.
    disk_bytes: int | None = 1 << 30
    #: Ceilings on what a request may ask for (``--max-*``): above one, 422.
    max_memory_bytes: int = 2 << 30
    max_pids: int = 1024
    max_output_bytes: int = 16 << 20
    max_disk_bytes: int = 4 << 30
    max_timeout_s: float = 300.0
    #: HTTP hardening (``glasshouse.server._http``): seconds a client gets to send a
    #: request's head and its body, seconds a response may wait on a client that does not
    #: read, and the open-connection cap (None: derived from RLIMIT_NOFILE).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    write_timeout_s: float = 30.0
    max_connections: int | None = None
    shutdown_grace_s: float = 10.0
    #: Bearer tokens by tenant name (``--token-file``; ``glasshouse.server._tenancy``); the
    #: tenant named "admin" sees everything. ``token``: one token alone, the admin's.
    tokens: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    #: Receipt post-processing (redaction, policy, signing...): run before the log append.
    receipt_hooks: list[ReceiptHook] = field(default_factory=list)
    #: Ed25519 private key: each stored receipt also gets its signed ``.dsse.json`` envelope.
    signing_key: Any = None
    #: Bytes of ``outputs`` returned in an answer, per file and in total (base64 adds a
    #: third); a file over either is listed with its size, sha256 and why, without content.
    outputs_file_cap: int = 4 << 20
    outputs_total_cap: int = 8 << 20
    #: Sessions (``glasshouse.server._sessions``): at most this many open (0: none); the
    #: ttl a session gets by default and at most; the idle timeout it gets by default; the
    #: largest file the files API moves (upload or download).
    max_sessions: int = 32
    session_ttl_s: float = 3600.0
    max_session_ttl_s: float = 86400.0
    session_idle_timeout_s: float = 600.0
    max_file_bytes: int = 64 << 20
    #: Options passed to ``glasshouse.backends.create``.
    backend_options: dict[str, Any] = field(default_factory=dict)
    #: sandbox: the pool's slots are live sandboxes with an interpreter up
    live_slots: bool = True

    def __post_init__(self) -> None:
        _limits.check_config(self)
        _limits.check_session_config(self)
        if self.token is not None:
            if self.tokens and self.tokens != {ADMIN: self.token}:
                raise ValueError("give tokens or token, not both")
            self.tokens = {ADMIN: self.token}


#: Rejected reason (and API error code) while the receipt store cannot write.
STORE_UNAVAILABLE = "receipt_store_unavailable"


class Rejected(Exception):
    """A run refused before it started (``reason``: "queue_full", "draining" or
    :data:`STORE_UNAVAILABLE`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Streams(Protocol):
    """A streamed answer's end of a run (``glasshouse.server._events.OutputChannel``)."""

    def sink(self, stream: str) -> Sink: ...

    def started(self) -> None: ...


class ReceiptWriteError(Exception):
    """The run happened but its receipt could not be stored: no answer without a receipt."""


def _host_observers(profile: str) -> list[Any]:
    """The host observer, loaded once per server process (fail-open). eBPF or nothing: the
    strace fallback would ptrace every run of a busy server."""
    from glasshouse.observe import observers_for

    return list(observers_for(profile, fallback=False))


def resolve_backend(name: str, allow_unsandboxed: bool) -> dict[str, Any]:
    """``--backend`` -> ``{requested, backend, reason, figures}`` (``/health``'s
    ``backend_choice``). ``auto``: the strongest isolating backend that serves real work
    here (never ``process``); ``process`` needs the explicit flag."""
    if name == "auto":
        choice = backends.auto_choice(allow_unsandboxed=False).to_dict()
        return {"requested": name, **choice}
    if name == "process" and not allow_unsandboxed:
        raise BackendUnavailable(
            "the process backend runs code unsandboxed, with the server's privileges: "
            "pass --allow-unsandboxed to accept that"
        )
    return {"requested": name, "backend": name, "reason": "--backend", "figures": None}


def outcome_of(result: Any) -> str:
    if result.timed_out:
        return "timeout"
    if result.signal is not None:
        return "killed"
    if result.exit_code is None:
        return "error"
    if result.error and result.exit_code is not None and result.exit_code >= 125:
        return "error"
    return "ok" if result.exit_code == 0 else "nonzero_exit"


class Runner:
    """Admits, runs and records runs. Create it, :meth:`start` it, :meth:`close` it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.backend_choice = resolve_backend(config.backend, config.allow_unsandboxed)
        self.backend_name: str = self.backend_choice["backend"]
        if config.backend == "auto":
            _log.info("--backend auto: %s (%s)", self.backend_name, self.backend_choice["reason"])
        options = dict(config.backend_options)
        if self.backend_name == "sandbox" and config.live_slots and config.pool_size > 0:
            options.setdefault("live_slots", True)
        inner = backends.create(self.backend_name, **options)
        inner.prepare()  # fail at startup, not on the first request
        self.inner = inner
        self.sandboxed = inner.isolation not in ("none",)
        self.pool: WarmPool | None = None
        if config.pool_size > 0 and isinstance(inner, Prewarmable):
            self.pool = WarmPool(
                inner,
                config.pool_size,
                config.pool_max_age_s,
                busy=lambda: self._running >= config.max_concurrency,
            )
        self.log = ReceiptLog(config.receipts_dir, signing_key=config.signing_key)
        self.observers = _host_observers(config.profile)
        # The library does the run and finishes its receipt (hooks -> seal -> sign -> log);
        # this class adds admission, the warm pool, the index and metrics around it.
        self.library = LibraryRunner(
            PooledBackend(inner, self.pool),
            profile=config.profile,
            observers=self.observers,
            pipeline=ReceiptPipeline(config.receipt_hooks, log=self.log),
            list_cap=config.max_list,
        )
        self.engine = self.library.engine
        self.index = ReceiptIndex(self.log.dir)
        # stored receipts (and their owners) the index lacks
        self._unindexed: list[tuple[dict[str, Any], str | None]] = []
        self._index_lock = threading.Lock()
        self.metrics = Metrics(self.backend_name)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix="glasshouse-run"
        )
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self.draining = False
        self._killing = False
        self._kill_timer: threading.Timer | None = None
        self.sessions = SessionManager(self)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()
        self.sessions.start()

    def begin_shutdown(self, grace_s: float | None = None) -> None:
        """Stop admitting; queued runs are refused; running ones get ``grace_s`` to finish,
        then are killed (their receipts record "killed: shutdown")."""
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        with self._lock:
            if self.draining:
                return
            self.draining = True
        self.sessions.begin_shutdown()
        _log.info("shutting down: %d run(s) in flight, grace %.1fs", self._running, grace)
        if grace <= 0:
            self._kill_in_flight()
        else:
            self._kill_timer = threading.Timer(grace, self._kill_in_flight)
            self._kill_timer.daemon = True
            self._kill_timer.start()

    def _kill_in_flight(self) -> None:
        self._killing = True
        killed = self.engine.kill_all("shutdown")
        if killed:
            _log.info("killed %d in-flight run(s) at shutdown", killed)

    def close(self) -> None:
        """Finish: kill what still runs, wait for its receipts, seal the sessions still open
        (reason "shutdown"), release the pool."""
        self.begin_shutdown(0)
        self._kill_in_flight()
        self._executor.shutdown(wait=True, cancel_futures=True)
        sealed = self.sessions.close_all("shutdown")
        if sealed:
            _log.info("sealed %d open session(s) at shutdown", sealed)
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if self.pool is not None:
            self.pool.close()
        close_backend(self.inner)
        self.index.close()

    # -- admission ------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        with self._lock:
            return max(0, self._admitted - self._running)

    def submit(
        self, request: RunRequest, streams: Streams | None = None, owner: str | None = None
    ) -> concurrent.futures.Future[RunResponse]:
        """Admit ``request`` or raise :class:`Rejected`. Never blocks (while the receipt store
        is failing, a small probe write per request). ``streams``: where the output goes as it
        happens, and who is told when the run starts (a streamed answer). ``owner``: the
        tenant the receipt belongs to."""
        if not self.draining:
            self.check_store()
        with self._lock:
            if self.draining:
                self.metrics.reject("draining")
                raise Rejected("draining", "the server is shutting down")
            if self._admitted >= self.config.max_concurrency + self.config.queue:
                self.metrics.reject("queue_full")
                raise Rejected(
                    "queue_full",
                    f"{self._admitted} runs in flight or queued (max {self.config.max_concurrency}"
                    f" running + {self.config.queue} queued): retry later",
                )
            self._admitted += 1
        try:
            return self._executor.submit(self._work, request, time.monotonic(), streams, owner)
        except RuntimeError as exc:  # executor shut down
            with self._lock:
                self._admitted -= 1
            raise Rejected("draining", "the server is shutting down") from exc

    def draining_error(self) -> Rejected:
        self.metrics.reject("draining")
        return Rejected("draining", "the server is shutting down")

    def write_error(self, exc: BaseException) -> ReceiptWriteError:
        return ReceiptWriteError(f"the receipt could not be stored: {exc}")

    def check_store(self) -> None:
        """Refuse a run whose receipt could not be stored: no code runs without a receipt."""
        why = self.log.unavailable()
        if why is not None:
            self.metrics.reject(STORE_UNAVAILABLE)
            raise Rejected(
                STORE_UNAVAILABLE,
                f"the receipt store cannot take receipts ({why}); no run starts until it can",
            )

    def _work(
        self,
        request: RunRequest,
        admitted_at: float,
        streams: Streams | None = None,
        owner: str | None = None,
    ) -> RunResponse:
        try:  # the store may have failed while this run was queued
            self.check_store()
        except Rejected:
            with self._lock:
                self._admitted -= 1
            raise
        with self._lock:
            if self.draining:
                self._admitted -= 1
                self.metrics.reject("draining")
                raise Rejected("draining", "the server is shutting down before this run started")
            self._running += 1
        try:
            if streams is not None:
                streams.started()
            return self.execute(request, admitted_at, streams, owner)
        finally:
            with self._lock:
                self._running -= 1
                self._admitted -= 1

    # -- one run ----------------------------------------------------------------------------
    def spec_for(self, request: RunRequest, workspace: Path | None) -> ExecutionSpec:
        files = {name: content.encode("utf-8") for name, content in request.files.items()}
        argv = _argv(request, files)
        spec_limits = _limits.limits_for(request, self.config)
        timeout = _limits.timeout_for(request, self.config)
        stdin = request.stdin.encode("utf-8") if request.stdin is not None else None
        if workspace is not None:  # unsandboxed: the server makes the workspace itself
            if request.limits.disk is None:  # no quota here: --disk is for sandboxes (a
                # request that asks for one gets the backend's refusal in its receipt)
                spec_limits = dataclasses.replace(spec_limits, disk_bytes=None)
            for name, data in files.items():
                target = workspace / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            env = dict(_PROCESS_ENV, HOME=str(workspace))
            return ExecutionSpec(
                argv=argv,
                env=env,
                cwd=str(workspace),
                stdin=stdin,
                timeout=timeout,
                limits=spec_limits,
                network=None,  # the process backend cannot isolate the network
                outputs=tuple(request.outputs),  # (it refuses them: in the receipt)
            )
        return ExecutionSpec(
            argv=argv,
            stdin=stdin,
            timeout=timeout,
            limits=spec_limits,
            network=request.network,
            files=files,
            outputs=tuple(request.outputs),
        )

    def _on_start(self, handle: Handle) -> None:
        # A run that got past kill_all's snapshot of in-flight runs is killed here.
        if self._killing:
            self.engine.backend.kill(handle, "shutdown")

    def execute(
        self,
        request: RunRequest,
        admitted_at: float | None = None,
        streams: Streams | None = None,
        owner: str | None = None,
    ) -> RunResponse:
        admitted_at = time.monotonic() if admitted_at is None else admitted_at
        workspace = None
        if not self.sandboxed:
            workspace = Path(tempfile.mkdtemp(prefix="glasshouse-ws-"))
        execution_id = new_execution_id()
        try:
            spec = self.spec_for(request, workspace)
            run = self.library.execute(
                spec,
                on_stdout=None if streams is None else streams.sink("stdout"),
                on_stderr=None if streams is None else streams.sink("stderr"),
                execution_id=execution_id,
                on_start=self._on_start,
            )
        finally:
            if workspace is not None:
                _remove_tree(workspace)
        data = dict(run.receipt_data)
        if request.code is not None:  # command/shell: the argv is artifacts.command_hash
            data["code_hash"] = hashlib.sha256(request.code.encode("utf-8")).hexdigest()
        stored = self._store(data, owner)
        result = run.result
        self.observe(result, time.monotonic() - admitted_at, data)
        return RunResponse(
            stdout=result.stdout.data.decode("utf-8", errors="replace"),
            stderr=result.stderr.data.decode("utf-8", errors="replace"),
            exit_code=result.shell_exit_code(),
            duration_ms=result.duration_ms,
            receipt_id=stored["execution_id"],
            timed_out=result.timed_out,
            truncated=result.stdout.truncated or result.stderr.truncated,
            backend=str(data["execution"]["backend"]),
            isolation=str(data["execution"]["isolation"]),
            error=result.error,
            outputs=answer_outputs(
                request.outputs,
                result.outputs,
                result.output_status,
                self.config.outputs_file_cap,
                self.config.outputs_total_cap,
            ),
        )

    def observe(self, result: ExecutionResult, seconds: float, receipt: dict[str, Any]) -> None:
        """Count a finished run (or session step) in the metrics."""
        lost = int((receipt.get("observation") or {}).get("events_lost") or 0)
        self.metrics.observe_run(outcome_of(result), seconds, lost)

    def _store(self, data: dict[str, Any], owner: str | None = None) -> dict[str, Any]:
        """Hooks, seal, sign and append ``data`` (the pipeline); then index it as ``owner``'s."""
        try:
            stored = self.library.pipeline.finish(data).data
        except Exception as exc:  # the log undid the append; while it cannot write, 503s
            self.metrics.receipt_error()
            _log.error("receipt %s not stored: %s", data.get("execution_id"), exc)
            raise self.write_error(exc) from exc
        self.index_stored(stored, owner)
        return stored

    def index_stored(self, stored: dict[str, Any], owner: str | None) -> None:
        """Index a stored receipt. The SQLite index is a cache of the files (reconciled at
        startup): a row it cannot take now is retried with the next receipt, never reported
        as a lost receipt."""
        with self._index_lock:
            if len(self._unindexed) < _MAX_UNINDEXED:  # beyond: the startup reconcile adds it
                self._unindexed.append((stored, owner))
            try:
                while self._unindexed:
                    self.index.add(*self._unindexed[0])
                    self._unindexed.pop(0)
            except Exception as exc:
                _log.warning("receipt index behind by %d row(s): %s", len(self._unindexed), exc)

    def receipt_owner(self, rid: str) -> tuple[bool, str | None]:
        """(known, owner) of the receipt ``rid``: from the index, or its backlog."""
        with self._index_lock:
            for data, owner in self._unindexed:
                if data.get("execution_id") == rid:
                    return True, owner
        return self.index.owner(rid)

    # -- reading ----------------------------------------------------------------------------
    def receipt_bytes(self, rid: str) -> bytes | None:
        """The stored receipt file (canonical JSON), or None if there is no such receipt."""
        return _read_if_there(self.log.path_for(rid))  # ValueError for an id not ours

    def envelope_bytes(self, rid: str) -> bytes | None:
        """The stored receipt's DSSE envelope, or None if there is none."""
        return _read_if_there(self.log.envelope_path_for(rid))

    def public_key(self) -> dict[str, str] | None:
        """The signing key's public half (PEM) and DSSE keyid; None when not signing."""
        key = self.config.signing_key
        if key is None:
            return None
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = key.public_key()
        pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        return {"keyid": dsse.keyid(public), "algorithm": "ed25519", "public_key": pem.decode()}

    def health(self) -> dict[str, Any]:
        caps: dict[str, bool | int | float | str] = {
            "network_isolation": self.sandboxed,
            "files": True,
            "stdin": True,
            "limits.memory": True,
            "limits.pids": True,
            "limits.output": True,
            "limits.disk": self.sandboxed,
            "command": True,
            "shell": True,
            "outputs": self.sandboxed,
            "max_output_file_bytes": self.config.outputs_file_cap,
            "max_outputs_bytes": self.config.outputs_total_cap,
            **_limits.capabilities(self.config),
            "max_body_bytes": self.config.body_limit,
            "profile": self.config.profile,
            "warm_pool": self.pool is not None,
            "sessions": self.sessions.available,
            "max_sessions": self.config.max_sessions,
            "max_file_bytes": self.config.max_file_bytes,
        }
        if self.pool is not None:
            pool: dict[str, int | str] = self.pool.stats()
        elif self.config.pool_size > 0:
            pool = {"size": 0, "note": f"backend {self.backend_name} cannot prewarm"}
        else:
            pool = {"size": 0}
        store_error = self.log.unavailable(probe=False)
        status = "draining" if self.draining else STORE_UNAVAILABLE if store_error else "ok"
        return {
            "status": status,
            "version": __version__,
            "backend": self.backend_name,
            "backend_choice": self.backend_choice,
            "isolation": self.inner.isolation,
            "sandboxed": self.sandboxed,
            "warning": None
            if self.sandboxed
            else "UNSANDBOXED: code runs as a plain host process (--allow-unsandboxed)",
            "capabilities": caps,
            "running": self.running,
            "queued": self.queued,
            "sessions_open": self.sessions.count(),
            "max_concurrency": self.config.max_concurrency,
            "queue_limit": self.config.queue,
            "pool": pool,
            "receipt_store": {
                "writable": store_error is None,
                "free_bytes": self._free_bytes(),
                "error": store_error,
            },
        }

    def _free_bytes(self) -> int | None:
        try:
            return self.log.free_bytes()
        except OSError:
            return None

    def gauges(self) -> dict[str, tuple[str, Callable[[], int]]]:
        out: dict[str, tuple[str, Callable[[], int]]] = {
            "glasshouse_runs_in_flight": ("Runs executing now.", lambda: self.running),
            "glasshouse_queue_depth": ("Runs admitted and waiting for a worker.", self._q),
            "glasshouse_receipts_indexed": ("Receipts in the SQLite index.", self.index.count),
            "glasshouse_sessions_open": ("Sessions open (running or paused).", self.sessions.count),
        }
        if self.pool is not None:
            pool = self.pool
            out["glasshouse_pool_ready"] = ("Prewarmed sandbox slots ready.", pool.ready)
        return out

    def _q(self) -> int:
        return self.queued


@contextlib.contextmanager
def running(config: ServerConfig) -> Any:
    """A started Runner, closed on exit (for tests and embedding)."""
    runner = Runner(config)
    runner.start()
    try:
        yield runner
    finally:
        runner.close()


def _argv(request: RunRequest, files: dict[str, bytes]) -> list[str]:
    """The program to run; long ``code`` goes into ``files`` as :data:`MAIN_FILE`."""
    if request.command is not None:
        return list(request.command)
    if request.shell is not None:
        return ["sh", "-c", request.shell]
    code = request.code or ""
    if len(code.encode("utf-8")) <= MAX_ARGV_CODE:
        return ["python3", "-c", code]
    files[MAIN_FILE] = code.encode("utf-8")
    return ["python3", MAIN_FILE]


def answer_outputs(
    names: list[str],
    copied: dict[str, bytes],
    status: dict[str, str],
    file_cap: int,
    total_cap: int,
) -> dict[str, OutputFile]:
    """The requested outputs for the answer: base64 content up to the caps, else why not."""
    out: dict[str, OutputFile] = {}
    budget = total_cap
    for name in names:
        data = copied.get(name)
        if data is None:
            why = status.get(name) or "not copied back"
            out[name] = OutputFile(content_b64=None, size=None, sha256=None, error=why)
            continue
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        error = None
        if size > file_cap:
            error = f"{size} bytes: over the per-file cap of {file_cap} bytes"
        elif size > budget:
            error = f"{size} bytes: over what is left of the {total_cap}-byte total cap"
        content = None if error else base64.b64encode(data).decode("ascii")
        if error is None:
            budget -= size
        out[name] = OutputFile(content_b64=content, size=size, sha256=digest, error=error)
    return out


def _remove_tree(path: Path) -> None:
    """Remove an unsandboxed run's workspace, however deep the tree its code left."""
    try:
        shutil.rmtree(path)
    except (OSError, RecursionError):  # (RecursionError: ~1,000 nested directories)
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


def _read_if_there(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
