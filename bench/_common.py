"""Shared benchmark helpers: interleaved timing, percentiles, a small report table."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def time_command(argv: Sequence[str], **kw) -> float:
    """Wall seconds of one run of ``argv`` (output discarded)."""
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **kw)
    return time.perf_counter() - t0


def interleave(cases: dict[str, Callable[[], float]], rounds: int, warmup: int = 2):
    """Run every case once per round, in turn, so load changes hit all cases alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(warmup + rounds):
        for name, fn in cases.items():
            t = fn()
            if i >= warmup:
                samples[name].append(t)
    return samples


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": pct(values, 95), "min": min(values)}


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
