"""``/mcp`` in a real ``glasshouse-server`` process, driven by the official SDK's client over
streamable HTTP: one MCP connection, one Glasshouse session."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from _support import until
from mcp_helpers import call, error_text, http_client, need_sandbox, ok, run
from server_helpers import server_process

pytestmark = pytest.mark.slow

TOKEN = "mcp-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_sandbox()
    tmp = tmp_path_factory.mktemp("mcp-http")
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    args = ["--backend", "sandbox", "--token-file", str(token_file), "--pool-size", "0"]
    with server_process(args, tmp) as srv:
        yield srv


def test_two_concurrent_clients_are_isolated(server):
    url = server.url + "/mcp"
    results: dict[str, dict] = {}

    async def client(name: str) -> None:
        async with http_client(url, TOKEN) as c:
            await ok(c, "run_python", code=f"who = {name!r}")
            await ok(c, "write_file", path="mine.txt", content=name)
            await anyio.sleep(0.5)  # both sessions live at once
            seen = await ok(c, "run_python", code="print(who, open('mine.txt').read())")
            listing = await ok(c, "list_files")
            results[name] = {"seen": seen, "files": listing}

    async def body():
        async with anyio.create_task_group() as tg:
            tg.start_soon(client, "alice")
            tg.start_soon(client, "bob")

    run(body)
    assert results["alice"]["seen"]["stdout"] == "alice alice\n"
    assert results["bob"]["seen"]["stdout"] == "bob bob\n"
    assert results["alice"]["seen"]["session_id"] != results["bob"]["seen"]["session_id"]
    for r in results.values():
        assert [e["path"] for e in r["files"]["entries"]] == ["mine.txt"]


def test_a_client_cannot_read_another_clients_receipt(server):
    url = server.url + "/mcp"

    async def body():
        async with http_client(url, TOKEN) as a, http_client(url, TOKEN) as b:
            theirs = await ok(b, "run_command", command="true")
            refused = await call(a, "get_receipt", receipt_id=theirs["receipt_id"])
            try:
                await a.read_resource(f"glasshouse://receipts/{theirs['receipt_id']}")
            except Exception as exc:
                resource_error = str(exc)
            else:
                resource_error = ""
            return refused, resource_error

    refused, resource_error = run(body)
    assert "not a receipt of this client" in error_text(refused)
    assert "not a receipt of this client" in resource_error


def test_step_receipts_are_in_the_servers_store_and_index(server):
    async def body():
        async with http_client(server.url + "/mcp", TOKEN) as c:
            return await ok(c, "run_command", command=["echo", "hi"])

    step = run(body)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stored = httpx.get(f"{server.url}/receipts/{step['receipt_id']}", headers=headers)
    assert stored.status_code == 200
    assert stored.json()["session"]["id"] == step["session_id"]
    listed = httpx.get(f"{server.url}/receipts?limit=50", headers=headers).json()
    assert step["receipt_id"] in [r["id"] for r in listed["receipts"]]


def test_closing_the_connection_seals_its_session(server):
    async def body():
        async with http_client(server.url + "/mcp", TOKEN) as c:
            return await ok(c, "run_command", command="true")

    step = run(body)  # leaving the client sends DELETE: the connection ends
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def session_receipt() -> dict | None:
        page = httpx.get(f"{server.url}/receipts?limit=50", headers=headers).json()
        for row in page["receipts"]:
            data = httpx.get(f"{server.url}/receipts/{row['id']}", headers=headers)
            receipt = data.json()
            if row["id"] != step["receipt_id"] and step["receipt_id"] in data.text:
                return receipt
        return None

    sealed = until(session_receipt, timeout=30, what="the session receipt")
    assert step["session_id"] in json.dumps(sealed)


def test_the_bearer_token_is_required(server):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        r = httpx.post(server.url + "/mcp", json=body, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"


def test_malformed_json_rpc_gets_a_protocol_error(server):
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    r = httpx.post(server.url + "/mcp", content=b"{not json", headers=headers)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32700


def test_a_stateless_2026_client_is_told_to_use_the_handshake(server):
    async def body():
        async with http_client(server.url + "/mcp", TOKEN, mode="2026-07-28") as c:
            return await c.call_tool("run_python", {"code": "print(1)"})

    with pytest.raises(BaseException) as info:
        run(body)
    message = " | ".join(_leaves(info.value))
    assert "has no connections" in message and "initialize handshake" in message


def _leaves(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [m for inner in exc.exceptions for m in _leaves(inner)]
    return [str(exc)]
