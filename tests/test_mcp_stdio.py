"""``glasshouse mcp`` over stdio, driven by the official SDK's client: a real subprocess, a
real sandbox session, real receipts."""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp_helpers import (
    TOOLS,
    call,
    error_text,
    need_sandbox,
    ok,
    require_observed,
    run,
    stdio_client,
    stdio_params,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _sandbox() -> None:
    need_sandbox()


def test_the_eight_tools_have_descriptions_and_input_and_output_schemas(tmp_path):
    async def body():
        async with stdio_client(tmp_path) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            templates = (await client.list_resource_templates()).resource_templates
            return tools, templates

    tools, templates = run(body)
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description or "") > 60, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema and tool.output_schema["type"] == "object", tool.name
    assert tools["run_python"].input_schema["required"] == ["code"]
    assert "receipt_id" in tools["run_command"].output_schema["properties"]
    assert "effects" in tools["run_python"].output_schema["properties"]
    assert [t.uri_template for t in templates] == ["glasshouse://receipts/{receipt_id}"]


def test_state_persists_across_calls_variables_and_files(tmp_path):
    async def body():
        async with stdio_client(tmp_path) as client:
            first = await ok(client, "run_python", code="x = 41\nimport math")
            second = await ok(client, "run_python", code="print(x + 1, math.pi > 3)")
            wrote = await ok(client, "write_file", path="data/in.txt", content="hello\n")
            cat = await ok(client, "run_command", command="cat data/in.txt | tr a-z A-Z")
            argv = await ok(client, "run_command", command=["wc", "-c", "data/in.txt"])
            made = await ok(client, "run_python", code="open('out.txt','w').write('from py')")
            read = await ok(client, "read_file", path="out.txt")
            listing = await ok(client, "list_files", path=".")
            return first, second, wrote, cat, argv, made, read, listing

    first, second, wrote, cat, argv, made, read, listing = run(body)
    assert first["exit_code"] == 0 and first["step"] == 1
    assert second["stdout"] == "42 True\n" and second["step"] == 2
    assert second["session_id"] == first["session_id"]
    assert second["receipt_id"] != first["receipt_id"]
    assert wrote["size"] == 6
    assert cat["stdout"] == "HELLO\n"
    assert argv["stdout"].split()[0] == "6"
    assert made["exit_code"] == 0
    assert read == {
        "path": "out.txt",
        "encoding": "utf-8",
        "content": "from py",
        "size": 7,
        "truncated": False,
        "cap_bytes": 1 << 20,
    }
    names = {e["path"]: e for e in listing["entries"]}
    assert names["data"]["type"] == "directory" and names["out.txt"]["size"] == 7


def test_a_run_that_writes_a_file_and_connects_to_a_loopback_port_shows_both(tmp_path):
    code = (
        "import socket\n"
        "open('proof.txt', 'w').write('x')\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n"
        "port = srv.getsockname()[1]\n"
        "socket.create_connection(('127.0.0.1', port)).close()\n"
        "print(port)\n"
    )

    async def body():
        async with stdio_client(tmp_path) as client:
            result = await call(client, "run_python", code=code)
            data = dict(result.structured_content)
            receipt = await ok(client, "get_receipt", receipt_id=data["receipt_id"])
            uri = f"glasshouse://receipts/{data['receipt_id']}"
            resource = await client.read_resource(uri)
            return result, data, receipt, resource

    result, data, receipt, resource = run(body)
    assert not result.is_error, result.content
    effects = data["effects"]
    require_observed(effects)
    port = data["stdout"].strip()
    assert any(p.endswith("/proof.txt") for p in effects["files_written"]), effects
    assert {"dst": f"127.0.0.1:{port}", "protocol": "tcp", "result": "connected"} in effects[
        "network_attempts"
    ]
    text = result.content[0].text
    assert "proof.txt" in text and f"127.0.0.1:{port}" in text
    # the receipt behind the summary, as a tool result and as a resource
    assert receipt["receipt"]["execution_id"] == data["receipt_id"]
    assert receipt["receipt"]["session"]["step"] == 1
    assert json.loads(resource.contents[0].text)["digest"] == receipt["receipt"]["digest"]


def test_a_timeout_is_a_tool_error_with_its_receipt_and_the_session_goes_on(tmp_path):
    async def body():
        async with stdio_client(tmp_path, "--timeout", "10", "--max-timeout", "20") as client:
            await ok(client, "run_python", code="kept = 1")
            slow = await call(client, "run_python", code="import time; time.sleep(60)", timeout=1)
            after = await ok(client, "run_python", code="print('kept' in globals())")
            too_long = await call(client, "run_command", command="true", timeout=21)
            return slow, after, too_long

    slow, after, too_long = run(body)
    assert "TIMED OUT after 1s" in error_text(slow)
    data = slow.structured_content
    assert data["timed_out"] is True and data["exit_code"] == 124
    assert data["interpreter_restarted"] is True and data["receipt_id"].startswith("exec-")
    assert after["stdout"] == "False\n"  # a new interpreter: the old variables are gone
    assert "above this server's maximum of 20s" in error_text(too_long)


