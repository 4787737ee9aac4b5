"""Prometheus metrics, written in the text exposition format (version 0.0.4) by hand.

Six metric families do not justify a dependency: counters and one histogram are a few lines
each, and the format is small and stable. The tests parse the output line by line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

#: Run latency buckets (seconds): a warm sandbox run is tens of ms, a timeout up to 300 s.
BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
OUTCOMES = ("ok", "nonzero_exit", "timeout", "killed", "error")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """Process-wide counters; ``render`` reads the live gauges through callables."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self.runs = dict.fromkeys(OUTCOMES, 0)
        self.rejected: dict[str, int] = {"queue_full": 0, "draining": 0}
        self.events_lost = 0
        self.receipt_errors = 0
        self._bucket_counts = [0] * len(BUCKETS)
        self._sum = 0.0
        self._count = 0

    def observe_run(self, outcome: str, seconds: float, events_lost: int) -> None:
        with self._lock:
            self.runs[outcome] = self.runs.get(outcome, 0) + 1
            self.events_lost += events_lost
            self._sum += seconds
            self._count += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._bucket_counts[i] += 1

    def mean_seconds(self, default: float = 1.0) -> float:
        """Mean run duration so far (``default`` before the first run)."""
        with self._lock:
            return self._sum / self._count if self._count else default

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def receipt_error(self) -> None:
        with self._lock:
            self.receipt_errors += 1

    def render(self, gauges: dict[str, tuple[str, Callable[[], int]]]) -> str:
        """The exposition text. ``gauges``: name -> (help, read function)."""
        backend = _escape(self.backend)
        lines: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("glasshouse_runs_total", "counter", "Runs finished, by outcome.")
            for outcome, n in self.runs.items():
                lines.append(
                    f'glasshouse_runs_total{{backend="{backend}",outcome="{_escape(outcome)}"}} {n}'
                )
            family(
                "glasshouse_runs_rejected_total",
                "counter",
                "Run requests refused before running (queue full, shutting down).",
            )
            for reason, n in self.rejected.items():
                lines.append(f'glasshouse_runs_rejected_total{{reason="{_escape(reason)}"}} {n}')
            family(
                "glasshouse_run_duration_seconds",
                "histogram",
                "Time from admission to receipt written, per run.",
            )
            for bound, n in zip(BUCKETS, self._bucket_counts, strict=True):
                lines.append(f'glasshouse_run_duration_seconds_bucket{{le="{bound}"}} {n}')
            lines.append(f'glasshouse_run_duration_seconds_bucket{{le="+Inf"}} {self._count}')
            lines.append(f"glasshouse_run_duration_seconds_sum {_num(self._sum)}")
            lines.append(f"glasshouse_run_duration_seconds_count {self._count}")
            family(
                "glasshouse_observer_events_lost_total",
                "counter",
                "Events the host observer reported lost, summed over runs.",
            )
            lines.append(f"glasshouse_observer_events_lost_total {self.events_lost}")
            family(
                "glasshouse_receipt_write_errors_total",
                "counter",
                "Runs whose receipt could not be stored (answered with 500).",
            )
            lines.append(f"glasshouse_receipt_write_errors_total {self.receipt_errors}")
        for name, (help_, read) in gauges.items():
            family(name, "gauge", help_)
            lines.append(f"{name} {read()}")
        return "\n".join(lines) + "\n"
