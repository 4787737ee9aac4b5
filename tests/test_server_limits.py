"""The operator's ceilings over per-request limits, and the cost of an answer (issue 12,
item 5): a request above a ceiling is refused naming the flag; a large answer is streamed
with bounded server memory; a client that does not read its answer is dropped."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from server_helpers import api, config, server_process

from glasshouse.server.cli import main as server_main
from glasshouse.server.models import RunRequest

#: Ceilings lowered (and defaults under them) so each can be crossed by one unit.
CEILINGS = {
    "max_memory_bytes": 64 << 20,
    "max_pids": 32,
    "max_output_bytes": 1 << 20,
    "max_disk_bytes": 256 << 20,
    "max_timeout_s": 20.0,
    "memory_bytes": 32 << 20,
    "pids": 16,
    "disk_bytes": 128 << 20,
}
PROCESS = ["--backend", "process", "--allow-unsandboxed", "--profile", "disabled"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    with api(config(tmp_path_factory.mktemp("ceilings"), **CEILINGS)) as c:
        yield c


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("memory", (64 << 20) + 1, "--max-memory"),
        ("pids", 33, "--max-pids"),
        ("output", (1 << 20) + 1, "--max-output"),
        ("disk", (256 << 20) + 1, "--max-disk"),
        ("timeout", 20.5, "--max-timeout"),
    ],
)
def test_a_request_above_a_ceiling_is_refused_naming_it(client, field, value, flag) -> None:
    body = {"code": "print(1)", "timeout": value} if field == "timeout" else None
    body = body or {"code": "print(1)", "limits": {field: value}}
    response = client.post("/run", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "above_ceiling"
    assert flag in error["message"] and str(value) in error["message"]


def test_a_request_at_the_ceilings_runs_with_them(client) -> None:
    limits = {"memory": 64 << 20, "pids": 32, "output": 1 << 20, "disk": 256 << 20}
    # (the process backend has no workspace quota: the run itself goes without limits.disk)
    runnable = {k: v for k, v in limits.items() if k != "disk"}
    response = client.post("/run", json={"code": "print(1)", "timeout": 20, "limits": runnable})
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "1\n"
    refused = client.post("/run", json={"code": "print(1)", "timeout": 20, "limits": limits})
    assert refused.status_code == 200 and refused.json()["exit_code"] == 125
    assert "limits.disk" in refused.json()["error"]
    request = RunRequest.model_validate({"code": "x", "timeout": 20, "limits": limits})
    spec = client.runner.spec_for(request, None)
    assert spec.timeout == 20
    assert (spec.limits.memory_bytes, spec.limits.pids) == (64 << 20, 32)
    assert (spec.limits.output_bytes, spec.limits.disk_bytes) == (1 << 20, 256 << 20)


def test_omitted_limits_take_the_defaults_and_the_timeout_its_ceiling(client) -> None:
    spec = client.runner.spec_for(RunRequest.model_validate({"code": "x"}), None)
    assert spec.limits.memory_bytes == 32 << 20 and spec.limits.pids == 16
    assert spec.limits.disk_bytes == 128 << 20
    assert spec.timeout == 20  # 60 s by default, but the ceiling is lower


def test_health_states_the_ceilings(client) -> None:
    caps = client.get("/health").json()["capabilities"]
    assert caps["limits.disk"] is False  # the process backend cannot hold a run to a quota
    assert caps["max_memory_bytes"] == 64 << 20 and caps["max_pids"] == 32
    assert caps["max_output_bytes"] == 1 << 20 and caps["max_disk_bytes"] == 256 << 20
    assert caps["max_timeout_s"] == 20


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--memory", "1G", "--max-memory", "512M"], "--memory (1073741824) is above --max-memory"),
        (["--output-limit", "32M"], "is above --max-output (16777216)"),  # the default ceiling
        (["--disk", "8G"], "--disk (8589934592) is above --max-disk"),
        (["--max-output", "128M"], "--max-output must be in 1..67108864 bytes"),
    ],
)
def test_a_default_above_its_ceiling_stops_the_server(args, says, tmp_path) -> None:
    result = CliRunner().invoke(server_main, [*PROCESS, "--receipts-dir", str(tmp_path), *args])
    assert result.exit_code == 2 and says in result.output


# -- the answer -----------------------------------------------------------------------------
def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_large_answer_keeps_server_memory_bounded(tmp_path) -> None:
    """16 MiB of control bytes escape to 96 MiB of JSON. Built in one piece (the model, the
    JSON text, its bytes, the transport's copy) that peaked ~300 MB above the server's
    baseline; streamed, the server holds the run's output and a few pieces."""
    import httpx

    args = [*PROCESS, "--max-output", "16M", "--max-concurrency", "1"]
    with server_process(args, tmp_path) as server:
        code = "import sys; sys.stdout.write(chr(1) * (16 << 20))"
        with httpx.Client(base_url=server.url, timeout=120) as http:
            assert http.post("/run", json={"code": "print(1)"}).status_code == 200
            before = _peak_rss(server.proc.pid)
            response = http.post("/run", json={"code": code, "limits": {"output": 16 << 20}})
            grew = _peak_rss(server.proc.pid) - before
        assert response.status_code == 200
        body = json.loads(response.content)
        assert body["stdout"] == "\x01" * (16 << 20) and body["truncated"] is False
        assert len(response.content) > 96 << 20
        # the output itself is 16 MiB as bytes and again as text: bounded by ~3x that
        assert grew < 3 * (16 << 20), f"server peak RSS grew by {grew >> 20} MiB"


def _server_side_state(server_port: int, client_port: int) -> str | None:
    """The TCP state (hex, /proc/net/tcp) of the server's end of a loopback connection."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return state
    return None


def test_a_client_that_does_not_read_its_answer_is_dropped(tmp_path) -> None:
    args = [*PROCESS, "--max-output", "16M", "--write-timeout", "2"]
    with server_process(args, tmp_path) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        sock.connect(("127.0.0.1", server.port))
        body = json.dumps(
            {"code": "print('x' * (12 << 20))", "limits": {"output": 16 << 20}}
        ).encode()
        head = (
            f"POST /run HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        client_port = sock.getsockname()[1]
        established = "01"
        deadline = time.monotonic() + 120  # generous: the run, then the 2 s write deadline
        while _server_side_state(server.port, client_port) == established:
            assert time.monotonic() < deadline, "the server still holds the unread answer"
            time.sleep(0.2)
        received = bytearray()
        sock.settimeout(30)
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        sock.close()
        assert received.startswith(b"HTTP/1.1 200")
        assert not received.endswith(b"0\r\n\r\n")  # the answer was cut, not completed
        assert len(received) < 12 << 20
        import httpx

        assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def test_max_list_reaches_the_receipts(tmp_path) -> None:
    """--max-list is the cap the server's receipts state (and keep)."""
    with api(config(tmp_path, max_list=3)) as c:
        body = c.post("/run", json={"code": "print(1)"}).json()
        receipt = c.get(f"/receipts/{body['receipt_id']}").json()
    assert receipt["observation"]["list_cap"] == 3


def test_max_list_flag_is_checked(tmp_path) -> None:
    args = [*PROCESS, "--receipts-dir", str(tmp_path), "--max-list", "0"]
    result = CliRunner().invoke(server_main, args)
    assert result.exit_code == 2 and "--max-list" in result.output
