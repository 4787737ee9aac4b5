"""glasshouse-server round trips: ``print(2+2)`` over HTTP at concurrency 1, 4 and 16.

    .venv/bin/python bench/server.py [--requests 60] [--backends sandbox,microvm] [--json]

For each backend this host can run, a real ``glasshouse-server`` is started on a loopback
port (profile disabled, warm pool on) and driven by N client threads, each with its own
keep-alive connection. Reported per concurrency: p50 and p95 round-trip latency, throughput
(completed runs per second of wall time), errors (any non-200 or wrong stdout), and the
ratio to the baseline measured in the same run: a bare ``python3 -c 'print(2+2)'`` subprocess
driven at the same concurrency (what running the code costs with no sandbox, no HTTP and no
receipt). While the c=16 phase keeps the queue full, ``/health`` is sampled too (the API
promises an answer within 100 ms even then).

Goals (issue 8): sandbox p50 <= 50 ms at c=1 and >= 20 runs/s; microvm p50 <= 70 ms at c=1
and >= 15 runs/s; zero errors.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, print_table

CODE = "print(2+2)"
#: The interpreter the sandboxes run (PATH /usr/local/bin:/usr/bin:/bin), not a shim.
PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "/usr/bin/python3"
CONCURRENCY = (1, 4, 16)
PROBES = {"sandbox": "glasshouse.backends.sandbox", "microvm": "glasshouse.backends.microvm"}


def _probe(name: str) -> tuple[bool, str]:
    try:
        return importlib.import_module(PROBES[name]).probe()
    except Exception as exc:
        return False, str(exc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drive(one: callable, concurrency: int, total: int) -> tuple[list[float], int, float]:
    """Run ``one()`` ``total`` times from ``concurrency`` threads: (latencies, errors, wall)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal errors
        state: dict = {}
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            t0 = time.perf_counter()
            ok = one(state)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                errors += 0 if ok else 1
        if "client" in state:
            state["client"].close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def _bare(state: dict) -> bool:
    out = subprocess.run([PYTHON, "-c", CODE], capture_output=True, check=False)
    return out.stdout == b"4\n"


#: One example of each kind of failure seen, to print with the table.
FAILURES: dict[str, str] = {}


def _http(url: str):
    def one(state: dict) -> bool:
        client = state.get("client")
        if client is None:
            client = state["client"] = httpx.Client(base_url=url, timeout=120)
        try:
            r = client.post("/run", json={"code": CODE, "timeout": 30})
        except httpx.HTTPError as exc:
            FAILURES.setdefault(type(exc).__name__, str(exc)[:200])
            return False
        if r.status_code == 200 and r.json().get("stdout") == "4\n":
            return True
        body = r.json() if r.status_code == 200 else {}
        why = body.get("error") or f"stdout {body.get('stdout')!r}" if body else r.text[:200]
        FAILURES.setdefault(f"{url} {r.status_code}", str(why)[:300])
        return False

    return one


