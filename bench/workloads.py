"""Realistic workloads under each backend, as ratios to the bubblewrap sandbox (issue 17).

    .venv/bin/python bench/workloads.py [--backends process,sandbox,gvisor,microvm]
        [--rounds 3] [--cases print,alloc50,...] [--timeout 30] [--json]

A dozen runs a user's code does (pure-Python compute, a regex, building and serialising a
large structure, allocating 50/100/200 MiB, importing heavier stdlib modules, one
subprocess, a shell pipeline, writing 100 MiB, printing 10 MiB, reading files uploaded with
the request), each through the library (``glasshouse.Runner(backend, profile="disabled")``,
one Runner per backend reused by every round, so the microVM's snapshot is reused). Rounds
are interleaved (every case on every backend, then the next round), so load drift hits all
alike; the table gives the median wall time (the ``Runner.run`` call, receipt included),
the run's status, the code's own time where it reports one (``inner``), and the ratio to
the sandbox's median in the same run. A run that timed out or failed shows as such (its
status; its ratio is a lower bound ``>=`` for a timeout, none for a failure), never as a
fast time. A backend that is not available is reported with its reason and skipped.

``--cases`` also takes the probes for the microVM's memory (not run by default): ``touchN``
(``bytearray(N << 20)``, N in 8, 16, 24, 32, 50) and ``touchNx2`` (the same allocation, freed
and made again in the same run: the second touch); their in-run step times are printed.

The process backend has no private workspace: its runs get a temporary directory as ``cwd``
and the ``files`` case's files are written there beforehand (not uploaded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import glasshouse

PY = "/usr/bin/python3"  # in the microVM, `/usr/bin/python3 -c` runs in the warm interpreter
MIB = 1 << 20
BACKENDS = ("process", "sandbox", "gvisor", "microvm")
_FILES = {f"f{i}.bin": hashlib.sha256(b"%d" % i).digest() * (MIB // 64) for i in range(4)}
_FILES_SHA = hashlib.sha256(b"".join(_FILES[k] for k in sorted(_FILES))).hexdigest()


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    argv: tuple[str, ...]
    expect: str  # regex the stdout must match (re.search)
    files: dict[str, bytes] = field(default_factory=dict)
    default: bool = True


def _py(body: str) -> tuple[str, ...]:
    """``python3 -c`` running ``body``; the code's own time goes to stderr as ``inner_ms=``."""
    code = (
        "import time as _t\n_t0 = _t.perf_counter()\n"
        + body
        + "\nimport sys as _s\n"
        + "_s.stderr.write('inner_ms=%.1f\\n' % ((_t.perf_counter() - _t0) * 1e3))"
    )
    return (PY, "-c", code)


def _touch(n: int, times: int) -> str:
    """Allocate ``n`` MiB ``times`` times (freed in between), reporting each step's ms."""
    return (
        f"import time\nfor i in range({times}):\n"
        f"    t = time.perf_counter(); b = bytearray({n} << 20)\n"
        "    print('step%d_ms=%.1f' % (i + 1, (time.perf_counter() - t) * 1e3)); del b\n"
    )


_IMPORTS = (
    "import asyncio, email.mime.multipart, http.client, xml.etree.ElementTree, unittest,"
    " argparse, csv, statistics, difflib, tarfile, zipfile, sqlite3, logging.handlers,"
    " urllib.request, dataclasses, typing, pathlib, shutil, tempfile, uuid\nprint('ok')"
)

