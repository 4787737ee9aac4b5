"""microvm backend numbers, with baselines measured in the same run.

    .venv/bin/python bench/microvm.py            # snapshot path + cold boot (minutes on kvm_pvm)
    .venv/bin/python bench/microvm.py --no-cold  # skip the cold boot
    .venv/bin/python bench/microvm.py --json     # one JSON object instead of the table

Measures, for ``python3 -c 'print(2+2)'`` end to end through the Engine (request to result:
fresh VM, entropy and clock fixed up, VM destroyed):
  * latency from the warm snapshot, a VM restored per run (min/median/max over --runs),
  * latency from a prewarmed VM: restored, connected and primed (entropy + time) before the
    request, as the server's warm pool serves a hit; the VM is still fresh and used once,
  * host CPU of the VMMs per run on both paths (the guest kernel is emulated in them on
    kvm_pvm: this is what bounds throughput),
  * cold boot to result (Firecracker, one boot),
  * host memory of a VMM (RSS and PSS) right after restore and while user code runs,
  * runs/s at concurrency --concurrency,
  * the same latency for the ``sandbox`` backend (if it works here) and ``process``,
    and the ratios. Goals (issue 6): median <= 60 ms on kvm_pvm, >= 15 runs/s on 2 cores,
    <= 16 MiB per VM.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from glasshouse.backends import create
from glasshouse.backends.microvm import images
from glasshouse.core.execution import Backend, BackendError, ExecutionSpec
from glasshouse.engine import Engine

CODE = ["python3", "-c", "print(2+2)"]


def _one(backend: Backend) -> float:
    t0 = time.perf_counter()
    run = Engine(backend).run(ExecutionSpec(argv=CODE, timeout=60))
    dt = time.perf_counter() - t0
    if run.result.stdout.data != b"4\n":
        raise SystemExit(f"{backend.name}: wrong result: {run.result.error or run.result.stdout}")
    return dt


def _latency(backend: Backend, runs: int) -> dict[str, float]:
    _one(backend)  # warm the host page cache of the snapshot files
    times = [_one(backend) for _ in range(runs)]
    return {
        "min_ms": round(min(times) * 1000, 1),
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "n": runs,
    }


class _Prewarmed:
    """The server's warm pool, one slot at a time: each run's VM is restored, connected and
    primed (entropy + time) *before* the timed request, as a pool hit is. Not timed: the
    prewarm, and 0.3 s in which the guest handles its prime frame while it waits, as it
    does in a pool."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.isolation = inner.name, inner.isolation
        self.slot: Any = None

    def fill(self) -> None:
        self.slot = self.inner.prewarm()
        time.sleep(0.3)

    def prepare(self) -> None:
        self.inner.prepare()

    def start(self, spec: ExecutionSpec, stdout: Any = None, stderr: Any = None) -> Any:
        slot, self.slot = self.slot, None
        return self.inner.start_prewarmed(slot, spec, stdout, stderr)

    def __getattr__(self, name: str) -> Any:  # release, wait, kill, cleanup
        return getattr(self.inner, name)


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _cpu_per_run(backend: Any, runs: int, fill: Any = None) -> float:
    """Host CPU of the VMMs (guest included: its kernel is emulated in the vCPU thread) per
    run, restore to teardown, once every VM of the runs has been reaped."""
    backend.close()
    t0 = _children_cpu_ms()
    for _ in range(runs):
        if fill is not None:
            fill()
        _one(backend)
    backend.close()
    return round((_children_cpu_ms() - t0) / runs, 1)


def _pooled_latency(vm: Any, runs: int) -> dict[str, float]:
    pooled = _Prewarmed(vm)
    times = []
    for _ in range(runs + 1):
        pooled.fill()
        times.append(_one(pooled))
    times = times[1:]
    return {
        "min_ms": round(min(times) * 1000, 1),
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "n": runs,
        "vmm_cpu_ms_per_run": _cpu_per_run(pooled, min(runs, 10), pooled.fill),
    }


def _mem_kib(pid: int) -> tuple[int, int, int]:
    """RSS, PSS and private dirty KiB of a VMM. Private dirty is what this VM alone costs
    (its copy-on-write pages of the snapshot memory plus the VMM's own heap); the rest of
    its RSS is the page cache of the snapshot file, shared by every VM restored from it."""
    rss = pss = dirty = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Private_Dirty:"):
                dirty = int(line.split()[1])
    except OSError:
        pass
    return rss, pss, dirty