class _Server:
    def __init__(self, backend: str, args: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="glasshouse-bench-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "glasshouse.server.cli", "--backend", backend]
        cmd += ["--port", str(self.port), "--receipts-dir", str(self.dir / "receipts")]
        cmd += ["--log-level", "warning", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode(errors="replace"))
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up")
            time.sleep(0.1)

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def cpu_ms(self) -> tuple[float, float]:
        """CPU time so far: the server process itself, and its reaped children (VMMs,
        sandboxes): where a run's cost lands."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        tick = os.sysconf("SC_CLK_TCK")
        own = (int(fields[11]) + int(fields[12])) * 1000 / tick
        children = (int(fields[13]) + int(fields[14])) * 1000 / tick
        return own, children

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _health_sampler(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                client.get("/health")
                out.append(time.perf_counter() - t0)
            except httpx.HTTPError:
                out.append(float("inf"))
            stop.wait(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=60, help="runs per concurrency level")
    ap.add_argument("--backends", default="sandbox,microvm")
    ap.add_argument("--max-concurrency", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--profile", default="disabled", choices=["disabled", "host"])
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()

    results: dict = {"cores": os.cpu_count(), "requests": opts.requests, "runs": {}}
    print(f"# {opts.requests} runs per level, {os.cpu_count()} cores, profile {opts.profile}")
    baseline: dict[int, dict] = {}
    for c in CONCURRENCY:
        _drive(_bare, c, min(8, opts.requests))  # warm the page cache
        lat, err, wall = _drive(_bare, c, opts.requests)
        baseline[c] = {"p50": statistics.median(lat), "p95": pct(lat, 95), "rps": len(lat) / wall}
        baseline[c]["errors"] = err
    results["bare"] = baseline

    rows = []
    for c in CONCURRENCY:
        b = baseline[c]
        rows.append(
            (
                "bare python3 -c",
                str(c),
                f"{b['p50'] * 1000:.1f}",
                f"{b['p95'] * 1000:.1f}",
                f"{b['rps']:.1f}",
                str(b["errors"]),
                "1.00x",
                "1.00x",
            )
        )
    for name in [n.strip() for n in opts.backends.split(",") if n.strip()]:
        ok, why = _probe(name)
        if not ok:
            print(f"# {name}: skipped ({why[:200]})")
            results["runs"][name] = {"skipped": why}
            continue
        server = _Server(
            name,
            [
                # queue sized so the c=16 phase fills it exactly: /health is then sampled
                # with every place taken (a 17th request would get 429)
                *("--max-concurrency", str(opts.max_concurrency)),
                *("--queue", str(max(0, max(CONCURRENCY) - opts.max_concurrency))),
                *("--profile", opts.profile),
            ],
        )
        try:
            one = _http(server.url)
            _drive(one, 2, 10)  # warm-up: imports, pool, page cache
            per: dict = {}
            for c in CONCURRENCY:
                stop = threading.Event()
                health: list[float] = []
                sampler = None
                if c == max(CONCURRENCY):
                    sampler = threading.Thread(
                        target=_health_sampler, args=(server.url, stop, health)
                    )
                    sampler.start()
                cpu0 = server.cpu_ms()
                lat, err, wall = _drive(one, c, opts.requests)
                cpu1 = server.cpu_ms()
                stop.set()
                if sampler is not None:
                    sampler.join()
                rps = len(lat) / wall
                p50, p95 = statistics.median(lat), pct(lat, 95)
                per[c] = {"p50": p50, "p95": p95, "rps": rps, "errors": err}
                per[c]["server_cpu_ms_per_run"] = (cpu1[0] - cpu0[0]) / len(lat)
                per[c]["children_cpu_ms_per_run"] = (cpu1[1] - cpu0[1]) / len(lat)
                if health:
                    per[c]["health_p50_ms"] = statistics.median(health) * 1000
                    per[c]["health_p95_ms"] = pct(health, 95) * 1000
                    per[c]["health_max_ms"] = max(health) * 1000
                    per[c]["health_samples"] = len(health)
                rows.append(
                    (
                        f"server/{name}",
                        str(c),
                        f"{p50 * 1000:.1f}",
                        f"{p95 * 1000:.1f}",
                        f"{rps:.1f}",
                        str(err),
                        f"{p50 / baseline[c]['p50']:.2f}x",
                        f"{rps / baseline[c]['rps']:.2f}x",
                    )
                )
            per["pool"] = server.health().get("pool")
            results["runs"][name] = per
        finally:
            server.stop()

    print_table(
        rows,
        ("variant", "conc", "p50 ms", "p95 ms", "runs/s", "errors", "p50/bare", "rps/bare"),
    )
    for name, per in results["runs"].items():
        top = per.get(max(CONCURRENCY)) if isinstance(per, dict) else None
        if top and "health_p50_ms" in top:
            print(
                f"# {name}: /health while the queue was full ({top['health_samples']} samples):"
                f" p50 {top['health_p50_ms']:.1f} ms, p95 {top['health_p95_ms']:.1f} ms,"
                f" max {top['health_max_ms']:.1f} ms; pool {per.get('pool')}"
            )
    for name, per in results["runs"].items():
        levels = [c for c in CONCURRENCY if isinstance(per, dict) and c in per]
        if levels:
            cost = ", ".join(
                "c={} {:.0f}+{:.0f}".format(
                    c, per[c]["server_cpu_ms_per_run"], per[c]["children_cpu_ms_per_run"]
                )
                for c in levels
            )
            print(f"# {name}: CPU ms per run, server + its sandboxes/VMMs: {cost}")
    for kind, example in FAILURES.items():
        print(f"# failure {kind}: {example}")
    if opts.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
