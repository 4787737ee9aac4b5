"""Connection floods against a real ``glasshouse-server`` process (issue 12, item 2).

Half-sent requests need no token; before the HTTP layer had deadlines and a connection cap,
a few hundred of them took every descriptor of a server under ``ulimit -n 300``: ``/health``
and ``/run`` hung, and the warm pool's refills failed. Each test here holds such
connections open and checks that the server answers anyway and closes them itself.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from server_helpers import API_BACKENDS, require_backend, server_process

#: A request head that never ends (no blank line): the connection waits for the rest.
HALF_HEAD = b"POST /run HTTP/1.1\r\nHost: glasshouse\r\nContent-Type: application/json\r\n"


def _backend_args(backend: str) -> list[str]:
    args = ["--backend", backend, "--profile", "disabled", "--max-concurrency", "2"]
    if backend == "process":
        args.append("--allow-unsandboxed")
    return args


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``within_s`` seconds."""
    sock.settimeout(within_s)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _open_half_sent(port: int, count: int) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            sock.sendall(HALF_HEAD)
        except (ConnectionResetError, BrokenPipeError):
            pass  # already evicted at the cap: still one of the flood
        conns.append(sock)
    return conns


@pytest.mark.parametrize("backend", API_BACKENDS)
def test_flood_past_the_descriptor_limit_leaves_health_and_run_working(backend, tmp_path):
    name, probe = backend
    require_backend(name, probe)
    args = [*_backend_args(name), "--header-timeout", "3", "--pool-max-age", "1"]
    args += ["--max-sessions", "2"]  # (12 descriptors budgeted per session)
    with server_process(args, tmp_path, nofile=300) as server:
        flood = _open_half_sent(server.port, 320)
        try:
            time.sleep(1.5)  # past the pool's max age: slots are recycled during the flood
            health = httpx.get(server.url + "/health", timeout=30)
            assert health.status_code == 200, health.text
            run = httpx.post(server.url + "/run", json={"code": "print(2+2)"}, timeout=60)
            assert run.status_code == 200, run.text
            assert run.json()["stdout"] == "4\n" and run.json()["exit_code"] == 0
            # each flood connection is closed by the server: evicted at the cap, or at the
            # header deadline (3 s; the bound here is generous)
            still_open = [s for s in flood if not _closed_by_server(s, 30)]
            assert not still_open, f"{len(still_open)} of 320 half-sent connections still open"
            again = httpx.post(server.url + "/run", json={"code": "print(3)"}, timeout=60)
            assert again.json()["stdout"] == "3\n"
        finally:
            for sock in flood:
                sock.close()
        assert "Too many open files" not in server.output()


def test_half_sent_head_and_body_are_closed_at_their_deadlines(tmp_path):
    args = [*_backend_args("process"), "--header-timeout", "1", "--body-timeout", "2"]
    with server_process(args, tmp_path) as server:
        silent = socket.create_connection(("127.0.0.1", server.port))  # sends nothing
        (half_head,) = _open_half_sent(server.port, 1)
        half_body = socket.create_connection(("127.0.0.1", server.port))
        half_body.sendall(
            b"POST /run HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"code": '
        )
        try:
            for sock in (silent, half_head, half_body):
                assert _closed_by_server(sock, 30)
            # a client that sends its request in time is answered on the same connection
            with httpx.Client(base_url=server.url, timeout=30) as client:
                assert client.get("/health").status_code == 200
                assert client.post("/run", json={"code": "print(1)"}).json()["stdout"] == "1\n"
        finally:
            for sock in (silent, half_head, half_body):
                sock.close()


def test_connection_cap_evicts_the_oldest_unfinished_request(tmp_path):
    args = [*_backend_args("process"), "--max-connections", "20", "--header-timeout", "120"]
    with server_process(args, tmp_path) as server:
        flood = _open_half_sent(server.port, 40)
        try:
            # the header deadline is far: only the cap closed the oldest 20 (and /health's
            # own connection then evicts one more)
            assert httpx.get(server.url + "/health", timeout=30).status_code == 200
            assert all(_closed_by_server(s, 30) for s in flood[:21])
            assert not any(_closed_by_server(s, 0.2) for s in flood[-10:])
        finally:
            for sock in flood:
                sock.close()