def test_bad_paths_and_missing_files_are_tool_errors(tmp_path):
    async def body():
        async with stdio_client(tmp_path) as client:
            return [
                await call(client, "read_file", path="../etc/passwd"),
                await call(client, "read_file", path="/etc/passwd"),
                await call(client, "read_file", path="nope.txt"),
                await call(client, "write_file", path="x.bin", content="@@", encoding="base64"),
                await call(client, "list_files", path="nope"),
                await call(client, "run_command", command=[]),
                await call(client, "run_python"),  # no code: the input schema's error
            ]

    results = run(body)
    texts = [error_text(r) for r in results]
    assert "'../etc/passwd'" in texts[0]
    assert "'/etc/passwd'" in texts[1]
    assert "'nope.txt'" in texts[2]
    assert "not valid base64" in texts[3]
    assert "'nope'" in texts[4]
    assert "empty argv" in texts[5]
    assert "code" in texts[6]


def test_binary_files_come_back_base64_and_large_ones_are_cut_at_the_cap(tmp_path):
    blob = bytes(range(255, -1, -1))  # not UTF-8 from its first byte

    async def body():
        async with stdio_client(tmp_path, "--read-cap", "100") as client:
            encoded = base64.b64encode(blob).decode()
            await ok(client, "write_file", path="b.bin", content=encoded, encoding="base64")
            binary = await ok(client, "read_file", path="b.bin")
            await ok(client, "write_file", path="t.txt", content="a" * 150)
            text = await ok(client, "read_file", path="t.txt")
            await ok(client, "write_file", path="u.txt", content="é" * 100)  # 2 bytes each
            await ok(client, "write_file", path="v.txt", content="a" + "é" * 100)
            even, odd = [await ok(client, "read_file", path=p) for p in ("u.txt", "v.txt")]
            return binary, text, even, odd

    binary, text, even, odd = run(body)
    assert (even["encoding"], even["content"]) == ("utf-8", "é" * 50)
    assert (odd["encoding"], odd["content"]) == ("utf-8", "a" + "é" * 49)  # cut mid-character
    assert binary["encoding"] == "base64" and binary["size"] == 256 and binary["truncated"]
    assert base64.b64decode(binary["content"]) == blob[:100]
    assert text == {
        "path": "t.txt",
        "encoding": "utf-8",
        "content": "a" * 100,
        "size": 150,
        "truncated": True,
        "cap_bytes": 100,
    }


def test_reset_session_seals_the_session_and_starts_an_empty_one(tmp_path):
    async def body():
        async with stdio_client(tmp_path) as client:
            before = await ok(client, "run_python", code="v = 1; open('f', 'w').close()")
            reset = await ok(client, "reset_session")
            gone = await ok(client, "run_python", code="print('v' in globals())")
            files = await ok(client, "list_files")
            sealed = await ok(client, "get_receipt", receipt_id=reset["session_receipt_id"])
            summary = await ok(client, "session_summary")
            return before, reset, gone, files, sealed, summary

    before, reset, gone, files, sealed, summary = run(body)
    assert reset["closed_session_id"] == before["session_id"]
    assert reset["new_session_id"] == gone["session_id"] != before["session_id"]
    assert gone["stdout"] == "False\n" and gone["step"] == 1
    assert files["entries"] == []
    assert before["receipt_id"] in json.dumps(sealed["receipt"])  # the steps it sealed
    assert summary["previous_sessions"] == [reset["session_receipt_id"]]


def test_session_summary_is_the_union_of_the_steps(tmp_path):
    async def body():
        async with stdio_client(tmp_path) as client:
            one = await ok(client, "run_command", command="echo 1 > one.txt")
            two = await ok(client, "run_python", code="open('two.txt', 'w').write('2')")
            return one, two, await ok(client, "session_summary")

    one, two, summary = run(body)
    require_observed(one["effects"])
    assert summary["steps"] == 2
    assert summary["receipt_ids"] == [one["receipt_id"], two["receipt_id"]]
    written = summary["effects"]["files_written"]
    assert any(p.endswith("/one.txt") for p in written)
    assert any(p.endswith("/two.txt") for p in written)


