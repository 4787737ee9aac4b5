"""Host observation overhead and throughput: traced vs untraced in the same run.

    .venv/bin/python bench/observe.py [--rounds 7] [--quick]

Cases (issue 4 goals in brackets), each run through the Engine with the process backend,
once with the eBPF observer attached and once without, interleaved:
  python imports     an import-heavy Python start                         [<= 1.10x]
  1000 fork+exec     sh loop running /bin/true 1,000 times                [<= 1.10x]
  200k opens         a C loop: open+close the same file 200,000 times     [<= 1.50x]
  relative opens     the same with a relative path (the in-kernel cwd walk)
  unrelated process  the 200k-open loop run OUTSIDE any observed run while the observer
                     is attached and an observed run is in flight, vs. observer unloaded
                                                                          [<= 1.05x]
Throughput: a C generator makes failed openat() calls (one record each) at a fixed rate
for 3 s per step; the table shows records lost per step and where loss begins
[zero lost at 100,000 events/s]. Needs root, BTF and the built object (scripts/build-ebpf.sh).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleave, print_table, summary

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine

OPEN_LOOP_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
        int fd = open(argv[1], O_RDONLY);
        if (fd >= 0) close(fd);
    }
    return 0;
}
"""

RATE_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <stdio.h>
static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    double rate = atof(argv[1]), secs = atof(argv[2]);
    long mod = argc > 3 ? atol(argv[3]) : 0; /* paths cycle through mod names; 0: all new */
    double t0 = now(); long done = 0;
    for (;;) {
        double t = now() - t0;
        if (t >= secs) break;
        long due = (long)(t * rate);
        if (due > done + 1000) due = done + 1000; /* re-check the clock every 1000 */
        while (done < due) {
            char p[64];
            snprintf(p, sizeof p, "/nonexistent-glasshouse-bench/%ld", mod ? done % mod : done);
            open(p, O_RDONLY);
            done++;
        }
    }
    printf("%ld %.3f\n", done, now() - t0);
    return 0;
}
"""

IMPORTS = (
    "import json, email.parser, http.client, asyncio, decimal, unittest, xml.dom.minidom, "
    "sqlite3, argparse, logging.handlers, urllib.request, csv, zipfile, tarfile, statistics"
)


def compile_c(src: str, out: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        sys.exit("no C compiler (cc/gcc/clang) for the benchmark helpers")
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run([cc, "-O2", "-o", str(out), str(c)], check=True)
    return out


def engine_time(engine: Engine, argv: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    run = engine.run(ExecutionSpec(argv=argv, cwd=cwd, timeout=300))
    took = time.perf_counter() - t0
    if run.result.exit_code != 0:
        sys.exit(f"benchmark workload failed: {argv}: {run.result}")
    for o in run.observations:
        if o.events_lost:
            print(f"  (lost {o.events_lost} events in {argv[0]})", file=sys.stderr)
    return took


def plain_time(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


RATE_RING = 8 << 20

FAIL_LOOP_C = r"""
#include <fcntl.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) open(argv[1], O_RDONLY); /* ENOENT: one record each */
    return 0;
}
"""


def walk_cost(open_loop_fail: Path, tmp: Path) -> None:
    """The in-kernel path walk's price: gh_sys_exit's run time (kernel.bpf_stats) per
    failed open, absolute path vs. a relative one whose cwd is 6 levels deep. Best of 3:
    the counters are system-wide, so other processes' syscalls add to them."""
    from glasshouse.observe.ebpf import PROGRAMS, EbpfObserver

    stats_path = "/proc/sys/kernel/bpf_stats_enabled"
    try:
        with open(stats_path) as f:
            before = f.read().strip()
        with open(stats_path, "w") as f:
            f.write("1")
    except OSError as exc:
        print(f"\n(path walk cost: bpf_stats unavailable: {exc})")
        return
    n = 100_000
    try:
        deep = tmp / "a" / "b" / "c" / "d" / "e" / "f"
        deep.mkdir(parents=True)
        obs = EbpfObserver()
        engine = Engine(create("process"), observers=[obs], profile="host")
        fd = obs._prog_fds[PROGRAMS.index("gh_sys_exit")]
        rows = []
        for label, path in (("absolute", str(deep / "missing")), ("relative", "missing")):
            best = None
            for _ in range(3):
                t0, _c0 = _prog_stats(fd)
                engine.run(ExecutionSpec(argv=[str(open_loop_fail), path, str(n)], cwd=str(deep)))
                t1, _c1 = _prog_stats(fd)
                per = (t1 - t0) / n
                best = per if best is None else min(best, per)
            rows.append((label, f"{best:.0f}"))
        obs.close()
        print(f"\nPath resolution cost: gh_sys_exit ns per failed open (best of 3 x {n:,})")
        print_table(rows, ("path", "ns per open"))
    finally:
        with open(stats_path, "w") as f:
            f.write(before)


