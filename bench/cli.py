"""CLI overhead: `glasshouse run --profile disabled -- true` vs bare `true`, same run.

    .venv/bin/python bench/cli.py [--rounds 40]

Goal (issue 13): at most 50 ms added at the median. Also times the same run through the
click command (no `--`: the fast path leaves that form to click), the per-run cgroup attach
on this host (an RCU grace period unless cgroup2 has `favordynmods`), and prints the import
time of the run path (`python -X importtime`), the biggest contributors first.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleave, print_table, summary, time_command

GH = [sys.executable, "-m", "glasshouse.cli"]
EXE = Path(sys.executable).with_name("glasshouse")
FAST = "glasshouse run -p disabled -- true"
CLICK = "glasshouse run -p disabled true (click)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    gh = [str(EXE)] if EXE.exists() else GH
    with tempfile.TemporaryDirectory() as tmp:
        receipt = os.path.join(tmp, "r.json")
        run = [*gh, "run", "-q", "-p", "disabled", "--receipt", receipt]
        cases = {
            "true": lambda: time_command(["true"]),
            "python3 -c pass": lambda: time_command([sys.executable, "-c", "pass"]),
            FAST: lambda: time_command([*run, "--", "true"]),
            CLICK: lambda: time_command([*run, "true"]),
        }
        samples = interleave(cases, args.rounds)
    base = summary(samples["true"])["median"]
    rows = []
    for name, values in samples.items():
        s = summary(values)
        rows.append(
            (
                name,
                f"{s['median'] * 1000:.1f}",
                f"{s['p95'] * 1000:.1f}",
                f"{(s['median'] - base) * 1000:+.1f}",
                f"{s['median'] / base:.1f}x",
            )
        )
    print(f"CLI overhead, {args.rounds} interleaved rounds, {os.cpu_count()} cores")
    print_table(rows, ("command", "median ms", "p95 ms", "added ms", "ratio"))
    added = (summary(samples[FAST])["median"] - base) * 1000
    verdict = "OK" if added <= 50 else "OVER"
    print(f"\nadded at the median: {added:.1f} ms (goal <= 50 ms): {verdict}")
    _attach_cost()
    _imports()


def _attach_cost(rounds: int = 15) -> None:
    """Median time to put a fresh child into a fresh per-run cgroup (as each run does)."""
    from glasshouse.backends import _cgroup

    ok, why = _cgroup.available()
    if not ok:
        print(f"\ncgroup attach: not measured ({why})")
        return
    times = []
    for i in range(rounds):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a child to move, nothing more
            signal.pause()
            os._exit(0)
        group = _cgroup.Cgroup.create(_cgroup.owned_name("run-", f"bench-{i}"))
        try:
            t0 = time.perf_counter()
            group.add(pid)
            times.append(time.perf_counter() - t0)
        finally:
            group.kill()
            os.waitpid(pid, 0)
            group.remove()
        time.sleep(0.05)  # (lets the kernel's fast path lapse, as between two CLI runs)
    mounts = Path("/proc/mounts").read_text().splitlines()
    favor = any(m.startswith("cgroup2 ") and "favordynmods" in m.split()[3] for m in mounts)
    print(
        f"\nper-run cgroup attach: {statistics.median(times) * 1000:.1f} ms at the median "
        f"(cgroup2 favordynmods {'on' if favor else 'off'})"
    )


def _imports() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = ["run", "-q", "-p", "disabled", "--receipt", os.path.join(tmp, "r.json")]
        out = subprocess.run(
            [sys.executable, "-X", "importtime", *GH[1:], *run, "--", "true"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.replace("import time:", "").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        if not name.startswith("  "):  # top level only
            rows.append((name.strip(), int(parts[1])))
    rows.sort(key=lambda r: -r[1])
    print("\ntop-level imports of the run (cumulative ms, inflated by -X importtime):")
    for name, cum in rows[:10]:
        print(f"  {cum / 1000:6.1f}  {name}")


if __name__ == "__main__":
    main()