def test_another_clients_receipt_is_refused(tmp_path):
    """Two stdio servers on one receipts directory: each reads only its own receipts."""

    async def body():
        async with stdio_client(tmp_path) as a, stdio_client(tmp_path) as b:
            mine = await ok(a, "run_command", command="true")
            theirs = await ok(b, "run_command", command="true")
            refused = await call(a, "get_receipt", receipt_id=theirs["receipt_id"])
            own = await ok(a, "get_receipt", receipt_id=mine["receipt_id"])
            return refused, own

    refused, own = run(body)
    assert "not a receipt of this client" in error_text(refused)
    assert own["receipt"]["sequence"] is not None  # stored in the shared, linked log


def test_the_session_is_sealed_when_the_client_disconnects(tmp_path):
    async def body():
        async with stdio_client(tmp_path) as client:
            return await ok(client, "run_command", command="true")

    step = run(body)
    sealed = [
        json.loads(p.read_text())
        for p in (tmp_path).glob("exec-*.json")
        if not p.name.endswith(".dsse.json")
    ]
    sessions = [r for r in sealed if r["execution_id"] != step["receipt_id"]]
    assert len(sessions) == 1, [r["execution_id"] for r in sealed]
    assert step["receipt_id"] in json.dumps(sessions[0])


def test_malformed_json_rpc_gets_protocol_errors(tmp_path):
    params = stdio_params(tmp_path)
    lines = [
        "{not json",
        "[1, 2]",
        '{"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": "x"}',
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        ),
        '{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        '{"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}',
        '{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "nope"}}',
    ]
    proc = subprocess.Popen(
        [params.command, *params.args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=params.env,
        text=True,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    try:
        answers = [json.loads(line) for line in _lines_within(proc.stdout.fileno(), 6, 60)]
    finally:
        proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    by_id = {}
    for answer in answers:
        by_id.setdefault(answer["id"], []).append(answer)
    parse, batch = by_id[None]
    assert parse["error"]["code"] == -32700
    assert batch["error"]["code"] == -32600 and "batch" in batch["error"]["message"]
    assert by_id[7][0]["error"]["code"] == -32600
    assert by_id[1][0]["result"]["serverInfo"]["name"] == "glasshouse"
    assert by_id[2][0]["error"]["code"] == -32601
    assert by_id[3][0]["result"]["isError"] is True


def _lines_within(fd: int, count: int, seconds: float) -> list[str]:
    """The next ``count`` lines on ``fd``, or fail: a message the server drops is never
    answered, and this must not wait for it forever."""
    buffer, deadline = b"", time.monotonic() + seconds
    while buffer.count(b"\n") < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"{len(buffer.splitlines())} of {count} answers within {seconds:g}s"
        chunk = os.read(fd, 65536)
        assert chunk, "the server closed stdout"
        buffer += chunk
    return buffer.decode().splitlines()[:count]


def test_a_backend_that_cannot_work_fails_at_start_with_the_reason(tmp_path):
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", "mcp", "--backend", "process"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--allow-unsandboxed" in proc.stderr
    assert proc.stdout == ""


def test_receipts_dir_defaults_under_xdg_data_home(tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    code = "from glasshouse.mcp.options import DEFAULT_RECEIPTS_DIR as d; print(d)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()) == tmp_path / "data" / "glasshouse" / "receipts"


def _session_receipts(receipts: Path) -> list[dict]:
    found = []
    for path in receipts.glob("exec-*.json"):
        if not path.name.endswith(".dsse.json"):
            data = json.loads(path.read_text())
            if (data.get("session") or {}).get("kind") == "session":
                found.append(data)
    return found


def test_sigterm_seals_the_session_with_the_reason(tmp_path):
    params = stdio_params(tmp_path)
    proc = subprocess.Popen(
        [params.command, *params.args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=params.env,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    proc.stdin.write((json.dumps(hello) + "\n").encode())
    _lines_within(proc.stdout.fileno(), 1, 60)  # serving: its session is open
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    proc.stdin.close()
    sealed = _session_receipts(tmp_path)
    assert [s["session"]["reason"] for s in sealed] == ["glasshouse mcp stopped by SIGTERM"]


def test_a_second_step_while_one_runs_is_a_tool_error(tmp_path):
    async def body():
        async with stdio_client(tmp_path) as client:
            results: dict[str, object] = {}

            async def slow() -> None:
                code = "import time; time.sleep(3)"
                results["slow"] = await call(client, "run_python", code=code)

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                await anyio.sleep(1)  # the slow step is running (it takes 3 s)
                results["busy"] = await call(client, "run_command", command="true")
            return results

    results = run(body)
    assert "still running" in error_text(results["busy"])
    assert not results["slow"].is_error