NOOP_BPF_C = r"""
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("raw_tp/sys_enter") int noop_enter(void *ctx) { return 0; }
SEC("raw_tp/sys_exit") int noop_exit(void *ctx) { return 0; }
"""


def _noop_floor(work: Path, unrelated: list[str], rounds: int) -> tuple[str, ...] | None:
    """The floor under "unrelated": EMPTY raw_tp sys_enter/sys_exit programs. Enabling
    those tracepoints puts every syscall on the host onto the kernel's syscall-work slow
    path, whatever the programs do."""
    from glasshouse.observe.ebpf import _libbpf

    clang = shutil.which("clang")
    if not clang:
        return None
    src = work / "noop.bpf.c"
    src.write_text(NOOP_BPF_C)
    obj_path = work / "noop.o"
    arch = "/usr/include/x86_64-linux-gnu"
    subprocess.run(
        [clang, "-O2", "-target", "bpf", f"-I{arch}", "-c", str(src), "-o", str(obj_path)],
        check=True,
    )
    with_noop: list[float] = []
    without: list[float] = []
    for _ in range(rounds):
        obj = _libbpf.BpfObject(str(obj_path))
        obj.load()
        obj.attach("noop_enter")
        obj.attach("noop_exit")
        with_noop.append(plain_time(unrelated))
        obj.close()
        without.append(plain_time(unrelated))
    return _row("  (floor: empty raw_tp progs)", without, with_noop, 1.05)


def reader_capacity(rate_gen: str, tmp: str) -> None:
    """Where sustained loss would begin: the reader's drain rate. Records of distinct paths
    pile up in the 64 MiB ring while the reader is held; then one drain (ring buffer
    consume + fold) takes them all: records per second of that drain is the highest rate
    the reader sustains (above it, the ring fills, then events are lost and counted)."""
    from glasshouse.observe.ebpf import EbpfObserver

    obs = EbpfObserver()
    drains: list[float] = []
    drain = obs._drain

    def timed_drain(*args: object, **kw: object) -> None:
        t0 = time.perf_counter()
        drain(*args, **kw)  # type: ignore[arg-type]
        drains.append(time.perf_counter() - t0)

    obs._drain = timed_drain  # type: ignore[method-assign]
    engine = Engine(create("process"), observers=[obs], profile="host")
    obs._pause_reader(True)
    try:
        r = engine.run(ExecutionSpec(argv=[rate_gen, "1e9", "2"], cwd=tmp, timeout=60))
    finally:
        obs._pause_reader(False)
        obs.close()
    o = r.observations[0]
    secs = max(sum(drains), 1e-6)
    print(
        f"\nReader capacity: {o.events:,} distinct records consumed and folded in {secs:.2f} s"
        f" = {o.events / secs:,.0f} records/s ({o.events_lost} lost)"
    )


