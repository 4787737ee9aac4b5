"""One-shot `POST /run` of `print(2+2)` over HTTP at an agent's pace: the server's warm pool
with live slots (the sandbox, its step agent and python3 already up; the code is handed to
the waiting interpreter) against fresh slots (the sandbox's resources made ahead, python3
started per request), two real servers, requests interleaved between them, a pause between
rounds so each pool refills (as between an agent's tool calls). Goal (issue 15): p50 <= 25 ms
with live slots.

    .venv/bin/python bench/oneshot.py [--rounds 40] [--pause 0.3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleave, print_table, summary

SERVER = str(Path(sys.executable).with_name("glasshouse-server"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(kind: str, receipts: str) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    port = _port()
    argv = [SERVER, "--port", str(port), "--receipts-dir", receipts, "--backend", "sandbox"]
    argv += ["--profile", "disabled", f"--{kind}-slots", "--pool-size", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/health").json()["pool"].get("ready", 0) >= 1:
                return proc, client
        except (httpx.HTTPError, KeyError):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"glasshouse-server --{kind}-slots did not start")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between rounds")
    args = parser.parse_args()
    servers = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for kind in ("live", "fresh"):
                servers[kind] = _server(kind, os.path.join(tmp, kind))

            def case(client: httpx.Client):
                def one() -> float:
                    time.sleep(args.pause / 2)
                    t0 = time.perf_counter()
                    answer = client.post("/run", json={"code": "print(2+2)"}).json()
                    elapsed = time.perf_counter() - t0
                    assert answer["stdout"] == "4\n", answer
                    return elapsed

                return one

            samples = interleave(
                {k: case(c) for k, (_, c) in servers.items()}, rounds=args.rounds, warmup=3
            )
        finally:
            for proc, client in servers.values():
                client.close()
                proc.terminate()
                proc.wait(timeout=30)
    live, fresh = summary(samples["live"]), summary(samples["fresh"])
    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} cores, load average {load:.2f}, profile disabled, pool size 2")
    rows = [
        (
            "one-shot /run print(2+2), live slots",
            f"{live['median'] * 1000:.1f}",
            f"{live['p95'] * 1000:.1f}",
            "<= 25 ms",
        ),
        (
            "one-shot /run print(2+2), fresh slots",
            f"{fresh['median'] * 1000:.1f}",
            f"{fresh['p95'] * 1000:.1f}",
            "(baseline)",
        ),
        ("ratio fresh / live (p50)", f"{fresh['median'] / live['median']:.2f}x", "", ""),
    ]
    print_table(rows, ("what", "p50 ms", "p95 ms", "goal"))


if __name__ == "__main__":
    main()