def _memory(backend: Backend) -> dict[str, float]:
    spec = ExecutionSpec(argv=["python3", "-c", "print(2+2); import time; time.sleep(1.5)"])
    handle = backend.start(spec)
    try:
        assert handle.pid is not None
        after_restore = _mem_kib(handle.pid)
        backend.release(handle)
        sample: list[tuple[int, int, int]] = []
        timer = threading.Timer(0.8, lambda: sample.append(_mem_kib(handle.pid)))  # type: ignore[arg-type]
        timer.start()
        backend.wait(handle)
        timer.join()
    finally:
        backend.cleanup(handle)
    running = sample[0] if sample else (0, 0, 0)
    return {
        "restored_rss_mib": round(after_restore[0] / 1024, 1),
        "restored_pss_mib": round(after_restore[1] / 1024, 1),
        "restored_private_dirty_mib": round(after_restore[2] / 1024, 1),
        "running_rss_mib": round(running[0] / 1024, 1),
        "running_pss_mib": round(running[1] / 1024, 1),
        "running_private_dirty_mib": round(running[2] / 1024, 1),
    }


def _throughput(backend: Backend, total: int, concurrency: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: _one(backend), range(total)))
    return round(total / (time.perf_counter() - t0), 1)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--throughput-runs", type=int, default=40)
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs = max(1, min(args.runs, 200))
    total = max(1, min(args.throughput_runs, 400))

    out: dict[str, Any] = {"host_kvm": images.kvm_kind()}
    vm = create("microvm")
    t0 = time.perf_counter()
    vm.prepare()
    out["prepare_s"] = round(time.perf_counter() - t0, 2)
    snap = out["snapshot"] = _latency(vm, runs)
    snap["vmm_cpu_ms_per_run"] = _cpu_per_run(vm, min(runs, 10))
    pooled = out["prewarmed"] = _pooled_latency(vm, runs)
    mem = out["memory"] = _memory(vm)
    out["runs_per_s"] = _throughput(vm, total, args.concurrency)
    out["concurrency"] = args.concurrency
    if not args.no_cold:
        cold = create("microvm", snapshot=False)
        cold.prepare()
        out["cold_boot_s"] = round(_one(cold), 2)
    for name in ("sandbox", "process"):
        try:
            b = create(name)
            b.prepare()
            out[name] = _latency(b, runs)
            out[f"ratio_vs_{name}"] = round(snap["median_ms"] / out[name]["median_ms"], 2)
        except BackendError as exc:
            out[name] = {"unavailable": str(exc)}
    if args.json:
        print(json.dumps(out))
        return
    print(f"host: {out['host_kvm']}   prepare (snapshot cached or built): {out['prepare_s']} s")
    print(
        f"from snapshot, print(2+2) end to end: median {snap['median_ms']} ms "
        f"(min {snap['min_ms']}, max {snap['max_ms']}, n={snap['n']})   goal <= 60 ms (kvm_pvm)"
    )
    print(
        f"from a prewarmed VM (restored + primed ahead, the server's warm pool): median "
        f"{pooled['median_ms']} ms (min {pooled['min_ms']}, max {pooled['max_ms']}, "
        f"n={pooled['n']})   goal <= 60 ms (kvm_pvm)"
    )
    print(
        f"VMM CPU per run (guest kernel emulated in it): restore per run "
        f"{snap['vmm_cpu_ms_per_run']} ms, prewarmed {pooled['vmm_cpu_ms_per_run']} ms"
    )
    if "cold_boot_s" in out:
        print(f"cold boot to result (firecracker): {out['cold_boot_s']} s")
    print(
        f"VMM memory after restore: RSS {mem['restored_rss_mib']} MiB, "
        f"private dirty {mem['restored_private_dirty_mib']} MiB; while running: "
        f"RSS {mem['running_rss_mib']} MiB, PSS {mem['running_pss_mib']} MiB, "
        f"private dirty {mem['running_private_dirty_mib']} MiB   goal <= 16 MiB"
    )
    print(
        f"throughput at concurrency {args.concurrency} (a restore per run, no pool): "
        f"{out['runs_per_s']} runs/s   goal >= 15"
    )
    for name in ("sandbox", "process"):
        base = out[name]
        if "median_ms" in base:
            ratio = out[f"ratio_vs_{name}"]
            print(f"{name}: median {base['median_ms']} ms; microvm/{name} = {ratio}x")
        else:
            print(f"{name}: {base['unavailable']}")


if __name__ == "__main__":
    main()
