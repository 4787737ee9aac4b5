"""The MCP server's overhead: ``run_python("print(1)")`` round trips, p50 and p95.

    .venv/bin/python bench/mcp.py [--rounds 200] [--profile host] [--json]

One step in a live sandbox session, measured four ways in the same run, interleaved (one of
each per round, so load changes hit all alike):

- ``library``: ``glasshouse.Session.run_code`` called directly (the baseline: the step
  itself, its observation and its receipt stored in a log);
- ``mcp stdio``: ``glasshouse mcp`` as a subprocess, driven by the official SDK's client
  (``call_tool``): the JSON-RPC framing, the pipe, the SDK's dispatch, our tool layer and
  the effects summary on top of the same step;
- ``mcp http``: ``/mcp`` of a real ``glasshouse-server`` on a loopback port (streamable HTTP,
  an SSE answer per call);
- ``sessions http``: ``POST /sessions/{id}/run`` on the same server, where its sessions API
  exists (else skipped, said so).

Goal (issue 16): MCP over stdio adds <= 5 ms to the step (p50 difference to ``library``).
Also shown: the median of the per-round differences (each MCP call against the library step
measured beside it), which load drift between rounds does not move.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

# This file is named mcp.py: the script's directory goes last on the path, so that
# "import mcp" finds the SDK and "import _common" still finds the bench helpers.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]
from _common import pct, print_table  # noqa: E402

CODE = "print(1)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(tmp: Path, profile: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "glasshouse.server.cli", "--port", str(port)]
    cmd += ["--backend", "sandbox", "--profile", profile, "--receipts-dir", str(tmp / "server")]
    cmd += ["--log-level", "warning", "--pool-size", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("glasshouse-server did not start")


async def _bench(rounds: int, warmup: int, profile: str) -> dict[str, list[float]]:
    from mcp import Client, StdioServerParameters

    from glasshouse.mcp import McpOptions, open_hub

    tmp = Path(tempfile.mkdtemp(prefix="glasshouse-bench-mcp-"))
    hub = open_hub(McpOptions(profile=profile), tmp / "library", {})
    session = hub.client().session  # the library baseline: the same Session the tools use
    assert isinstance(session.run_code(CODE).stdout, bytes)
    stdio = StdioServerParameters(
        command=sys.executable,
        args=["-m", "glasshouse.cli", "mcp", "--profile", profile],
        env=dict(os.environ, XDG_DATA_HOME=str(tmp / "stdio")),
    )
    server, url = _server(tmp, profile)
    cases: dict[str, Any] = {}
    try:
        async with (
            Client(stdio) as over_stdio,
            Client(url + "/mcp") as over_http,
            httpx.AsyncClient(base_url=url, timeout=60) as api,
        ):

            async def library() -> None:
                session.run_code(CODE)

            async def mcp_stdio() -> None:
                result = await over_stdio.call_tool("run_python", {"code": CODE})
                assert result.structured_content["stdout"] == "1\n", result

            async def mcp_http() -> None:
                result = await over_http.call_tool("run_python", {"code": CODE})
                assert result.structured_content["stdout"] == "1\n", result

            cases = {"library": library, "mcp stdio": mcp_stdio, "mcp http": mcp_http}
            created = await api.post("/sessions", json={})
            if created.status_code == 201:
                sid = created.json()["id"]

                async def sessions_http() -> None:
                    r = await api.post(f"/sessions/{sid}/run", json={"code": CODE})
                    assert r.status_code == 200 and r.json()["stdout"] == "1\n", r.text

                cases["sessions http"] = sessions_http
            else:
                print(f"(sessions http skipped: POST /sessions -> {created.status_code})")
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for i in range(warmup + rounds):
                for name, fn in cases.items():
                    t0 = time.perf_counter()
                    await fn()
                    if i >= warmup:
                        samples[name].append(time.perf_counter() - t0)
            return samples
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        hub.close_all("bench done")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--profile", choices=["host", "disabled"], default="host")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    samples = anyio.run(_bench, args.rounds, args.warmup, args.profile)
    base = pct(samples["library"], 50)
    rows = []
    report: dict[str, Any] = {"rounds": args.rounds, "profile": args.profile, "cases": {}}
    for name, values in samples.items():
        p50, p95 = pct(values, 50), pct(values, 95)
        added = p50 - base
        # the median of each round's difference to the library step measured next to it:
        # load that changes between rounds cancels out
        paired = pct([v - b for v, b in zip(values, samples["library"], strict=True)], 50)
        report["cases"][name] = {
            "p50_ms": p50 * 1e3,
            "p95_ms": p95 * 1e3,
            "added_ms": added * 1e3,
            "paired_added_ms": paired * 1e3,
        }
        rows.append(
            (
                name,
                f"{p50 * 1e3:.2f}",
                f"{p95 * 1e3:.2f}",
                f"{added * 1e3:+.2f}",
                f"{paired * 1e3:+.2f}",
            )
        )
    stdio_added = report["cases"]["mcp stdio"]["added_ms"]
    report["goal_stdio_added_le_5ms"] = stdio_added <= 5.0
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"run_python({CODE!r}) round trip, {args.rounds} rounds, profile {args.profile}")
    print_table(rows, ("path", "p50 ms", "p95 ms", "vs library p50", "paired median"))
    verdict = "met" if report["goal_stdio_added_le_5ms"] else "MISSED"
    print(f"goal: MCP over stdio adds <= 5 ms: {stdio_added:+.2f} ms ({verdict})")


if __name__ == "__main__":
    main()
