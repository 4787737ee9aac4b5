"""glasshouse-server's HTTP API, in process: the contract, every bad input, limits, the queue,
auth, receipt persistence and the SQLite index. Runs use the real process backend and, when
this host can run it, the real bubblewrap sandbox."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import sqlite3
import threading
from pathlib import Path

import pytest
from _support import until
from server_helpers import API_BACKENDS, api, config, require_backend

from glasshouse.receipt.canonical import check_digest
from glasshouse.receipt.model import Receipt
from glasshouse.server._index import INDEX_NAME
from glasshouse.server._runner import MAX_ARGV_CODE, Runner


@pytest.fixture(params=API_BACKENDS, scope="module")
def backend_name(request: pytest.FixtureRequest) -> str:
    name, probe = request.param
    require_backend(name, probe)
    return name


@pytest.fixture(scope="module")
def client(backend_name: str, tmp_path_factory: pytest.TempPathFactory):
    with api(config(tmp_path_factory.mktemp(backend_name), backend_name)) as c:
        yield c


def _ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


# -- the contract ---------------------------------------------------------------------------
def test_run_print_and_receipt(client, backend_name: str) -> None:
    code = "print(2+2)"
    body = _ok(client.post("/run", json={"code": code}))
    assert body["stdout"] == "4\n" and body["stderr"] == ""
    assert body["exit_code"] == 0 and body["timed_out"] is False and body["truncated"] is False
    assert body["backend"] == backend_name
    assert body["isolation"] == ("none" if backend_name == "process" else "namespaces")
    assert body["error"] is None and body["duration_ms"] >= 0
    receipt_response = client.get(f"/receipts/{body['receipt_id']}")
    data = _ok(receipt_response)
    receipt = Receipt.model_validate(data)
    assert receipt.execution_id == body["receipt_id"]
    assert receipt.code_hash == hashlib.sha256(code.encode()).hexdigest()
    assert receipt.outcome.exit_code == 0
    assert receipt.artifacts.stdout_hash == hashlib.sha256(b"4\n").hexdigest()
    assert receipt.sequence is not None and check_digest(data)


def test_stdin_files_and_exit_code(client) -> None:
    code = (
        "import sys\n"
        "data = sys.stdin.read()\n"
        "print(data.upper(), open('dir/in.txt').read())\n"
        "print('oops', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    body = _ok(
        client.post(
            "/run", json={"code": code, "stdin": "abc", "files": {"dir/in.txt": "file text"}}
        )
    )
    assert body["stdout"] == "ABC file text\n"
    assert body["stderr"] == "oops\n"
    assert body["exit_code"] == 3 and body["error"] is None


def test_timeout_gets_receipt(client) -> None:
    body = _ok(client.post("/run", json={"code": "import time; time.sleep(30)", "timeout": 1}))
    assert body["timed_out"] is True and body["exit_code"] == 124
    receipt = Receipt.model_validate(_ok(client.get(f"/receipts/{body['receipt_id']}")))
    assert receipt.outcome.timed_out is True


def test_killed_by_signal_gets_receipt(client) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    body = _ok(client.post("/run", json={"code": code}))
    assert body["exit_code"] == 128 + 9
    receipt = Receipt.model_validate(_ok(client.get(f"/receipts/{body['receipt_id']}")))
    assert receipt.outcome.signal == 9 or receipt.outcome.exit_code == 137


def test_output_truncated_but_fully_hashed(client) -> None:
    n = 300_000
    code = f"import sys; sys.stdout.write('x' * {n})"
    body = _ok(client.post("/run", json={"code": code, "limits": {"output": 1000}}))
    assert body["truncated"] is True and body["stdout"] == "x" * 1000
    receipt = Receipt.model_validate(_ok(client.get(f"/receipts/{body['receipt_id']}")))
    assert receipt.artifacts.stdout_truncated is True
    assert receipt.artifacts.stdout_bytes == n
    assert receipt.artifacts.stdout_hash == hashlib.sha256(b"x" * n).hexdigest()


def test_code_longer_than_an_argv_string(client) -> None:
    code = "x = 1\n" * (MAX_ARGV_CODE // 6 + 100) + "print('long', x)"
    assert len(code) > MAX_ARGV_CODE
    body = _ok(client.post("/run", json={"code": code}))
    assert body["stdout"] == "long 1\n", body


def test_memory_limit(client, backend_name: str) -> None:
    code = "b = bytearray(200 * 1024 * 1024); print('allocated')"
    body = _ok(client.post("/run", json={"code": code, "limits": {"memory": 64 << 20}}))
    assert body["exit_code"] != 0 and "allocated" not in body["stdout"]


def test_network_off_by_default(client, backend_name: str) -> None:
    if backend_name == "process":
        health = _ok(client.get("/health"))
        assert health["capabilities"]["network_isolation"] is False
        pytest.skip("the process backend cannot isolate the network (and /health says so)")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('reached')\n"
            "except OSError as e:\n"
            "    print('blocked', type(e).__name__)\n"
        )
        off = _ok(client.post("/run", json={"code": code}))
        assert off["stdout"].startswith("blocked"), off
        on = _ok(client.post("/run", json={"code": code, "network": True}))
        assert on["stdout"] == "reached\n", on


def test_health_and_openapi(client, backend_name: str) -> None:
    health = _ok(client.get("/health"))
    assert health["status"] == "ok" and health["backend"] == backend_name
    assert health["sandboxed"] is (backend_name != "process")
    if backend_name == "process":
        assert "UNSANDBOXED" in health["warning"]
    schema = _ok(client.get("/openapi.json"))
    assert "RunRequest" in schema["components"]["schemas"]
    assert set(schema["paths"]) >= {"/run", "/health", "/receipts", "/receipts/{receipt_id}"}
    assert client.get("/docs").status_code == 200


def test_metrics_exposition(client) -> None:
    _ok(client.post("/run", json={"code": "pass"}))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE "))
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    ok = [v for k, v in samples.items() if k.startswith("glasshouse_runs_total") and "ok" in k]
    assert ok and ok[0] >= 1
    assert samples['glasshouse_run_duration_seconds_bucket{le="+Inf"}'] >= 1
    assert "glasshouse_queue_depth" in samples
    assert "glasshouse_observer_events_lost_total" in samples


# -- bad input: every case is a 4xx with {"error": {"code", "message"}} ----------------------
def _json_post(client, body: bytes, content_type: str = "application/json"):
    return client.post("/run", content=body, headers={"content-type": content_type})


BAD_RUNS = [
    ("malformed json", b'{"code": "print(1)"', 400, "invalid_json"),
    ("not utf-8", b'{"code": "\xff\xfe"}', 400, "invalid_utf8"),
    ("NaN is not JSON", b'{"code": "1", "timeout": NaN}', 400, "invalid_json"),
    ("array body", b"[1, 2]", 422, "invalid_request"),
    ("missing code", b'{"timeout": 5}', 422, "missing_code"),
    ("code not a string", b'{"code": 42}', 422, "invalid_request"),
    ("timeout as string", b'{"code": "1", "timeout": "60"}', 422, "invalid_request"),
    ("timeout 0", b'{"code": "1", "timeout": 0}', 422, "invalid_request"),
    ("timeout 301", b'{"code": "1", "timeout": 301}', 422, "invalid_request"),
    ("timeout bool", b'{"code": "1", "timeout": true}', 422, "invalid_request"),
    ("unknown field", b'{"code": "1", "tiemout": 5}', 422, "invalid_request"),
    ("unknown limit", b'{"code": "1", "limits": {"cpu": 1}}', 422, "invalid_request"),
    ("memory too small", b'{"code": "1", "limits": {"memory": 10}}', 422, "invalid_request"),
    ("network not bool", b'{"code": "1", "network": "yes"}', 422, "invalid_request"),
    ("NUL in code", b'{"code": "print(1)\\u0000"}', 422, "invalid_request"),
    ("lone surrogate", b'{"code": "\\ud800"}', 422, "invalid_request"),
    ("file escapes", b'{"code": "1", "files": {"../x": "y"}}', 422, "invalid_request"),
    ("absolute file", b'{"code": "1", "files": {"/etc/x": "y"}}', 422, "invalid_request"),
    ("file content type", b'{"code": "1", "files": {"a": 1}}', 422, "invalid_request"),
    ("empty file name", b'{"code": "1", "files": {"": "y"}}', 422, "invalid_request"),
    ("dot segment", b'{"code": "1", "files": {"a/./b": "y"}}', 422, "invalid_request"),
    # was a 500 with the process backend (the server's own workspace could not be made)
    ("file and dir", b'{"code": "1", "files": {"a": "1", "a/b": "2"}}', 422, "invalid_request"),
]


@pytest.mark.parametrize(("why", "body", "status", "code"), BAD_RUNS, ids=[b[0] for b in BAD_RUNS])
def test_bad_run_requests(client, why: str, body: bytes, status: int, code: str) -> None:
    response = _json_post(client, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_wrong_content_type(client) -> None:
    response = _json_post(client, b'{"code": "print(1)"}', "text/plain")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_body_over_the_limit(client) -> None:
    big = json.dumps({"code": "#" + "x" * (1 << 20)}).encode()
    response = _json_post(client, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(20):
            yield b" " * (64 << 10)

    response = client.post("/run", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/run", 405, "method_not_allowed"),
        ("PUT", "/health", 405, "method_not_allowed"),
        ("DELETE", "/receipts/exec-1700000000000-00000000000000000000", 405, "method_not_allowed"),
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/receipts/exec-1", 400, "invalid_receipt_id"),
        ("GET", "/receipts/exec-1700000000000-0000000000000000000g", 400, "invalid_receipt_id"),
        ("GET", "/receipts/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        ("GET", "/receipts/%2e%2e", 400, "invalid_receipt_id"),
        ("GET", "/receipts/HEAD", 400, "invalid_receipt_id"),
        # the log's pattern ends in "$", which also matches before a trailing newline
        ("GET", "/receipts/exec-1700000000000-00000000000000000000%0a", 400, "invalid_receipt_id"),
        ("GET", "/receipts/index.sqlite3", 400, "invalid_receipt_id"),
        ("GET", "/receipts/exec-1700000000000-00000000000000000000", 404, "not_found"),
        ("GET", "/receipts?limit=0", 422, "invalid_request"),
        ("GET", "/receipts?limit=abc", 422, "invalid_request"),
        ("GET", "/receipts?cursor=abc", 400, "invalid_cursor"),
        # 19 digits overflow SQLite's integers: was a 500 before the cursor pattern
        ("GET", "/receipts?cursor=9999999999999999999", 400, "invalid_cursor"),
        ("GET", "/receipts?cursor=99999999999999999999", 422, "invalid_request"),
    ],
)
def test_bad_paths_and_ids(client, method: str, path: str, status: int, code: str) -> None:
    response = client.request(method, path)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# -- concurrency, the queue, health while full ----------------------------------------------
def test_queue_full_gives_429_and_health_answers(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    code = (
        f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('done')"
    )
    cfg = config(tmp_path, "process", max_concurrency=1, queue=1)
    with api(cfg) as client:
        results: list[dict] = []

        def post() -> None:
            results.append(client.post("/run", json={"code": code, "timeout": 60}).json())

        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        until(lambda: client.get("/health").json()["queued"] == 1, what="one run queued")
        health = client.get("/health").json()  # answers although every place is taken
        assert health["running"] == 1 and health["queued"] == 1
        refused = client.post("/run", json={"code": "print(1)"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        metrics = client.get("/metrics").text
        assert "glasshouse_queue_depth 1" in metrics
        assert 'glasshouse_runs_rejected_total{reason="queue_full"} 1' in metrics
        gate.touch()
        for t in threads:
            t.join(timeout=60)
        assert [r["stdout"] for r in results] == ["done\n", "done\n"]
        assert client.get("/health").json()["queued"] == 0


def test_runs_use_at_most_max_concurrency(tmp_path: Path) -> None:
    marker_dir = tmp_path / "live"
    marker_dir.mkdir()
    gate = tmp_path / "go"
    code = (
        "import os, time, uuid\n"
        f"d = {str(marker_dir)!r}; p = os.path.join(d, uuid.uuid4().hex); open(p, 'w').close()\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
        "print(len(os.listdir(d))); os.unlink(p)\n"
    )
    with api(config(tmp_path, "process", max_concurrency=2, queue=10)) as client:
        results: list[dict] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(client.post("/run", json={"code": code}).json())
            )
            for _ in range(5)
        ]
        for t in threads:
            t.start()
        until(lambda: len(list(marker_dir.iterdir())) == 2, what="two runs started")
        until(lambda: client.get("/health").json()["queued"] == 3, what="three runs queued")
        assert len(list(marker_dir.iterdir())) == 2  # the other three wait in the queue
        gate.touch()
        for t in threads:
            t.join(timeout=60)
        assert all(int(r["stdout"]) <= 2 for r in results)


# -- auth -------------------------------------------------------------------------------------
def test_bearer_token(tmp_path: Path) -> None:
    token = "s3cret-token-0123456789"
    with api(config(tmp_path, "process", token=token)) as client:
        assert client.get("/health").status_code == 200  # liveness needs no token
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            response = client.post("/run", json={"code": "print(1)"}, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert client.get("/receipts", headers=headers).status_code == 401
            assert client.get("/metrics", headers=headers).status_code == 401
        good = {"Authorization": f"Bearer {token}"}
        body = _ok(client.post("/run", json={"code": "print(1)"}, headers=good))
        assert body["stdout"] == "1\n"
        assert client.get(f"/receipts/{body['receipt_id']}", headers=good).status_code == 200


# -- failures still get receipts --------------------------------------------------------------
def test_backend_failure_gets_receipt(tmp_path: Path) -> None:
    cfg = config(tmp_path, "fake", backend_options={"fail_start": "sandbox crashed"})
    with api(cfg) as client:
        body = _ok(client.post("/run", json={"code": "print(1)"}))
        assert body["exit_code"] == 125 and "sandbox crashed" in body["error"]
        receipt = Receipt.model_validate(_ok(client.get(f"/receipts/{body['receipt_id']}")))
        assert "sandbox crashed" in (receipt.outcome.error or "")
        metrics = client.get("/metrics").text
        assert 'glasshouse_runs_total{backend="fake",outcome="error"} 1' in metrics


def test_process_backend_needs_explicit_permission(tmp_path: Path) -> None:
    from glasshouse.core.execution import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="allow-unsandboxed"):
        Runner(config(tmp_path, "process", allow_unsandboxed=False))


# -- persistence and the index ---------------------------------------------------------------
def test_listing_pages_and_index_rebuild(tmp_path: Path) -> None:
    cfg = config(tmp_path, "process")
    with api(cfg) as client:
        ids = [
            _ok(client.post("/run", json={"code": f"print({i})"}))["receipt_id"] for i in range(5)
        ]
        page = _ok(client.get("/receipts?limit=2"))
        assert [r["id"] for r in page["receipts"]] == ids[::-1][:2]
        seen = [r["id"] for r in page["receipts"]]
        while page["next_cursor"] is not None:
            page = _ok(client.get(f"/receipts?limit=2&cursor={page['next_cursor']}"))
            seen += [r["id"] for r in page["receipts"]]
        assert seen == ids[::-1]
        first = _ok(client.get("/receipts?limit=10"))
    receipts_dir = cfg.receipts_dir
    # the chain: each receipt links to the one before
    stored = [json.loads((receipts_dir / f"{i}.json").read_text()) for i in ids]
    for before, after in itertools.pairwise(stored):
        assert after["previous_digest"] == before["digest"]
        assert after["sequence"] == before["sequence"] + 1

    for suffix in ("", "-wal", "-shm"):
        (receipts_dir / (INDEX_NAME + suffix)).unlink(missing_ok=True)
    with api(cfg) as client:
        assert client.runner.index.added == 5
        assert _ok(client.get("/receipts?limit=10")) == first

    (receipts_dir / INDEX_NAME).write_bytes(b"this is not an sqlite database" * 100)
    with api(cfg) as client:
        assert client.runner.index.rebuilt is True
        assert _ok(client.get("/receipts?limit=10")) == first
        # a receipt file deleted behind the server's back leaves the index at restart
        (receipts_dir / f"{ids[0]}.json").unlink()
    with api(cfg) as client:
        assert client.runner.index.dropped == 1
        assert [r["id"] for r in _ok(client.get("/receipts?limit=10"))["receipts"]] == ids[:0:-1]
        assert client.get(f"/receipts/{ids[0]}").status_code == 404


def test_index_uses_wal(tmp_path: Path) -> None:
    cfg = config(tmp_path, "process")
    with api(cfg) as client:
        _ok(client.post("/run", json={"code": "pass"}))
        db = sqlite3.connect(cfg.receipts_dir / INDEX_NAME)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()


@pytest.mark.parametrize("backend", ["process", "sandbox"])
def test_run_killed_between_start_and_release_gets_receipt(tmp_path: Path, backend: str) -> None:
    """A shutdown kill can land after the sandbox started but before its gate opened."""
    if backend == "sandbox":
        require_backend("sandbox", "glasshouse.backends.sandbox")
    from glasshouse.server.models import RunRequest

    runner = Runner(config(tmp_path, backend))
    try:
        runner._killing = True  # as after kill_all: _on_start kills each new run at once
        response = runner.execute(RunRequest(code="print('never')"))
        assert response.error == "killed: shutdown", response
        assert response.stdout == ""
        receipt = Receipt.model_validate_json(runner.receipt_bytes(response.receipt_id))
        assert receipt.outcome.error == "killed: shutdown"
    finally:
        runner.close()


def test_backend_raising_unexpectedly_still_gets_receipt(tmp_path: Path) -> None:
    """Defense in depth: an exception the Engine does not turn into a result (a backend
    bug, like the BrokenPipeError above) still ends in a stored receipt and a 200."""
    with api(config(tmp_path, "fake")) as client:
        fake = client.runner.engine.backend.inner

        def broken_wait(handle):
            raise OSError(5, "Input/output error")

        fake.wait = broken_wait
        body = _ok(client.post("/run", json={"code": "print(1)"}))
        assert body["exit_code"] == 125 and "OSError" in body["error"]
        receipt = Receipt.model_validate(_ok(client.get(f"/receipts/{body['receipt_id']}")))
        assert "Input/output error" in (receipt.outcome.error or "")
        assert fake.live == set()  # the Engine still cleaned up


def test_draining_refuses_new_and_queued_runs(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    code = (
        f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint('done')"
    )
    with api(config(tmp_path, "process", max_concurrency=1, queue=2)) as client:
        results: dict[str, object] = {}

        def post(name: str) -> None:
            results[name] = client.post("/run", json={"code": code})

        running = threading.Thread(target=post, args=("running",))
        running.start()
        until(lambda: client.get("/health").json()["running"] == 1, what="one run running")
        queued = threading.Thread(target=post, args=("queued",))
        queued.start()
        until(lambda: client.get("/health").json()["queued"] == 1, what="one run queued")
        client.runner.begin_shutdown(grace_s=300)  # in flight may finish; nothing new starts
        assert client.get("/health").json()["status"] == "draining"
        refused = client.post("/run", json={"code": "print(1)"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        gate.touch()
        running.join(timeout=60)
        queued.join(timeout=60)
        assert results["running"].json()["stdout"] == "done\n"
        assert results["queued"].status_code == 503  # admitted, but never started
        assert 'glasshouse_runs_rejected_total{reason="draining"} 2' in client.get("/metrics").text


def test_code_runs_without_the_servers_privileges(tmp_path: Path) -> None:
    require_backend("sandbox", "glasshouse.backends.sandbox")
    cfg = config(tmp_path, "sandbox")
    token_file = tmp_path / "token"
    token_file.write_text("secret")
    code = (
        "import os\n"
        "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]\n"
        f"print(os.getuid(), caps, os.path.exists({str(cfg.receipts_dir)!r}),"
        f" os.path.exists({str(token_file)!r}), os.getpid() != {os.getpid()})\n"
    )
    with api(cfg) as client:
        body = _ok(client.post("/run", json={"code": code}))
    assert body["stdout"] == "1000 0000000000000000 False False True\n", body


def test_host_observation_is_wired_and_fail_open(tmp_path: Path) -> None:
    """--profile host: one observer for the server's lifetime; each receipt says what it saw
    or, where BPF cannot load here, why not (the run goes on either way)."""
    with api(config(tmp_path, "process", profile="host")) as client:
        observers = client.runner.engine.observers
        assert len(observers) == 1
        body = _ok(client.post("/run", json={"code": "open('f', 'w').write('x'); print(1)"}))
        assert body["stdout"] == "1\n"
        receipt = Receipt.model_validate(_ok(client.get(f"/receipts/{body['receipt_id']}")))
        block = receipt.observation
        assert block.profile == "host"
        report = block.observers[0]
        if report.available:
            assert report.name == "ebpf" and "process_tree" in block.collected
            assert any(n.argv[:2] == ["python3", "-c"] for n in receipt.process_tree)
            from glasshouse.observe import host_observer

            assert observers[0] is host_observer(fallback=False)  # loaded once per process
        else:
            assert report.reason  # why it is missing is recorded, never silent
