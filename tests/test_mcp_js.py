"""An independent MCP client, the official TypeScript SDK (tests/js), against both
transports: ``glasshouse mcp`` over stdio and ``/mcp`` of a real ``glasshouse-server``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mcp_helpers import need_sandbox
from server_helpers import server_process

pytestmark = pytest.mark.slow

JS = Path(__file__).parent / "js"
TOKEN = "mcp-js-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def node() -> str:
    need_sandbox()
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the TypeScript SDK client needs it)")
    if not (JS / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot install tests/js's client")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"npm ci failed in tests/js: {done.stderr.strip()[-300:]}")
    return node


def _drive(node: str, *args: str) -> dict:
    done = subprocess.run(
        [node, str(JS / "client.mjs"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _check(out: dict) -> None:
    names = {t["name"] for t in out["tools"]}
    assert {"run_python", "run_command", "read_file", "reset_session"} <= names
    assert all(t["hasOutputSchema"] for t in out["tools"])
    assert out["server"]["name"] == "glasshouse"
    assert out["second"]["structuredContent"]["stdout"] == "42\n"
    assert out["second"]["content"][0]["type"] == "text"
    assert out["cat"]["structuredContent"]["stdout"] == "from node"
    assert out["badPath"]["isError"] is True
    receipt = json.loads(out["receipt"]["text"])
    assert receipt["execution_id"] == out["second"]["structuredContent"]["receipt_id"]
    assert out["receipt"]["mimeType"] == "application/json"


def test_the_typescript_sdk_over_stdio(node, tmp_path):
    args = ["-m", "glasshouse.cli", "mcp", "--receipts-dir", str(tmp_path)]
    _check(_drive(node, "stdio", sys.executable, *args))


def test_the_typescript_sdk_over_http(node, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    args = ["--backend", "sandbox", "--token-file", str(token_file), "--pool-size", "0"]
    with server_process(args, tmp_path) as server:
        out = _drive(node, "http", server.url + "/mcp", TOKEN)
    _check(out)
    assert out["protocolVersion"] == "2025-11-25"
