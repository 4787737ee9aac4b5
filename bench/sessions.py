"""glasshouse-server sessions: a step's round trip, session create, and idle sessions' cost.

    .venv/bin/python bench/sessions.py [--steps 200] [--creates 40] [--idle 100] [--json]

One real ``glasshouse-server`` (sandbox backend, profile disabled unless ``--profile host``,
warm pool on) on a loopback port, one keep-alive HTTP connection. Measured in the same run:

- **step**: ``POST /sessions/{id}/run {"code": "print(1)"}`` in a live session (the
  interpreter is up: nothing is spawned), round trip over HTTP, receipt stored;
- **one-shot**: ``POST /run {"code": "print(1)"}``, the baseline: blocks of 20 steps and 20
  one-shot runs alternate, so a change of host load hits both alike (between blocks the
  bench waits for the one-shots' background work, the warm pool's refill and the sandboxes'
  teardown: on 2 cores it would otherwise land in the steps' time);
- **create**: ``POST /sessions {}`` (a sandbox and its interpreter started), and the
  ``DELETE`` that closes it (the session receipt sealed), timed apart;
- ``--receipts-on-tmpfs``: the same with the receipt log in ``/dev/shm``, to show what the
  durable store's fsyncs (several per receipt) cost of each figure;
- **idle**: ``--idle`` sessions opened, each runs one ``print(1)`` step, then nothing for
  ``--idle-window`` seconds. Memory per session three ways: the sessions' cgroups'
  ``memory.current`` (what ``GET /sessions`` reports, page cache of the workspace included),
  the PSS of the server's descendant processes (bwrap, step agent, interpreter), and the
  server process's own RSS growth; CPU: the cgroups' CPU time and the server's over the window.

Goals (issue 15): step p50 <= 10 ms, create p50 <= 60 ms, an idle session <= 16 MiB and
CPU ~0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, print_table
from server import _probe, _Server

MIB = 1 << 20


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values) * 1000,
        "p95": pct(values, 95) * 1000,
        "min": min(values) * 1000,
        "n": len(values),
    }


def _timed(http: httpx.Client, method: str, path: str, **kw) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    response = http.request(method, path, **kw)
    elapsed = time.perf_counter() - t0
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return elapsed, response


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            parents[int(name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    out: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def _kib(pid: int, field: str, name: str = "smaps_rollup") -> int:
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_cpu_ms(pids: set[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / tick


def _settle(http: httpx.Client) -> None:
    """Wait until the server's background work for one-shot runs is done (the warm pool's
    refill; the sandboxes' teardown): on 2 cores it would land in the next step's time."""
    for _ in range(200):
        pool = http.get("/health").json()["pool"]
        if pool.get("ready", 0) >= pool.get("size", 0):
            break
        time.sleep(0.01)
    time.sleep(0.2)


def _steps_vs_oneshot(http: httpx.Client, sid: str, rounds: int, block: int = 20) -> dict:
    """Blocks of ``block`` steps and ``block`` one-shot runs, alternating (so a change of
    host load hits both alike), the first of each block a warm-up."""
    samples: dict[str, list[float]] = {"step": [], "oneshot": []}
    paths = {"step": f"/sessions/{sid}/run", "oneshot": "/run"}
    while len(samples["step"]) < rounds:
        for name in ("step", "oneshot"):
            for i in range(block + 1):
                elapsed = _timed(http, "POST", paths[name], json={"code": "print(1)"})[0]
                if i:
                    samples[name].append(elapsed)
            _settle(http)
    return {name: _ms(values) for name, values in samples.items()}


def _creates(http: httpx.Client, rounds: int) -> dict[str, dict]:
    opened, closed = [], []
    for i in range(rounds + 3):
        t_open, response = _timed(http, "POST", "/sessions", json={})
        t_close, _ = _timed(http, "DELETE", f"/sessions/{response.json()['id']}")
        if i >= 3:  # warm-up
            opened.append(t_open)
            closed.append(t_close)
    return {"create": _ms(opened), "close": _ms(closed)}


def _idle(http: httpx.Client, server: _Server, count: int, window: float) -> dict[str, float]:
    server_rss0 = _kib(server.proc.pid, "VmRSS", "status")
    fds0 = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    ids = []
    for _ in range(count):
        sid = _timed(http, "POST", "/sessions", json={})[1].json()["id"]
        _timed(http, "POST", f"/sessions/{sid}/run", json={"code": "print(1)"})
        ids.append(sid)
    time.sleep(2)  # let the last steps' teardown settle
    tree = _descendants(server.proc.pid)
    listed = http.get("/sessions").json()["sessions"]
    cg_mem0 = sum(s["usage"]["memory_bytes"] or 0 for s in listed)
    cg_cpu0 = sum(s["usage"]["cpu_ms"] or 0 for s in listed)
    pss = sum(_kib(pid, "Pss") for pid in tree) * 1024
    rss_server = _kib(server.proc.pid, "VmRSS", "status") - server_rss0
    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd")) - fds0
    own0, _ = server.cpu_ms()
    tree_cpu0 = _tree_cpu_ms(tree)
    time.sleep(window)
    own1, _ = server.cpu_ms()
    tree_cpu1 = _tree_cpu_ms(tree)
    listed = http.get("/sessions").json()["sessions"]
    cg_cpu1 = sum(s["usage"]["cpu_ms"] or 0 for s in listed)
    t0 = time.perf_counter()
    for sid in ids:
        _timed(http, "DELETE", f"/sessions/{sid}")
    close_all = time.perf_counter() - t0
    window_ms = window * 1000
    return {
        "sessions": count,
        "processes": len(tree),
        "memory_current_mib_per_session": cg_mem0 / count / MIB,
        "pss_mib_per_session": pss / count / MIB,
        "server_rss_mib_per_session": rss_server * 1024 / count / MIB,
        "server_fds_per_session": fds / count,
        "cgroup_cpu_pct_per_session": (cg_cpu1 - cg_cpu0) / window_ms / count * 100,
        "tree_cpu_pct_total": (tree_cpu1 - tree_cpu0) / window_ms * 100,
        "server_cpu_pct": (own1 - own0) / window_ms * 100,
        "window_s": window,
        "close_all_s": close_all,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="step / one-shot rounds")
    ap.add_argument("--creates", type=int, default=40, help="sessions opened and closed")
    ap.add_argument("--idle", type=int, default=100, help="idle sessions held open")
    ap.add_argument("--idle-window", type=float, default=10.0, help="seconds of idleness")
    ap.add_argument("--profile", default="disabled", choices=["disabled", "host"])
    ap.add_argument(
        "--receipts-on-tmpfs",
        action="store_true",
        help="keep the receipts in /dev/shm: the same runs without the disk's fsyncs",
    )
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()

    ok, why = _probe("sandbox")
    if not ok:
        print(f"# sandbox: cannot run here ({why[:200]})")
        return 1
    load = os.getloadavg()[0]
    store = "tmpfs" if opts.receipts_on_tmpfs else "disk"
    print(
        f"# {os.cpu_count()} cores, load average {load:.2f}, profile {opts.profile}, "
        f"receipts on {store}"
    )
    shm = tempfile.mkdtemp(prefix="glasshouse-bench-", dir="/dev/shm")
    receipts = ["--receipts-dir", f"{shm}/receipts"] if opts.receipts_on_tmpfs else []
    server = _Server(
        "sandbox",
        [
            *receipts,  # (after the default: the last one counts)
            *("--profile", opts.profile),
            *("--max-sessions", str(opts.idle + 10)),
            *("--max-concurrency", str(os.cpu_count() or 1)),
        ],
    )
    results: dict = {"cores": os.cpu_count(), "load": load, "profile": opts.profile}
    results["receipts_on"] = store
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            sid = _timed(http, "POST", "/sessions", json={})[1].json()["id"]
            results.update(_steps_vs_oneshot(http, sid, opts.steps))
            _timed(http, "DELETE", f"/sessions/{sid}")
            results.update(_creates(http, opts.creates))
            results["idle"] = _idle(http, server, opts.idle, opts.idle_window)
    finally:
        server.stop()
        shutil.rmtree(shm, ignore_errors=True)
    _report(results)
    if opts.json:
        print(json.dumps(results, indent=2))
    return 0


def _report(r: dict) -> None:
    rows = []
    for name, label, goal in (
        ("step", "session step print(1), HTTP", "<= 10 ms"),
        ("oneshot", "one-shot /run print(1), HTTP", "(baseline)"),
        ("create", "session create (POST /sessions)", "<= 60 ms"),
        ("close", "session close (DELETE, receipt sealed)", ""),
    ):
        m = r[name]
        rows.append((label, str(m["n"]), f"{m['p50']:.1f}", f"{m['p95']:.1f}", goal))
    print_table(rows, ("what", "n", "p50 ms", "p95 ms", "goal"))
    idle = r["idle"]
    print(
        f"\n{idle['sessions']} idle sessions ({idle['processes']} processes), "
        f"{idle['window_s']:g} s idle window:"
    )
    print_table(
        [
            (
                "memory.current per session (cgroup)",
                f"{idle['memory_current_mib_per_session']:.2f} MiB",
                "<= 16 MiB",
            ),
            (
                "PSS per session (bwrap, agent, interpreter)",
                f"{idle['pss_mib_per_session']:.2f} MiB",
                "<= 16 MiB",
            ),
            ("server RSS growth per session", f"{idle['server_rss_mib_per_session']:.2f} MiB", ""),
            ("server descriptors per session", f"{idle['server_fds_per_session']:.1f}", ""),
            (
                "CPU per session (cgroup)",
                f"{idle['cgroup_cpu_pct_per_session']:.4f} % of a core",
                "~0",
            ),
            ("CPU, all session processes", f"{idle['tree_cpu_pct_total']:.3f} % of a core", "~0"),
            ("CPU, the server process", f"{idle['server_cpu_pct']:.3f} % of a core", "~0"),
            ("closing all of them", f"{idle['close_all_s']:.1f} s", ""),
        ],
        ("idle", "value", "goal"),
    )


if __name__ == "__main__":
    sys.exit(main())
