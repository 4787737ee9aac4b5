"""The /sessions API on real sandboxes: a real server process (tenants alice, bob and admin)
for the contract, streaming, files, isolation and tenancy; the in-process app where a test
needs its own configuration (max sessions, deadlines, a receipt store that fills up).

Never a stand-in for the Session: every session here is a live bubblewrap sandbox."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import until
from fs_helpers import fill, small_tmpfs
from server_helpers import Gate, api, config, events, require_backend, server_process

from glasshouse.receipt.store import load_receipt
from glasshouse.server import _sessions

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef00"
ROOT = "admin-token-0123456789abcdef"
TOKENS = {"alice": ALICE, "bob": BOB, "admin": ROOT}
FILE_CAP = 1 << 20
SSE, NDJSON = "text/event-stream", "application/x-ndjson"


@pytest.fixture(scope="module", autouse=True)
def _sandbox() -> None:
    require_backend("sandbox", "glasshouse.backends.sandbox")


class Api:
    """One tenant's view of a server."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=120)

    def open(self, **body: Any) -> str:
        response = self.http.post("/sessions", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def step(self, sid: str, **body: Any) -> dict[str, Any]:
        response = self.http.post(f"/sessions/{sid}/run", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def close(self, sid: str) -> str:
        response = self.http.delete(f"/sessions/{sid}")
        assert response.status_code == 200, response.text
        return str(response.json()["receipt_id"])

    def receipt(self, rid: str) -> dict[str, Any]:
        response = self.http.get(f"/receipts/{rid}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    @contextlib.contextmanager
    def session(self, **body: Any) -> Iterator[str]:
        sid = self.open(**body)
        try:
            yield sid
        finally:
            self.http.delete(f"/sessions/{sid}")


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


def _stdout_until(stream: Iterator[tuple[str, Any]], text: str) -> bool:
    """Read ``stdout`` events until they add up to ``text`` (a write may come in pieces)."""
    seen = ""
    while seen != text:
        kind, data = next(stream)
        assert kind == "stdout" and text.startswith(seen + data), (kind, data, seen)
        seen += data
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sessions")
    tokens = tmp / "tokens"
    tokens.write_text("".join(f"{name} {token}\n" for name, token in TOKENS.items()))
    tokens.chmod(0o600)
    args = ["--backend", "sandbox", "--profile", "disabled", "--token-file", str(tokens)]
    args += ["--max-file-size", str(FILE_CAP), "--max-memory", "1G", "--max-timeout", "60"]
    with server_process(args, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
def alice(server) -> Iterator[Api]:
    yield Api(server.url, ALICE)


@pytest.fixture(scope="module")
def bob(server) -> Iterator[Api]:
    yield Api(server.url, BOB)


@pytest.fixture(scope="module")
def admin(server) -> Iterator[Api]:
    yield Api(server.url, ROOT)


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


# -- the contract -------------------------------------------------------------------------------
def test_open_run_and_close(alice: Api) -> None:
    response = alice.http.post("/sessions", json={"files": {"src/a.py": "print('from a')"}})
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {"id", "backend", "isolation", "created", "expires_at"}
    sid = created["id"]
    assert _sessions.SESSION_ID.fullmatch(sid)
    assert response.headers["location"] == f"/sessions/{sid}"
    assert (created["backend"], created["isolation"]) == ("sandbox", "namespaces")

    first = alice.step(sid, code="import json\nx = 41")
    second = alice.step(sid, code="print(x + 1, json.dumps([1]))")  # state survives
    third = alice.step(sid, command=["python3", "src/a.py"])
    fourth = alice.step(sid, shell="echo $GREETING | tr a-z A-Z; exit 3", env={"GREETING": "hi"})
    assert [s["step"] for s in (first, second, third, fourth)] == [1, 2, 3, 4]
    assert second["stdout"] == "42 [1]\n" and third["stdout"] == "from a\n"
    assert fourth["stdout"] == "HI\n" and fourth["exit_code"] == 3
    assert all(s["interpreter_restarted"] is False for s in (first, second, third, fourth))
    assert {k for k in first} >= {"stdout", "stderr", "exit_code", "receipt_id", "timed_out"}

    # every step's receipt is stored, chained to the one before
    digests: list[str | None] = [None]
    for step in (first, second, third, fourth):
        receipt = alice.receipt(step["receipt_id"])
        assert receipt["session"]["id"] == sid
        assert receipt["session"]["step"] == step["step"]
        assert receipt["session"]["previous_step_digest"] == digests[-1]
        digests.append(receipt["digest"])
    assert (
        alice.receipt(second["receipt_id"])["code_hash"]
        == hashlib.sha256(b"print(x + 1, json.dumps([1]))").hexdigest()
    )

    info = alice.http.get(f"/sessions/{sid}").json()
    assert info["state"] == "running" and info["steps"] == 4 and info["busy"] is False
    assert info["usage"]["memory_bytes"] > 0 and info["usage"]["pids"] >= 1
    assert sid in [s["id"] for s in alice.http.get("/sessions").json()["sessions"]]

    receipt_id = alice.close(sid)
    sealed = alice.receipt(receipt_id)
    assert sealed["session"]["kind"] == "session" and sealed["session"]["reason"] == "closed"
    assert [s["digest"] for s in sealed["session"]["steps"]] == digests[1:]
    # closed: 410 everywhere while remembered, with the reason and the receipt
    message = _error(alice.http.get(f"/sessions/{sid}"), 410, "session_gone")
    assert "(closed)" in message and receipt_id in message
    _error(alice.http.post(f"/sessions/{sid}/run", json={"code": "1"}), 410, "session_gone")
    _error(alice.http.get(f"/sessions/{sid}/files"), 410, "session_gone")
    _error(alice.http.delete(f"/sessions/{sid}"), 410, "session_gone")
    assert sid not in [s["id"] for s in alice.http.get("/sessions").json()["sessions"]]


def test_stdin_env_and_cwd(alice: Api) -> None:
    with alice.session(env={"BASE": "b"}, files={"sub/f": "x"}) as sid:
        out = alice.step(
            sid,
            command=["sh", "-c", 'read v; echo "$v $BASE $EXTRA"; pwd; ls'],
            stdin="typed\n",
            env={"EXTRA": "e"},
            cwd="sub",
        )
        assert out["stdout"] == "typed b e\n/workspace/sub\nf\n", out
        code = alice.step(
            sid, code="import sys, os; print(sys.stdin.read(), os.getcwd())", stdin="in"
        )
        assert code["stdout"] == "in /workspace\n"


def test_a_timed_out_code_step_restarts_the_interpreter_not_the_session(alice: Api) -> None:
    with alice.session() as sid:
        alice.step(sid, code="x = 1")
        slow = alice.step(
            sid, code="import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=1
        )
        assert slow["timed_out"] is True and slow["exit_code"] == 124
        assert slow["interpreter_restarted"] is True and slow["stdout"] == "started\n"
        after = alice.step(sid, code="print('x' in dir())")
        assert after["stdout"] == "False\n" and after["exit_code"] == 0
        crash = alice.step(sid, code="import os\nos._exit(7)")
        assert crash["interpreter_restarted"] is True, crash
        assert alice.step(sid, code="print(2 + 2)")["stdout"] == "4\n"
        assert alice.http.get(f"/sessions/{sid}").json()["state"] == "running"


def test_processes_a_step_starts_do_not_outlive_it(alice: Api) -> None:
    with alice.session() as sid:
        alice.step(sid, shell="sleep 300 & echo $! > pid")
        alive = alice.step(sid, shell='kill -0 "$(cat pid)" 2>/dev/null && echo alive || echo gone')
        assert alive["stdout"] == "gone\n"
        timed = alice.step(sid, shell="sleep 300 & sleep 300", timeout=1)
        assert timed["timed_out"] is True
        left = alice.step(sid, shell="ps -eo comm | grep -c '^sleep$' || true")
        assert left["stdout"] == "0\n"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b"{", 400, "invalid_json", id="not-json"),
        pytest.param(b"[]", 422, "invalid_request", id="not-an-object"),
        pytest.param(b'{"network": "yes"}', 422, "invalid_request", id="type"),
        pytest.param(b'{"limit": {}}', 422, "invalid_request", id="unknown-field"),
        pytest.param(b'{"env": {"A=B": "x"}}', 422, "invalid_request", id="env-name"),
        pytest.param(b'{"files": {"../x": "y"}}', 422, "invalid_request", id="file-name"),
        pytest.param(b'{"ttl_s": 0}', 422, "invalid_request", id="ttl-zero"),
        pytest.param(b'{"limits": {"memory": 4294967296}}', 422, "above_ceiling", id="memory"),
        pytest.param(b'{"ttl_s": 90000}', 422, "above_ceiling", id="ttl"),
        # below what a sandbox's step agent needs to come up (was a 500 session_failed)
        pytest.param(b'{"limits": {"pids": 2}}', 422, "invalid_request", id="pids-too-few"),
        pytest.param(b'{"limits": {"memory": 8388608}}', 422, "invalid_request", id="memory-low"),
    ],
)
def test_bad_session_requests(alice: Api, body: bytes, status: int, code: str) -> None:
    headers = {"Content-Type": "application/json"}
    message = _error(alice.http.post("/sessions", content=body, headers=headers), status, code)
    if code == "above_ceiling":
        assert "--max-" in message


def test_bad_step_requests(alice: Api) -> None:
    with alice.session() as sid:
        path = f"/sessions/{sid}/run"
        _error(alice.http.post(path, json={}), 422, "missing_code")
        _error(alice.http.post(path, json={"code": "1", "shell": "x"}), 422, "conflicting_fields")
        _error(alice.http.post(path, json={"command": []}), 422, "invalid_request")
        _error(alice.http.post(path, json={"code": "1", "cwd": "../up"}), 422, "invalid_request")
        _error(alice.http.post(path, json={"code": "1", "timeout": 61}), 422, "above_ceiling")
        _error(alice.http.post(path, json={"code": "1", "limits": {}}), 422, "invalid_request")
        _error(
            alice.http.post(path, content=b"x", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        )
        assert alice.http.get(f"/sessions/{sid}").json()["steps"] == 0
    _error(alice.http.get("/sessions/not-a-session"), 400, "invalid_session_id")
    unknown = "sess-1700000000000-00000000000000000000"
    _error(alice.http.get(f"/sessions/{unknown}"), 404, "not_found")
    _error(alice.http.post(f"/sessions/{unknown}/run", json={"code": "1"}), 404, "not_found")


# -- one step at a time, streaming --------------------------------------------------------------
def test_a_second_concurrent_step_is_409(server, alice: Api, gate: Gate) -> None:
    with alice.session(network=True) as sid:
        body = {"code": "print('held', flush=True)\n" + gate.wait_code()}
        headers = {"Accept": SSE}
        with alice.http.stream("POST", f"/sessions/{sid}/run", json=body, headers=headers) as held:
            stream = events(held)
            assert _stdout_until(stream, "held\n")
            _error(alice.http.post(f"/sessions/{sid}/run", json={"code": "1"}), 409, "session_busy")
            _error(alice.http.post(f"/sessions/{sid}/pause"), 409, "session_busy")
            assert alice.http.get(f"/sessions/{sid}").json()["busy"] is True
            # files can move during a step
            assert alice.http.put(f"/sessions/{sid}/files/during", content=b"x").status_code == 200
            gate.release()
            rest = list(stream)
        assert rest[-1][0] == "result" and rest[-1][1]["step"] == 1
        assert alice.step(sid, code="print(open('during').read())")["stdout"] == "x\n"


@pytest.mark.parametrize("mode", [SSE, NDJSON])
def test_steps_stream_like_run(alice: Api, gate: Gate, mode: str) -> None:
    with alice.session(network=True) as sid:
        code = "import sys\nprint('one', flush=True)\n" + gate.wait_code()
        code += "sys.stderr.write('two')\n"
        with alice.http.stream(
            "POST", f"/sessions/{sid}/run", json={"code": code}, headers={"Accept": mode}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(mode)
            stream = events(response)
            assert _stdout_until(stream, "one\n")
            gate.release()
            rest = list(stream)
        kind, result = rest[-1]
        assert kind == "result" and result["stdout"] == "one\n" and result["stderr"] == "two"
        assert ("stderr", "two") in rest
        assert result["step"] == 1 and result["interpreter_restarted"] is False
        assert alice.http.get(f"/receipts/{result['receipt_id']}").status_code == 200
        # a step refused before it starts keeps its status, even when events were asked for
        alice.http.post(f"/sessions/{sid}/pause")
        paused = alice.http.post(
            f"/sessions/{sid}/run", json={"code": "1"}, headers={"Accept": mode}
        )
        _error(paused, 409, "session_paused")


# -- files --------------------------------------------------------------------------------------
def test_files_round_trip_and_are_receipted(alice: Api) -> None:
    blob = bytes(range(256)) * 4
    with alice.session() as sid:
        put = alice.http.put(f"/sessions/{sid}/files/data/blob.bin", content=blob)
        assert put.status_code == 200, put.text
        assert put.json()["sha256"] == hashlib.sha256(blob).hexdigest()
        assert put.json()["size"] == len(blob) and put.json()["type"] == "file"
        out = alice.step(sid, code="print(len(open('data/blob.bin', 'rb').read()))")
        assert out["stdout"] == "1024\n"
        alice.step(sid, shell="printf made > data/made.txt")
        got = alice.http.get(f"/sessions/{sid}/files/data/made.txt")
        assert got.status_code == 200 and got.content == b"made"
        assert got.headers["content-type"] == "application/octet-stream"
        listing = alice.http.get(f"/sessions/{sid}/files", params={"path": "data"}).json()
        assert listing["path"] == "data"
        assert {e["name"]: e["type"] for e in listing["entries"]} == {
            "blob.bin": "file",
            "made.txt": "file",
        }
        top = alice.http.get(f"/sessions/{sid}/files").json()["entries"]
        assert {e["name"]: e["type"] for e in top} == {"data": "directory"}
        assert alice.http.delete(f"/sessions/{sid}/files/data/made.txt").status_code == 204
        _error(alice.http.get(f"/sessions/{sid}/files/data/made.txt"), 404, "file_not_found")
        step = alice.step(sid, code="1")
        transfers = alice.receipt(step["receipt_id"])["session"]["transfers"]
        assert [(t["direction"], t["path"]) for t in transfers] == [("download", "data/made.txt")]
        receipt_id = alice.close(sid)
    sealed = alice.receipt(receipt_id)["session"]["transfers"]
    assert [(t["direction"], t["path"], t["sha256"]) for t in sealed] == [
        ("upload", "data/blob.bin", hashlib.sha256(blob).hexdigest()),
        ("download", "data/made.txt", hashlib.sha256(b"made").hexdigest()),
    ]


def test_file_errors(alice: Api, bob: Api) -> None:
    with alice.session() as sid, bob.session() as other:
        base = f"/sessions/{sid}/files"
        alice.step(sid, shell="mkdir d; mkfifo pipe; ln -s /etc/passwd out; ln -s d inside")
        # another session's workspace, by the host path of a file in it
        where = bob.step(other, shell="echo secret > mine; readlink -f mine")
        assert where["exit_code"] == 0
        alice.step(sid, shell=f"ln -s /proc/1/root/workspace/mine theirs; ln -s ../{sid} up")
        for path, status, code in [
            ("%2e%2e/etc/passwd", 400, "invalid_path"),
            ("d/%2e%2e/%2e%2e/x", 400, "invalid_path"),
            ("/etc/passwd", 400, "invalid_path"),
            ("a%00b", 400, "invalid_path"),
            ("d", 400, "not_a_file"),
            ("pipe", 400, "not_a_file"),  # answered at once: a FIFO is never opened
            ("out", 403, "path_outside"),
            ("theirs", 403, "path_outside"),
            ("missing", 404, "file_not_found"),
        ]:
            response = alice.http.get(f"{base}/{path}")
            _error(response, status, code)
        _error(alice.http.put(f"{base}/out", content=b"x"), 403, "path_outside")
        _error(alice.http.put(f"{base}/d", content=b"x"), 400, "not_a_file")
        _error(alice.http.delete(f"{base}/missing"), 404, "file_not_found")
        _error(alice.http.get(base, params={"path": "out"}), 403, "path_outside")
        _error(alice.http.get(base, params={"path": "nowhere"}), 404, "file_not_found")
        # the size cap, both ways
        big = b"z" * (FILE_CAP + 1)
        _error(alice.http.put(f"{base}/big", content=big), 413, "file_too_large")
        alice.step(sid, code=f"open('big', 'wb').write(b'z' * {FILE_CAP + 1})")
        _error(alice.http.get(f"{base}/big"), 413, "file_too_large")
        assert alice.http.get(f"{base}/inside/../out").status_code in (400, 403)
        assert bob.http.get(f"/sessions/{other}/files/mine").content == b"secret\n"


# -- pause and resume ---------------------------------------------------------------------------
def test_pause_keeps_the_workspace_and_says_what_is_lost(alice: Api) -> None:
    with alice.session() as sid:
        alice.step(sid, code="x = 1\nopen('kept', 'w').write('yes')")
        paused = alice.http.post(f"/sessions/{sid}/pause")
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        assert "interpreter" in paused.json()["kept"]
        info = alice.http.get(f"/sessions/{sid}").json()
        assert info["state"] == "paused" and info["usage"] == {
            "memory_bytes": None,
            "cpu_ms": None,
            "pids": None,
        }
        assert alice.http.post(f"/sessions/{sid}/pause").status_code == 200  # idempotent
        _error(alice.http.post(f"/sessions/{sid}/run", json={"code": "1"}), 409, "session_paused")
        assert alice.http.get(f"/sessions/{sid}/files/kept").content == b"yes"
        resumed = alice.http.post(f"/sessions/{sid}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] == "running"
        after = alice.step(sid, code="print(open('kept').read(), 'x' in dir())")
        assert after["stdout"] == "yes False\n"


# -- isolation and tenancy ----------------------------------------------------------------------
def test_sessions_see_nothing_of_each_other(alice: Api) -> None:
    with alice.session() as one, alice.session() as two:
        alice.step(one, shell="echo private > only-here")
        seen = alice.step(two, shell="ls; ls /proc | grep -c '^[0-9]' ; cat only-here")
        assert "only-here" not in seen["stdout"] and seen["exit_code"] != 0
        # a server on the first session's loopback is not on the second's
        server = (
            "import socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 8765)); s.listen()\n"
        )
        alice.step(one, code=server)  # the interpreter keeps the socket open
        probe = (
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 8765), 2)\n"
            "    print('reached')\nexcept OSError as e:\n    print('refused')\n"
        )
        assert alice.step(two, code=probe)["stdout"] == "refused\n"
        assert alice.step(one, code=probe)["stdout"] == "reached\n"
        # the second session's processes: its step agent, interpreter and this step only
        procs = alice.step(two, shell="ps -eo args")["stdout"].splitlines()[1:]
        assert [p.split()[-2] for p in procs if p.startswith("python3")] == ["agent", "interp"]
        assert len(procs) == 4, procs


def test_a_tenant_sees_only_its_own_sessions(alice: Api, bob: Api, admin: Api) -> None:
    with alice.session() as sid:
        step = alice.step(sid, code="print(1)")
        for method, path, body in [
            ("GET", f"/sessions/{sid}", None),
            ("POST", f"/sessions/{sid}/run", {"code": "print('bob was here')"}),
            ("GET", f"/sessions/{sid}/files", None),
            ("PUT", f"/sessions/{sid}/files/x", None),
            ("GET", f"/sessions/{sid}/files/x", None),
            ("POST", f"/sessions/{sid}/pause", None),
            ("DELETE", f"/sessions/{sid}", None),
        ]:
            response = bob.http.request(method, path, json=body)
            _error(response, 404, "not_found")
        assert sid not in [s["id"] for s in bob.http.get("/sessions").json()["sessions"]]
        assert sid in [s["id"] for s in admin.http.get("/sessions").json()["sessions"]]
        _error(bob.http.get(f"/receipts/{step['receipt_id']}"), 404, "not_found")
        assert admin.http.get(f"/receipts/{step['receipt_id']}").status_code == 200
        assert admin.http.get(f"/sessions/{sid}").json()["steps"] == 1
        receipt_id = alice.close(sid)
    _error(bob.http.get(f"/sessions/{sid}"), 404, "not_found")  # not even that it is gone
    _error(admin.http.get(f"/sessions/{sid}"), 410, "session_gone")
    _error(bob.http.get(f"/receipts/{receipt_id}"), 404, "not_found")
    assert receipt_id in [r["id"] for r in alice.http.get("/receipts?limit=5").json()["receipts"]]


# -- limits ------------------------------------------------------------------------------------
def test_the_session_memory_limit_binds_every_step(alice: Api) -> None:
    with alice.session(limits={"memory": 64 << 20}) as sid:
        hog = alice.step(sid, code="b = bytearray(256 << 20)\nprint('allocated')")
        assert hog["exit_code"] != 0 and "allocated" not in hog["stdout"], hog
        assert alice.step(sid, code="print('still here')")["stdout"] == "still here\n"


def test_max_sessions_and_the_health_gauge(tmp_path: Path) -> None:
    with api(config(tmp_path, "sandbox", max_sessions=2)) as client:
        ids = [client.post("/sessions", json={}).json()["id"] for _ in range(2)]
        message = _error(client.post("/sessions", json={}), 429, "too_many_sessions")
        assert "--max-sessions 2" in message
        health = client.get("/health").json()
        assert health["sessions_open"] == 2 and health["capabilities"]["max_sessions"] == 2
        assert "glasshouse_sessions_open 2" in client.get("/metrics").text
        assert client.delete(f"/sessions/{ids[0]}").status_code == 200
        assert client.post("/sessions", json={}).status_code == 201


def test_ttl_and_idle_timeout_close_sessions_with_the_reason(tmp_path: Path) -> None:
    with api(config(tmp_path, "sandbox")) as client:
        by_ttl = client.post("/sessions", json={"ttl_s": 1}).json()["id"]
        by_idle = client.post("/sessions", json={"idle_timeout_s": 1, "ttl_s": 600}).json()["id"]
        busy_forever = client.post("/sessions", json={"idle_timeout_s": 600}).json()["id"]
        for sid, why in ((by_ttl, "ttl"), (by_idle, "idle")):
            gone = until(
                lambda sid=sid: client.get(f"/sessions/{sid}").status_code == 410,
                timeout=60,
                what=f"session {sid} to expire ({why})",
            )
            assert gone
            message = client.get(f"/sessions/{sid}").json()["error"]["message"]
            assert f"({why})" in message
            receipt_id = message.rsplit(" ", 1)[-1]
            assert client.get(f"/receipts/{receipt_id}").json()["session"]["reason"] == why
        assert client.get(f"/sessions/{busy_forever}").status_code == 200


def test_forgotten_sessions_are_404(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sessions, "REMEMBERED", 1)
    with api(config(tmp_path, "sandbox")) as client:
        first, second = (client.post("/sessions", json={}).json()["id"] for _ in range(2))
        client.delete(f"/sessions/{first}")
        assert client.get(f"/sessions/{first}").status_code == 410
        client.delete(f"/sessions/{second}")
        assert client.get(f"/sessions/{second}").status_code == 410
        _error(client.get(f"/sessions/{first}"), 404, "not_found")


def test_a_backend_without_sessions_says_so(tmp_path: Path) -> None:
    with api(config(tmp_path, "process")) as client:
        message = _error(client.post("/sessions", json={}), 501, "sessions_unavailable")
        assert "process backend has no sessions" in message
        assert client.get("/health").json()["capabilities"]["sessions"] is False
    with api(config(tmp_path / "off", "sandbox", max_sessions=0)) as client:
        _error(client.post("/sessions", json={}), 501, "sessions_unavailable")


def test_no_step_runs_while_the_receipt_store_is_full(tmp_path: Path) -> None:
    with (
        small_tmpfs(tmp_path / "receipts", "4m") as receipts,
        api(config(tmp_path, "sandbox")) as client,
    ):
        sid = client.post("/sessions", json={}).json()["id"]
        assert client.post(f"/sessions/{sid}/run", json={"code": "1"}).status_code == 200
        filler = fill(receipts)
        step = client.post(f"/sessions/{sid}/run", json={"code": "open('ran','w')"})
        _error(step, 503, "receipt_store_unavailable")
        _error(client.post("/sessions", json={}), 503, "receipt_store_unavailable")
        filler.unlink()
        assert client.get(f"/sessions/{sid}").json()["steps"] == 1
        assert client.post(f"/sessions/{sid}/run", json={"code": "1"}).json()["step"] == 2
        ran = client.get(f"/sessions/{sid}/files/ran")
        _error(ran, 404, "file_not_found")


def test_sessions_open_at_shutdown_are_sealed(tmp_path: Path) -> None:
    args = ["--backend", "sandbox", "--profile", "disabled"]
    with server_process(args, tmp_path) as srv:
        client = Api(srv.url, None)
        sid = client.open()
        step = client.step(sid, code="print('before shutdown')")
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.stop()
        assert code in (0, -signal.SIGTERM), srv.log.read_text()
    sealed = [
        receipt
        for path in srv.receipts.glob("exec-*.json")
        if not path.name.endswith(".dsse.json")
        and (receipt := load_receipt(path).model_dump(mode="json"))["session"]
        and receipt["session"]["kind"] == "session"
    ]
    assert len(sealed) == 1, [r["session"] for r in sealed]
    assert sealed[0]["session"]["id"] == sid and sealed[0]["session"]["reason"] == "shutdown"
    assert [s["execution_id"] for s in sealed[0]["session"]["steps"]] == [step["receipt_id"]]


def test_openapi_documents_the_sessions(tmp_path: Path) -> None:
    with api(config(tmp_path, "sandbox")) as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"post", "get"} <= set(paths["/sessions"])
    assert {"get", "delete"} <= set(paths["/sessions/{session_id}"])
    assert {"put", "get", "delete"} <= set(paths["/sessions/{session_id}/files/{path}"])
    step = paths["/sessions/{session_id}/run"]["post"]
    assert {"409", "410", "422"} <= set(step["responses"])
    assert SSE in step["responses"]["200"]["content"]
    for name in ("SessionRequest", "StepRequest", "StepResponse", "SessionInfo"):
        assert name in schema["components"]["schemas"]
    assert json.dumps(schema)  # serialisable


def test_the_descriptor_budget_counts_sessions(tmp_path: Path) -> None:
    """Each open session holds descriptors in the server: a ulimit -n that leaves no room
    for --max-sessions of them stops the server at startup, naming the flag."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    argv = [sys.executable, "-m", "glasshouse.server.cli", "--backend", "sandbox"]
    argv += ["--receipts-dir", str(tmp_path / "r"), "--port", "0", "--max-sessions"]
    out = subprocess.run(
        [*argv, "32"], preexec_fn=limit, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "--max-sessions" in out.stderr, out.stderr
    assert "32 sessions" in out.stderr


def test_a_step_in_flight_at_shutdown_finishes_and_is_sealed(tmp_path: Path, gate: Gate) -> None:
    """SIGTERM while a step waits at a gate: the step ends (released after the signal), its
    client gets the answer, and the session receipt seals it with reason shutdown."""
    import threading

    args = ["--backend", "sandbox", "--profile", "disabled"]
    with server_process(args, tmp_path) as srv:
        client = Api(srv.url, None)
        sid = client.open(network=True)
        answers: list[dict[str, Any]] = []
        body = {"code": "print('in flight')\n" + gate.wait_code()}
        step = threading.Thread(target=lambda: answers.append(client.step(sid, **body)))
        step.start()
        until(
            lambda: client.http.get(f"/sessions/{sid}").json()["busy"],
            timeout=60,
            what="the step to start",
        )
        srv.proc.send_signal(signal.SIGTERM)
        gate.release()
        step.join(timeout=120)
        code = srv.stop()
        assert code in (0, -signal.SIGTERM), srv.log.read_text()
    assert answers and answers[0]["stdout"] == "in flight\n"
    sealed = [
        receipt
        for path in srv.receipts.glob("exec-*.json")
        if not path.name.endswith(".dsse.json")
        and (receipt := load_receipt(path).model_dump(mode="json"))["session"]
        and receipt["session"]["kind"] == "session"
    ]
    assert [s["session"]["reason"] for s in sealed] == ["shutdown"]
    assert [s["execution_id"] for s in sealed[0]["session"]["steps"]] == [answers[0]["receipt_id"]]