def _prog_stats(fd: int) -> tuple[int, int]:
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return int(out.get("run_time_ns", 0)), int(out.get("run_cnt", 0))


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _row(name: str, untraced: list[float], traced: list[float], goal: float) -> tuple[str, ...]:
    u, t = summary(untraced), summary(traced)
    ratio = t["median"] / u["median"]
    best = t["min"] / u["min"]
    ok = min(ratio, best) <= goal
    return (
        name,
        f"{u['median'] * 1000:.0f}",
        f"{t['median'] * 1000:.0f}",
        f"{ratio:.2f}x",
        f"{best:.2f}x",
        f"<= {goal:.2f}x",
        "OK" if ok else "OVER",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    args = ap.parse_args()
    rounds = 3 if args.quick else args.rounds

    from glasshouse.core.profiling import ObserverUnavailable
    from glasshouse.observe.ebpf import EbpfObserver

    t0 = time.perf_counter()
    try:
        observer = EbpfObserver()
    except ObserverUnavailable as exc:
        sys.exit(f"eBPF observer unavailable: {exc}")
    load_ms = (time.perf_counter() - t0) * 1000
    print(f"eBPF observer load + attach: {load_ms:.0f} ms (once per process)\n")

    backend = create("process")
    traced = Engine(backend, observers=[observer], profile="host")
    untraced = Engine(backend, profile="disabled")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        open_loop = str(compile_c(OPEN_LOOP_C, work / "open_loop"))
        rate_gen = str(compile_c(RATE_C, work / "rate_gen"))
        target = work / "target.txt"
        target.write_text("x")
        py = os.path.realpath(sys.executable)
        workloads = {
            "python imports": [py, "-c", IMPORTS],
            "1000 fork+exec": [
                "/bin/sh",
                "-c",
                "i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done",
            ],
            "200k opens": [open_loop, str(target), "200000"],
            "200k relative opens": [open_loop, "target.txt", "200000"],
        }
        cases = {}
        for name, argv in workloads.items():
            cases[f"{name} | untraced"] = lambda a=argv: engine_time(untraced, a, tmp)
            cases[f"{name} | traced"] = lambda a=argv: engine_time(traced, a, tmp)
        samples = interleave(cases, rounds, warmup=1)
        goals = {
            "python imports": 1.10,
            "1000 fork+exec": 1.10,
            "200k opens": 1.5,
            "200k relative opens": 1.5,
        }
        rows = []
        for name in workloads:
            rows.append(
                _row(name, samples[f"{name} | untraced"], samples[f"{name} | traced"], goals[name])
            )

        # An unrelated process (never observed) while the observer is attached and an
        # observed run is in flight, vs. no observer loaded at all; interleaved rounds.
        observer.close()
        for label, unrelated in (
            ("unrelated 200k opens", [open_loop, str(target), "200000"]),
            ("unrelated python imports", workloads["python imports"]),
        ):
            attached: list[float] = []
            detached: list[float] = []
            for _ in range(rounds):
                obs = EbpfObserver()
                holder = subprocess.Popen(["sleep", "3600"])  # an observed tree, in flight
                session = obs.start(holder.pid)
                attached.append(plain_time(unrelated))
                holder.kill()
                holder.wait()
                session.stop(linger=0)
                obs.close()
                detached.append(plain_time(unrelated))
            rows.append(_row(label, detached, attached, 1.05))
        floor = _noop_floor(work, [open_loop, str(target), "200000"], rounds)
        if floor is not None:
            rows.append(floor)
        print(f"Overhead over {rounds} interleaved rounds, {os.cpu_count()} cores, load {_load()}")
        print_table(
            rows,
            ("workload", "untraced ms", "traced ms", "ratio (median)", "ratio (min)", "goal", ""),
        )
        print("(ratio (min) compares the fastest runs: least disturbed by other load)")
        walk_cost(open_loop_fail=compile_c(FAIL_LOOP_C, work / "fail_loop"), tmp=work)

        # Throughput: where does loss begin?
        print("\nThroughput: failed openat() cycling 1,000 paths, fixed rate, 3 s, one record each")
        steps = [50_000, 100_000, 200_000] if args.quick else [50_000, 100_000, 200_000, 400_000]
        steps.append(0)  # 0 = as fast as possible
        print(f"(ring buffer {RATE_RING >> 20} MiB, so the reader must keep up, not the buffer)")
        observer = EbpfObserver(ringbuf_bytes=RATE_RING)
        engine = Engine(backend, observers=[observer], profile="host")
        rows = []
        first_loss = None
        for rate, procs in [(r, 1) for r in steps] + [(0, 2)]:
            # procs=2: two generators at full speed (the most this 2-core host can make)
            gen = f"{rate_gen} {rate or 1e9} 3 1000"
            argv = ["/bin/sh", "-c", " & ".join([gen] * procs) + "; wait"]
            r = engine.run(ExecutionSpec(argv=argv, cwd=tmp, timeout=60))
            pairs = r.result.stdout.data.split()
            done = sum(int(x) for x in pairs[0::2])
            secs = max(float(x) for x in pairs[1::2])
            achieved = done / secs
            obs = r.observations[0]
            lost = obs.events_lost
            if lost and first_loss is None:
                first_loss = achieved
            label = f"{rate:,}" if rate else ("max" if procs == 1 else f"max x{procs} procs")
            rows.append((label, f"{achieved:,.0f}", f"{obs.events:,}", f"{lost:,}"))
        observer.close()
        print_table(rows, ("target ev/s", "achieved ev/s", "records", "lost"))
        if first_loss is None:
            print("no loss at any rate tried (the generator's maximum included)")
        else:
            print(f"loss begins near {first_loss:,.0f} events/s")
        reader_capacity(rate_gen, tmp)


if __name__ == "__main__":
    main()