CASES: tuple[Case, ...] = (
    Case("print", "print(2+2)", _py("print(2 + 2)"), r"^4\n$"),
    Case(
        "compute",
        "pure-Python loop, 2M iterations",
        _py("s = 0\nfor i in range(2_000_000):\n    s += i * i % 7\nprint(s)"),
        r"^\d+\n$",
    ),
    Case(
        "regex",
        "regex findall over 1 MiB of text",
        _py(
            "import re\ntext = 'lorem ipsum dolor 12345 sit amet ' * 32768\n"
            "print(len(re.findall(r'\\b\\w+\\d\\b|\\d{3,}', text)))"
        ),
        r"^\d+\n$",
    ),
    Case(
        "json",
        "build 100k records, json.dumps + sha256",
        _py(
            "import json, hashlib\n"
            "d = {f'k{i}': {'id': i, 'name': 'x' * 20, 'tags': [i, i + 1, i + 2]}"
            " for i in range(100_000)}\n"
            "s = json.dumps(d)\nprint(len(s), hashlib.sha256(s.encode()).hexdigest()[:8])"
        ),
        r"^\d+ [0-9a-f]{8}\n$",
    ),
    *(
        Case(
            f"alloc{n}",
            f"bytearray({n} << 20)",
            _py(f"print(len(bytearray({n} << 20)))"),
            r"^\d+\n$",
        )
        for n in (50, 100, 200)
    ),
    Case("imports", "import 20 heavier stdlib modules", _py(_IMPORTS), r"^ok\n$"),
    Case(
        "subprocess",
        "subprocess.run(['/bin/echo', 'hi'])",
        _py(
            "import subprocess\n"
            "out = subprocess.run(['/bin/echo', 'hi'], capture_output=True).stdout\n"
            "print(out.decode(), end='')"
        ),
        r"^hi\n$",
    ),
    Case("pipeline", "sh -c 'ls / \\| wc -l'", ("sh", "-c", "ls / | wc -l"), r"^\s*\d+\n$"),
    Case(
        "write100",
        "write 100 MiB to a workspace file",
        _py(
            "import os\nblock = b'x' * (1 << 20)\nwith open('out.bin', 'wb') as f:\n"
            "    for _ in range(100):\n        f.write(block)\n"
            "print(os.path.getsize('out.bin')); os.remove('out.bin')"
        ),
        r"^104857600\n$",
    ),
    Case(
        "print10",
        "print 10 MiB to stdout",
        _py("import sys\nsys.stdout.write('x' * (10 << 20)); sys.stdout.flush()"),
        r"^x+$",
    ),
    Case(
        "files",
        "sha256 of 4 uploaded 512 KiB files",
        _py(
            "import hashlib\nh = hashlib.sha256()\n"
            f"for name in {sorted(_FILES)!r}:\n"
            "    with open(name, 'rb') as f:\n        h.update(f.read())\n"
            "print(h.hexdigest())"
        ),
        f"^{_FILES_SHA}\n$",
        files=_FILES,
    ),
    *(
        Case(
            f"touch{n}",
            f"bytearray({n} << 20), timed in the run",
            _py(_touch(n, 1)),
            "step1",
            default=False,
        )
        for n in (8, 16, 24, 32, 50)
    ),
    *(
        Case(
            f"touch{n}x2", f"bytearray({n} << 20) twice", _py(_touch(n, 2)), "step2", default=False
        )
        for n in (8, 16, 24, 32, 50)
    ),
)


@dataclass
class Sample:
    wall_ms: float
    status: str  # "ok", "timeout", "exit N", "signal N", "error: ...", "wrong output"
    inner_ms: float | None
    steps: dict[str, float]


def _status(res: glasshouse.Result, case: Case) -> str:
    if res.timed_out:
        return "timeout"
    if res.error:
        return "error: " + res.error.splitlines()[0][:120]
    if res.execution.signal:
        return f"signal {res.execution.signal}"
    if res.returncode != 0:
        return f"exit {res.returncode}"
    if not re.search(case.expect, res.stdout.decode(errors="replace")):
        return "wrong output: " + res.stdout[:60].decode(errors="replace")
    return "ok"


def _one(runner: glasshouse.Runner, case: Case, timeout: float, workdir: str | None) -> Sample:
    kw: dict[str, Any] = {"timeout": timeout, "limits": glasshouse.Limits(memory_bytes=512 * MIB)}
    if workdir is None:
        kw["files"] = case.files
    else:  # the process backend: no workspace; the files are already in its cwd
        kw["cwd"] = workdir
    t0 = time.perf_counter()
    res = runner.run(list(case.argv), **kw)
    wall = (time.perf_counter() - t0) * 1000
    err = res.stderr.decode(errors="replace")
    inner = re.search(r"inner_ms=([\d.]+)", err)
    steps = {m[1]: float(m[2]) for m in re.finditer(r"(step\d)_ms=([\d.]+)", res.stdout.decode())}
    return Sample(wall, _status(res, case), float(inner[1]) if inner else None, steps)


def _open(name: str, timeout: float, workdir: str) -> tuple[glasshouse.Runner | None, str]:
    """A prepared Runner for ``name`` and "" or None and why it is unavailable."""
    try:
        runner = glasshouse.Runner(name, profile="disabled")
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    probe = _one(runner, CASES[0], max(timeout, 120), workdir if name == "process" else None)
    if probe.status != "ok":
        runner.close()
        return None, f"print(2+2) failed: {probe.status}"
    return runner, ""


