"""Startup cost of the sandbox backends: ``python3 -c pass`` bare vs bubblewrap vs gVisor.

    .venv/bin/python bench/sandbox.py [--runs 30] [--gvisor-runs 5] [--json]

All variants run in one process, in rotating blocks of 5 runs (so load drift hits each alike), and
are reported as medians, milliseconds added over bare, and ratios to bare:

- ``bare``: posix_spawn(python3 -c pass) + wait, no Glasshouse at all (the baseline);
- ``bwrap only``: the same under ``bwrap`` with the sandbox's namespaces and mounts, spawned
  directly (what bubblewrap itself costs);
- ``process backend``: Glasshouse's process backend (fork, gate, per-run cgroup, capture);
- ``sandbox backend``: the full bubblewrap backend: per-run cgroup, workspace, uid, seccomp
  filter, glasshouse-init;
- ``sandbox, no seccomp``: the same without the filter (the filter's own cost);
- ``sandbox, no cgroup``: the same without the per-run cgroup (rlimits only), to show the
  cgroup attach's share (on cgroup-v1/hybrid hosts one ``cgroup.procs`` write waits for an
  RCU grace period);
- ``gvisor backend``: runsc --platform=ptrace, same layout (fewer runs: ~0.4 s each).

Needs root for the cgroup-backed variants (as the backends do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable

from glasshouse.backends.process import ProcessBackend
from glasshouse.backends.sandbox import GVisorBackend, SandboxBackend, probe, probe_gvisor
from glasshouse.core.execution import Backend, ExecutionSpec
from glasshouse.engine import Engine

PY = "/usr/bin/python3"
ARGV = [PY, "-c", "pass"]
_BLOCK = 5


def _spawn(argv: list[str]) -> Callable[[], None]:
    def once() -> None:
        pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/bin:/bin"})
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise SystemExit(f"{argv[0]} failed with status {status}")

    return once


def _engine(backend: Backend) -> Callable[[], None]:
    backend.prepare()
    engine = Engine(backend)

    def once() -> None:
        run = engine.run(ExecutionSpec(argv=ARGV))
        if run.result.exit_code != 0:
            raise SystemExit(f"{backend.name}: {run.result.error or run.result.exit_code}")

    return once


def _bwrap_only() -> list[str]:
    bwrap = shutil.which("bwrap") or "bwrap"
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
    args += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for target, link in (("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64")):
        if os.path.isdir("/" + target):
            args += ["--symlink", target, link]
    return [*args, "--", *ARGV]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="runs per bubblewrap variant")
    ap.add_argument("--gvisor-runs", type=int, default=5, help="runs for gVisor (0: skip)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args()
    if not 1 <= args.runs <= 500 or not 0 <= args.gvisor_runs <= 50:
        ap.error("--runs must be 1..500 and --gvisor-runs 0..50")

    variants: dict[str, Callable[[], None]] = {"bare": _spawn(ARGV)}
    ok, why = probe()
    if not ok:
        print(f"bubblewrap unavailable: {why}", file=sys.stderr)
        return 2
    variants["bwrap only"] = _spawn(_bwrap_only())
    variants["process backend"] = _engine(ProcessBackend())
    variants["sandbox backend"] = _engine(SandboxBackend())
    variants["sandbox, no seccomp"] = _engine(SandboxBackend(seccomp=False))
    variants["sandbox, no cgroup"] = _engine(SandboxBackend(cgroups=False))
    gvisor_ok, gvisor_why = probe_gvisor()
    if args.gvisor_runs and gvisor_ok:
        variants["gvisor backend"] = _engine(GVisorBackend())
    elif args.gvisor_runs:
        print(f"gvisor skipped: {gvisor_why}", file=sys.stderr)

    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up: page cache, skeletons, seccomp program
        fn()
    # Blocks of _BLOCK runs per variant, rotated: slow drift hits every variant alike, and the
    # kernel's asynchronous teardown of a run's namespaces lands on the same variant's next
    # run rather than on a different variant's.
    todo = {name: args.gvisor_runs if "gvisor" in name else args.runs for name in variants}
    while any(todo.values()):
        for name, fn in variants.items():
            for _ in range(min(_BLOCK, todo[name])):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1000)
                todo[name] -= 1

    bare = statistics.median(samples["bare"])
    rows = []
    for name, values in samples.items():
        med = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "runs": len(values),
                "median_ms": round(med, 2),
                "added_ms": round(med - bare, 2),
                "ratio": round(med / bare, 2),
            }
        )
    sandbox = next(r for r in rows if r["variant"] == "sandbox backend")
    process = next(r for r in rows if r["variant"] == "process backend")
    summary = {
        "sandbox_added_over_bare_ms": sandbox["added_ms"],
        "sandbox_added_over_process_backend_ms": round(
            sandbox["median_ms"] - process["median_ms"], 2
        ),
        "goal_ms": 15,
        "load_avg_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary}, indent=2))
        return 0
    print(f"python3 -c pass, medians over interleaved runs (load {summary['load_avg_1m']:.2f})")
    print(f"{'variant':<22}{'runs':>5}{'median ms':>11}{'added ms':>10}{'x bare':>8}")
    for r in rows:
        print(
            f"{r['variant']:<22}{r['runs']:>5}{r['median_ms']:>11.1f}"
            f"{r['added_ms']:>+10.1f}{r['ratio']:>7.2f}x"
        )
    print(
        f"sandbox backend adds {summary['sandbox_added_over_bare_ms']:+.1f} ms over bare "
        f"({summary['sandbox_added_over_process_backend_ms']:+.1f} ms over the process backend); "
        "goal <= +15 ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
