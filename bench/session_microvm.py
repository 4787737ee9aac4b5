"""microVM session numbers (docs/sessions.md, "Numbers (microvm)"): one session; open, the
first and later ``print(1)`` code steps, a command step, idle usage, and pause/resume with
50 MiB of interpreter state; a one-shot microVM run in the same minute for the load.

Run: ``PYTHONPATH=src .venv/bin/python bench/session_microvm.py``"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import glasshouse


def _ms(t0: float) -> int:
    return round((time.monotonic() - t0) * 1000)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _timed(label: str, call: object) -> object:
    t0 = time.monotonic()
    out = call()  # type: ignore[operator]
    print(f"{label}: {_ms(t0)} ms", flush=True)
    return out


def main() -> None:
    print("load average", _load())
    s = _timed("open", lambda: glasshouse.Session(backend="microvm", profile="disabled"))
    assert isinstance(s, glasshouse.Session)
    _timed("first code step (forks the interpreter)", lambda: s.run_code("print(1)", timeout=300))
    times = []
    for _ in range(15):
        t0 = time.monotonic()
        s.run_code("print(1)", timeout=60)
        times.append(_ms(t0))
    print(f"print(1) p50 {statistics.median(times)} ms (min {min(times)}, max {max(times)})")
    _timed("command step `true`", lambda: s.run_command(["true"], timeout=120))
    time.sleep(5)
    before = s.info()["usage"]
    time.sleep(10)
    after = s.info()["usage"]
    idle_cpu = (after["cpu_ms"] - before["cpu_ms"]) / 100
    print(f"idle: VMM cgroup {after['memory_bytes'] / 2**20:.1f} MiB, {idle_cpu:.2f} % of a core")
    fill = "x = bytearray(50 << 20)\nfor i in range(0, len(x), 4096): x[i] = 1"
    _timed("50 MiB of interpreter state", lambda: s.run_code(fill, timeout=600))
    print(f"VMM cgroup now {s.info()['usage']['memory_bytes'] / 2**20:.1f} MiB")
    _timed("pause", s.pause)
    _timed("resume", s.resume)
    _timed("first step after resume", lambda: s.run_code("print(len(x))", timeout=600))
    _timed("read the 50 MiB again", lambda: s.run_code("print(sum(x[::4096]))", timeout=600))
    print(f"VMM cgroup after resume {s.info()['usage']['memory_bytes'] / 2**20:.1f} MiB")
    s.close()
    argv = ["python3", "-c", "print(1)"]
    one_shot = lambda: glasshouse.run(argv, backend="microvm", profile="disabled")  # noqa: E731
    _timed("one-shot microvm print(1), same minute", one_shot)
    print("load average", _load())


if __name__ == "__main__":
    main()
