"""glasshouse-server as a real subprocess on a loopback port: SIGTERM with runs in flight,
startup refusals, the typed client and ``glasshouse remote run``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from _support import until
from server_helpers import API_BACKENDS, require_backend, server_process

from glasshouse.client import Client, ServerError
from glasshouse.receipt.model import Receipt
from glasshouse.server.cli import is_loopback


def _args(backend: str) -> list[str]:
    args = ["--backend", backend, "--profile", "disabled", "--max-concurrency", "2"]
    return [*args, "--allow-unsandboxed"] if backend == "process" else args


@pytest.fixture(params=API_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name, probe = request.param
    require_backend(name, probe)
    return name


def _post_in_thread(url: str, body: dict, out: list) -> threading.Thread:
    def go() -> None:
        out.append(httpx.post(url + "/run", json=body, timeout=120))

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def _wait_running(url: str, n: int) -> None:
    until(
        lambda: httpx.get(url + "/health", timeout=5).json()["running"] >= n,
        what=f"{n} runs running",
    )


def test_sigterm_kills_in_flight_runs_and_writes_their_receipts(
    backend_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    code = f"open({str(marker)!r}, 'w').close()\nimport time\ntime.sleep(60)"
    if backend_name != "process":  # the sandbox cannot write to the host: print instead
        code = "import sys, time\nprint('started', flush=True)\ntime.sleep(60)"
    with server_process([*_args(backend_name), "--shutdown-grace", "0"], tmp_path) as server:
        responses: list[httpx.Response] = []
        threads = [_post_in_thread(server.url, {"code": code}, responses) for _ in range(2)]
        _wait_running(server.url, 2)
        if backend_name == "process":
            until(marker.exists, what="the runs' code to start")
        server.terminate()
        for t in threads:
            t.join(timeout=60)
        returncode = server.stop()
    assert returncode in (0, -signal.SIGTERM), server.output()
    assert len(responses) == 2
    for response in responses:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["error"] == "killed: shutdown", body
        receipt_file = server.receipts / f"{body['receipt_id']}.json"
        receipt = Receipt.model_validate_json(receipt_file.read_text())
        assert receipt.outcome.error == "killed: shutdown"


def test_sigterm_lets_short_runs_finish(tmp_path: Path) -> None:
    code = "import time; time.sleep(1); print('finished')"
    with server_process([*_args("process"), "--shutdown-grace", "30"], tmp_path) as server:
        responses: list[httpx.Response] = []
        thread = _post_in_thread(server.url, {"code": code}, responses)
        _wait_running(server.url, 1)
        server.terminate()
        thread.join(timeout=60)
        server.stop()
    body = responses[0].json()
    assert body["stdout"] == "finished\n" and body["error"] is None
    assert (server.receipts / f"{body['receipt_id']}.json").exists()


def _server_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.server.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_non_loopback_needs_a_token(tmp_path: Path) -> None:
    out = _server_cli("--host", "0.0.0.0", "--backend", "process", "--allow-unsandboxed")
    assert out.returncode == 2 and "requires --token-file" in out.stderr
    out = _server_cli("--backend", "process", "--receipts-dir", str(tmp_path))
    assert out.returncode == 2 and "--allow-unsandboxed" in out.stderr
    short = tmp_path / "token"
    short.write_text("abc\n")
    out = _server_cli("--token-file", str(short), "--backend", "process", "--allow-unsandboxed")
    assert out.returncode == 2 and "at least 16" in out.stderr
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("example.internal")


def test_client_and_remote_run(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("client-test-token-0123456789\n")
    token_file.chmod(0o600)
    args = [*_args("process"), "--token-file", str(token_file)]
    with server_process(args, tmp_path) as server:
        with pytest.raises(ServerError) as denied:
            Client(server.url).run("print(1)")
        assert denied.value.status == 401 and denied.value.code == "unauthorized"
        with Client(server.url, token="client-test-token-0123456789") as client:
            result = client.run("import sys; print(sys.stdin.read()); sys.exit(2)", stdin="in")
            assert result.stdout == "in\n" and result.exit_code == 2 and not result.ok
            receipt = client.receipt(result.receipt_id)
            assert receipt.execution_id == result.receipt_id and receipt.outcome.exit_code == 2
            page = client.receipts(limit=1)
            assert page.receipts[0].id == result.receipt_id
            assert client.health()["backend"] == "process"
            with pytest.raises(ServerError) as bad:
                client.run("print(1)", timeout=1000)
            assert bad.value.status == 422 and bad.value.code == "invalid_request"
            with pytest.raises(ServerError) as missing:
                client.receipt("exec-1700000000000-00000000000000000000")
            assert missing.value.status == 404

        script = tmp_path / "hello.py"
        script.write_text("print('hello from', open('data.txt').read())\nraise SystemExit(7)\n")
        data = tmp_path / "data.txt"
        data.write_text("a file")
        receipt_path = tmp_path / "receipt.json"
        out = subprocess.run(
            [
                *(sys.executable, "-m", "glasshouse.cli", "remote", "run", str(script)),
                *("--url", server.url, "--token-file", str(token_file), "--file", str(data)),
                *("--receipt", str(receipt_path)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 7, out.stderr
        assert out.stdout == "hello from a file\n"
        assert "receipt exec-" in out.stderr
        saved = json.loads(receipt_path.read_text())
        assert saved["outcome"]["exit_code"] == 7