def _cell(samples: list[Sample]) -> dict[str, Any]:
    bad = [s.status for s in samples if s.status != "ok"]
    inner = [s.inner_ms for s in samples if s.inner_ms is not None and s.status == "ok"]
    steps: dict[str, list[float]] = {}
    for s in samples:
        for k, v in s.steps.items():
            steps.setdefault(k, []).append(v)
    return {
        "median_ms": round(statistics.median(s.wall_ms for s in samples), 1),
        "min_ms": round(min(s.wall_ms for s in samples), 1),
        "n": len(samples),
        "status": "ok"
        if not bad
        else f"{max(set(bad), key=bad.count)} ({len(bad)}/{len(samples)})",
        "timeouts": sum(s.status == "timeout" for s in samples),
        "failures": sum(s.status not in ("ok", "timeout") for s in samples),
        "inner_ms": round(statistics.median(inner), 1) if inner else None,
        "steps_ms": {k: round(statistics.median(v), 1) for k, v in sorted(steps.items())},
    }


def _ratio(cell: dict[str, Any], base: dict[str, Any] | None) -> str:
    if base is None or base["failures"] or base["timeouts"]:
        return "-"
    if cell["failures"]:
        return "fail"
    r = cell["median_ms"] / base["median_ms"]
    return (">=" if cell["timeouts"] else "") + (f"{r:.1f}x" if r >= 10 else f"{r:.2f}x")


def _table(out: dict[str, Any], backends: list[str], cases: list[Case]) -> list[str]:
    lines = ["| case | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for case in cases:
        row = out["results"][case.name]
        cells = []
        for b in backends:
            c = row[b]
            text = (
                f"{c['median_ms'] / 1000:.2f} s"
                if c["median_ms"] >= 1000
                else f"{c['median_ms']:.0f} ms"
            )
            if c["status"] != "ok":
                text += f" **{c['status']}**"
            if b != "sandbox":
                text += f" ({_ratio(c, row.get('sandbox'))})"
            if c["inner_ms"] is not None:
                text += f" [{c['inner_ms']:.0f}]"
            cells.append(text)
        lines.append(f"| `{case.name}`: {case.what} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--cases", default="", help="comma-separated case names (default: all default ones)"
    )
    ap.add_argument("--timeout", type=float, default=30.0, help="per-run timeout, seconds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    by_name = {c.name: c for c in CASES}
    wanted = [n for n in args.cases.split(",") if n] or [c.name for c in CASES if c.default]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    if not 1 <= args.rounds <= 50 or not 0 < args.timeout <= 600:
        ap.error("--rounds must be 1..50 and --timeout 0..600")
    cases = [by_name[n] for n in wanted]
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "timeout_s": args.timeout,
        "unavailable": {},
    }
    with tempfile.TemporaryDirectory(prefix="gh-workloads-") as workdir:
        for name, data in _FILES.items():
            Path(workdir, name).write_bytes(data)
        runners: dict[str, glasshouse.Runner] = {}
        for name in [b for b in args.backends.split(",") if b]:
            runner, why = _open(name, args.timeout, workdir)
            if runner is None:
                out["unavailable"][name] = why
                print(f"{name}: unavailable: {why}", file=sys.stderr)
            else:
                runners[name] = runner
        samples: dict[str, dict[str, list[Sample]]] = {
            c.name: {b: [] for b in runners} for c in cases
        }
        try:
            for rnd in range(args.rounds):
                for case in cases:
                    for name, runner in runners.items():
                        s = _one(runner, case, args.timeout, workdir if name == "process" else None)
                        samples[case.name][name].append(s)
                        print(
                            f"round {rnd + 1} {case.name:<11} {name:<8} "
                            f"{s.wall_ms:9.1f} ms  {s.status}",
                            file=sys.stderr,
                        )
        finally:
            for runner in runners.values():
                runner.close()
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out["results"] = {c: {b: _cell(v) for b, v in row.items()} for c, row in samples.items()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{out['date']}, {out['cpus']} cores, load {out['load_before']} -> {out['load_after']}, "
        f"{args.rounds} rounds, timeout {args.timeout:g} s; median wall per run "
        "(ratio to sandbox) [code's own ms]"
    )
    for line in _table(out, list(runners), cases):
        print(line)
    for case in cases:
        for b, c in out["results"][case.name].items():
            if c["steps_ms"]:
                steps = ", ".join(f"{k} {v:.0f} ms" for k, v in c["steps_ms"].items())
                print(f"{case.name} on {b}: in-run {steps}")
    for name, why in out["unavailable"].items():
        print(f"{name}: unavailable: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
