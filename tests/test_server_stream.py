"""Streamed answers of POST /run (``Accept: text/event-stream`` or ``application/x-ndjson``),
against a real server process, on the process backend and the real sandbox.

A run blocks on a loopback :class:`Gate` the test releases only after an event arrived, so
"as it happens" is shown without any timing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from fs_helpers import small_tmpfs
from server_helpers import (
    API_BACKENDS,
    Gate,
    api,
    config,
    events,
    require_backend,
    server_process,
)

from glasshouse.server._events import NDJSON, SSE, stream_mode

MODES = [pytest.param(SSE, id="sse"), pytest.param(NDJSON, id="ndjson")]
_ANSWER_KEYS = {
    "stdout",
    "stderr",
    "exit_code",
    "duration_ms",
    "receipt_id",
    "timed_out",
    "truncated",
    "backend",
    "isolation",
    "error",
    "outputs",
}


def _args(name: str) -> list[str]:
    extra = ["--allow-unsandboxed"] if name == "process" else []
    return ["--backend", name, *extra, "--profile", "disabled", "--max-concurrency", "2"]


@pytest.fixture(params=API_BACKENDS, scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name, probe = request.param
    require_backend(name, probe)
    with server_process(_args(name), tmp_path_factory.mktemp(name)) as srv:
        yield srv


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.close()


def _post(url: str, body: dict, mode: str):
    return httpx.stream(
        "POST", url + "/run", json={"network": True, **body}, headers={"Accept": mode}, timeout=60
    )


def _result(kinds: list[tuple[str, object]]) -> dict:
    assert kinds[-1][0] == "result", kinds
    assert [k for k, _ in kinds].count("result") == 1
    result = kinds[-1][1]
    assert isinstance(result, dict) and set(result) == _ANSWER_KEYS
    return result


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _joined(kinds: list[tuple[str, object]], stream: str) -> str:
    return "".join(str(d) for k, d in kinds if k == stream)


@pytest.mark.parametrize("mode", MODES)
def test_output_arrives_while_the_run_is_in_flight(server, gate, mode: str) -> None:
    code = "import sys\nprint('first', flush=True)\n" + gate.wait_code() + "print('second')\n"
    code += "sys.stderr.write('done')\n"
    with _post(server.url, {"code": code}, mode) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(mode)
        assert response.headers["cache-control"] == "no-cache"
        stream = events(response)
        assert next(stream) == ("stdout", "first\n")
        # the program is still waiting at the gate: the event came before its end
        assert httpx.get(server.url + "/health", timeout=10).json()["running"] == 1
        gate.release()
        rest = list(stream)
    result = _result(rest)
    assert result["stdout"] == "first\nsecond\n" and result["stderr"] == "done"
    assert _joined(rest, "stdout") == "second\n" and _joined(rest, "stderr") == "done"
    assert result["exit_code"] == 0
    # stored before the result event went out
    stored = httpx.get(server.url + f"/receipts/{result['receipt_id']}", timeout=10)
    assert stored.status_code == 200


def test_result_is_exactly_the_json_answer(server) -> None:
    with _post(server.url, {"shell": "printf 'x\\033\\n'; exit 3"}, SSE) as response:
        lines = list(response.iter_lines())
    data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    answer = json.loads(data[-1])
    # the bytes a non-streaming answer has: compact, UTF-8, no ASCII escaping
    assert data[-1] == json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
    assert answer["stdout"] == "x\x1b\n" and answer["exit_code"] == 3
    plain = httpx.post(server.url + "/run", json={"shell": "exit 3"}, timeout=60).json()
    assert list(answer) == list(plain)


@pytest.mark.parametrize("mode", MODES)
def test_text_not_utf8_is_replaced_and_split_characters_kept(server, gate, mode: str) -> None:
    """'é' split across two chunks stays 'é'; 0xff is replaced; the receipt hashes the raw
    bytes."""
    code = (
        "import sys\nw = sys.stdout.buffer\nw.write(b'a\\xc3'); w.flush()\n"
        + gate.wait_code()
        + "w.write(b'\\xa9\\xff\\n'); w.flush()\n"
    )
    with _post(server.url, {"code": code}, mode) as response:
        stream = events(response)
        assert next(stream) == ("stdout", "a")  # the lone lead byte is held back
        gate.release()
        rest = list(stream)
    result = _result(rest)
    assert "a" + _joined(rest, "stdout") == result["stdout"] == "a\u00e9\ufffd\n"
    receipt = httpx.get(server.url + f"/receipts/{result['receipt_id']}", timeout=10).json()
    raw = b"a\xc3\xa9\xff\n"
    assert receipt["artifacts"]["stdout_hash"].removeprefix("sha256:") == _sha(raw)
    assert receipt["artifacts"]["stdout_bytes"] == len(raw)


def test_only_the_kept_output_is_streamed(server) -> None:
    body = {"code": "print('x' * 5000)", "limits": {"output": 16}}
    with _post(server.url, body, NDJSON) as response:
        kinds = list(events(response))
    result = _result(kinds)
    assert _joined(kinds, "stdout") == result["stdout"] == "x" * 16
    assert result["truncated"] is True


def test_a_timed_out_run_streams_then_reports(server) -> None:
    code = "import time\nprint('before', flush=True)\ntime.sleep(60)"
    with _post(server.url, {"code": code, "timeout": 1}, SSE) as response:
        kinds = list(events(response))
    result = _result(kinds)
    assert _joined(kinds, "stdout") == "before\n"
    assert result["timed_out"] is True and result["exit_code"] == 124


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b"{", 400, "invalid_json", id="not-json"),
        pytest.param(b"{}", 422, "missing_code", id="no-program"),
        pytest.param(b'{"code": "1", "timeout": 0}', 422, "invalid_request", id="schema"),
    ],
)
def test_bad_requests_get_plain_error_answers(server, body: bytes, status: int, code: str) -> None:
    headers = {"Accept": SSE, "Content-Type": "application/json"}
    response = httpx.post(server.url + "/run", content=body, headers=headers, timeout=30)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_a_refused_run_gets_its_status_not_a_200(tmp_path: Path, gate) -> None:
    """A full queue is a 429 with Retry-After, also when events were asked for."""
    args = ["--backend", "process", "--allow-unsandboxed", "--profile", "disabled"]
    args += ["--max-concurrency", "1", "--queue", "0"]
    with server_process(args, tmp_path) as srv:
        held = _post(srv.url, {"code": "print(1, flush=True)\n" + gate.wait_code()}, SSE)
        with held as response:
            stream = events(response)
            assert next(stream) == ("stdout", "1\n")
            refused = httpx.post(
                srv.url + "/run", json={"code": "1"}, headers={"Accept": SSE}, timeout=30
            )
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "queue_full"
            assert refused.headers["retry-after"]
            gate.release()
            _result(list(stream))


def test_a_failure_after_the_200_is_an_error_event(tmp_path: Path) -> None:
    """The run fills the receipts file system (a real small tmpfs) after its first output:
    its receipt cannot be stored, so the stream ends with an ``error`` event (the body of the
    non-streaming 500), never a ``result``."""
    with small_tmpfs(tmp_path / "receipts", "4m") as receipts:
        args = ["--backend", "process", "--allow-unsandboxed", "--profile", "disabled"]
        with server_process(args, tmp_path) as srv:
            code = (  # (the run's python3 has no pytest: fs_helpers.fill, inline)
                "print('ran', flush=True)\n"
                f"f = open({str(receipts / 'filler')!r}, 'wb', buffering=0)\n"
                "try:\n    while f.write(bytes(4096)): pass\nexcept OSError: pass\n"
            )
            with _post(srv.url, {"code": code}, NDJSON) as response:
                assert response.status_code == 200
                kinds = list(events(response))
            assert kinds[0] == ("stdout", "ran\n")
            kind, body = kinds[-1]
            assert kind == "error" and [k for k, _ in kinds].count("result") == 0
            assert body["error"]["code"] == "receipt_write_failed", body
            assert "could not be stored" in body["error"]["message"]
            (receipts / "filler").unlink()


def test_a_client_gone_midway_still_gets_its_receipt_stored(server, gate) -> None:
    code = "print('first', flush=True)\n" + gate.wait_code() + "print('second')\n"
    before = httpx.get(server.url + "/receipts?limit=1", timeout=10).json()["receipts"]
    with _post(server.url, {"code": code}, SSE) as response:
        assert next(events(response)) == ("stdout", "first\n")
    gate.release()  # the client is gone; the run goes on

    from _support import until

    def newest() -> dict | None:
        rows = httpx.get(server.url + "/receipts?limit=1", timeout=10).json()["receipts"]
        return rows[0] if rows and rows != before else None

    row = until(newest, timeout=60, what="the abandoned run's receipt")
    assert row["exit_code"] == 0


@pytest.mark.parametrize(
    ("accept", "mode"),
    [
        (None, None),
        ("application/json", None),
        ("*/*", None),
        ("text/event-stream", SSE),
        ("Text/Event-Stream; charset=utf-8", SSE),
        ("application/x-ndjson", NDJSON),
        ("application/json, application/x-ndjson;q=0.5", NDJSON),
        ("text/event-stream;q=0, application/json", None),
        ("text/event-stream;q=0.0, application/x-ndjson", NDJSON),
        ("text/event-stream;q=bogus", None),
    ],
)
def test_accept_negotiation(accept: str | None, mode: str | None) -> None:
    assert stream_mode(accept) == mode


def test_openapi_documents_the_streamed_answers(tmp_path: Path) -> None:
    with api(config(tmp_path)) as client:
        schema = client.get("/openapi.json").json()
    answer = schema["paths"]["/run"]["post"]["responses"]["200"]["content"]
    assert {"application/json", SSE, NDJSON} <= set(answer)
    assert "event-stream" in schema["paths"]["/run"]["post"]["description"]


@pytest.mark.vm
def test_a_vm_streams_its_output_while_it_runs(tmp_path: Path) -> None:
    """A microVM run: no loopback gate reaches a VM (no network device), so the program
    prints, then sleeps past its deadline; its first event arrives while /health still
    counts it as running, and the timed-out answer keeps it."""
    require_backend("microvm", "glasshouse.backends.microvm")
    code = "import time\nprint('first', flush=True)\ntime.sleep(600)"
    args = ["--backend", "microvm", "--profile", "disabled", "--max-concurrency", "2"]
    with server_process(args, tmp_path) as srv:
        body = {"code": code, "timeout": 20}
        headers = {"Accept": NDJSON}
        with httpx.stream("POST", srv.url + "/run", json=body, headers=headers, timeout=120) as r:
            stream = events(r)
            assert next(stream) == ("stdout", "first\n")
            assert httpx.get(srv.url + "/health", timeout=10).json()["running"] == 1
            rest = list(stream)
    result = _result(rest)
    assert result["stdout"] == "first\n" and result["timed_out"] is True
    assert result["isolation"] == "vm"
