"""Helpers for the server tests: in-process apps and a real server subprocess."""

from __future__ import annotations

import contextlib
import importlib
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import until

from glasshouse.server import Runner, ServerConfig, create_app

#: (backend, probe module) pairs the API tests run against; sandbox skipped if it can't run.
API_BACKENDS = [
    pytest.param(("process", None), id="process"),
    pytest.param(("sandbox", "glasshouse.backends.sandbox"), id="sandbox"),
]


def require_backend(name: str, probe_module: str | None) -> None:
    if probe_module is None:
        return
    try:
        ok, why = importlib.import_module(probe_module).probe()
    except Exception as exc:
        ok, why = False, f"probe failed: {exc}"
    if not ok:
        pytest.skip(f"{name} cannot run here: {why}")


def config(tmp_path: Path, backend: str = "process", **overrides: Any) -> ServerConfig:
    options: dict[str, Any] = {
        "backend": backend,
        "receipts_dir": tmp_path / "receipts",
        "allow_unsandboxed": backend == "process",
        "profile": "disabled",
        "max_concurrency": 2,
        "queue": 4,
    }
    options.update(overrides)
    return ServerConfig(**options)


@contextlib.contextmanager
def api(cfg: ServerConfig) -> Iterator[Any]:
    """A TestClient over a fresh app (lifespan run: the runner starts and closes)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    runner = Runner(cfg)
    with TestClient(create_app(runner), raise_server_exceptions=False) as client:
        client.runner = runner  # type: ignore[attr-defined]
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``glasshouse-server`` as a real subprocess on a loopback port."""

    def __init__(self, args: list[str], tmp_path: Path, nofile: int | None = None) -> None:
        """``nofile``: the server's RLIMIT_NOFILE (soft and hard), as ``ulimit -n`` sets it."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.receipts = tmp_path / "receipts"
        self.log = tmp_path / "server.log"
        cmd = [sys.executable, "-m", "glasshouse.server.cli", "--port", str(self.port)]
        cmd += ["--receipts-dir", str(self.receipts), "--log-level", "warning", *args]
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        limit = None if nofile is None else _nofile_limit(nofile)
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_fh, stderr=subprocess.STDOUT, preexec_fn=limit
        )

    def wait_ready(self, limit_s: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            try:
                return httpx.get(self.url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until(ready, timeout=limit_s, interval=0.05, what=f"{self.url}/health to answer 200")

    def output(self) -> str:
        self._log_fh.flush()
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        self.terminate()
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._log_fh.close()
        return code


def _nofile_limit(n: int) -> Any:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return limit


@contextlib.contextmanager
def server_process(
    args: list[str], tmp_path: Path, nofile: int | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(args, tmp_path, nofile)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class Gate:
    """A loopback listener a run blocks on until the test releases it: the run's code
    connects and waits for one byte (``wait_code``), the test calls :meth:`release`. Lets a
    test act while a run is provably in flight, with no sleeps. A sandboxed run needs
    ``network: true`` to reach the host's loopback."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(60)
        self.port = int(self.sock.getsockname()[1])

    def wait_code(self) -> str:
        """Python statements that block until :meth:`release`."""
        return (
            "import socket as _s\n"
            f"_c = _s.create_connection(('127.0.0.1', {self.port}))\n"
            "_c.recv(1)\n_c.close()\n"
        )

    def release(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.sendall(b"g")

    def close(self) -> None:
        self.sock.close()


def events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(type, data) of a streamed answer, SSE or NDJSON, as they arrive."""
    import json

    if response.headers["content-type"].startswith("application/x-ndjson"):
        for line in response.iter_lines():
            if line:
                item = json.loads(line)
                assert set(item) == {"type", "data"}, item
                yield item["type"], item["data"]
        return
    kind, data = None, []
    for line in response.iter_lines():
        if line == "":
            if kind is not None:
                yield kind, json.loads("\n".join(data))
            kind, data = None, []
        elif line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")
