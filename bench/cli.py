"""CLI overhead: `glasshouse run --profile disabled -- true` vs bare `true`, same run.

    .venv/bin/python bench/cli.py [--rounds 40]

Goal (issue 13): at most 50 ms added at the median. Also prints the import time of the run
path (`python -X importtime`), the biggest contributors first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleave, print_table, summary, time_command

GH = [sys.executable, "-m", "glasshouse.cli"]
EXE = Path(sys.executable).with_name("glasshouse")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    gh = [str(EXE)] if EXE.exists() else GH
    with tempfile.TemporaryDirectory() as tmp:
        receipt = os.path.join(tmp, "r.json")
        cases = {
            "true": lambda: time_command(["true"]),
            "python3 -c pass": lambda: time_command([sys.executable, "-c", "pass"]),
            "glasshouse run -p disabled -- true": lambda: time_command(
                [*gh, "run", "-q", "-p", "disabled", "--receipt", receipt, "--", "true"]
            ),
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
    added = (summary(samples["glasshouse run -p disabled -- true"])["median"] - base) * 1000
    verdict = "OK" if added <= 50 else "OVER"
    print(f"\nadded at the median: {added:.1f} ms (goal <= 50 ms): {verdict}")

    out = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import glasshouse.cli, glasshouse.cli._run, glasshouse.runner, glasshouse.engine, "
            "glasshouse.backends.process, glasshouse.receipt.aggregate, glasshouse.receipt.store",
        ],
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
    print("\ntop-level imports on the run path (cumulative ms):")
    for name, cum in rows[:8]:
        print(f"  {cum / 1000:6.1f}  {name}")


if __name__ == "__main__":
    main()
