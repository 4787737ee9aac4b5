"""Training export at scale: records/s and peak RSS on 10k and 100k synthetic receipts.

    .venv/bin/python bench/training.py            # 100k receipts (about 1.5 GB-min of disk I/O)
    .venv/bin/python bench/training.py --n 20000  # quicker

Receipts are synthetic but schema-valid (a real run's receipt as template, varied process
trees, files, network and outcomes; every 1000th is validated against the model). The
baseline, measured in the same run, is the I/O floor: read + json.loads every file. Each
measurement runs in its own child process and reports its own peak RSS (VmHWM).
Constant memory shows as the same peak RSS at 10k and 100k receipts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

_CHILD = {
    "baseline": (
        "import json,os,sys\n"
        "d=sys.argv[1]\n"
        "n=0\n"
        "for name in sorted(os.listdir(d)):\n"
        "    if name.endswith('.json'):\n"
        "        json.loads(open(os.path.join(d,name),'rb').read()); n+=1\n"
        "print(n)\n" + "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    ),
    "export": (
        "import sys\n"
        "from glasshouse.training import export\n"
        "s=export(sys.argv[1], sys.argv[2])\n"
        "print(s.records)\n"
        + "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    ),
}


_HOSTS = ["127.0.0.1", "10.0.0.2", "93.184.216.34"]


def _template() -> dict:
    from glasshouse.backends import create
    from glasshouse.core.execution import ExecutionSpec
    from glasshouse.engine import Engine

    return Engine(create("process")).run(ExecutionSpec(argv=["true"])).receipt_data


def _synthetic(template: dict, i: int, rng: random.Random) -> dict:
    data = json.loads(json.dumps(template))
    data["execution_id"] = f"exec-{1_700_000_000_000 + i:013d}-{rng.getrandbits(80):020x}"
    exes = ["/usr/bin/python3", "/bin/sh", "/usr/bin/curl", "/usr/bin/git", "/usr/bin/pip"]
    data["process_tree"] = [
        {"pid": 100 + k, "ppid": 99 + k, "exe": rng.choice(exes), "argv": ["x", str(k)]}
        for k in range(rng.randint(1, 6))
    ]
    data["filesystem"]["reads"] = [f"/work/in/{rng.randint(0, 50)}.txt" for _ in range(5)] + [
        "/etc/hosts"
    ]
    data["filesystem"]["writes"] = [f"/tmp/out{rng.randint(0, 9)}" for _ in range(2)]
    data["network"]["attempts"] = [
        {
            "dst": f"{rng.choice(_HOSTS)}:{rng.choice([53, 80, 443])}",
            "protocol": rng.choice(["tcp", "udp"]),
            "result": "attempted",
        }
        for _ in range(rng.randint(0, 3))
    ]
    data["syscalls"]["counts"] = {"openat": rng.randint(1, 500), "read": rng.randint(1, 900)}
    code = rng.choice([0, 0, 0, 1, 2])
    data["outcome"]["exit_code"] = code
    data["exit_code"] = code
    data["observation"]["profile"] = "host"
    data["observation"]["missing"] = {}
    return data


def generate(directory: Path, n: int) -> float:
    from glasshouse.receipt.model import Receipt

    rng = random.Random(1234)
    template = _template()
    t0 = time.perf_counter()
    for i in range(n):
        data = _synthetic(template, i, rng)  # unsealed: RFC 8785 in pure Python is the slow part
        if i % 1000 == 0:
            Receipt.model_validate(data)
        (directory / f"{data['execution_id']}.json").write_text(json.dumps(data))
    return time.perf_counter() - t0


def measure(kind: str, directory: Path, out: Path) -> tuple[float, int, int]:
    """(seconds, records, peak RSS KiB) of one child process (its VmHWM: ru_maxrss would
    include the parent's RSS inherited across fork)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD[kind], str(directory), str(out)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, _usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed with exit {proc.returncode}")
    records, hwm = output.split()
    return seconds, int(records), int(hwm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="receipts (default 100000)")
    parser.add_argument("--small", type=int, default=10_000, help="the small run (10000)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gh-bench-training-"))
    try:
        big, small = root / "big", root / "small"
        big.mkdir()
        small.mkdir()
        gen_s = generate(big, args.n)
        for name in sorted(os.listdir(big))[: args.small]:
            os.link(big / name, small / name)
        print(f"generated {args.n} receipts in {gen_s:.1f}s ({args.n / gen_s:,.0f}/s)")
        rows = []
        results = {}
        for label, d, n in (("small", small, args.small), ("big", big, args.n)):
            for kind in ("baseline", "export"):
                subprocess.run(["sync"], check=False)
                s, records, rss = measure(kind, d, root / f"{label}.jsonl")
                assert records == n, (kind, records, n)
                results[(label, kind)] = (s, rss)
                rows.append((f"{n:,}", kind, f"{s:.2f}", f"{n / s:,.0f}", f"{rss / 1024:.1f}"))
        print_table(rows, ("receipts", "what", "seconds", "records/s", "peak RSS MiB"))
        b_s, b_rss = results[("big", "baseline")]
        e_s, e_rss = results[("big", "export")]
        s_rss = results[("small", "export")][1]
        print(
            f"export/baseline time ratio at {args.n:,}: {e_s / b_s:.2f}x; "
            f"export peak RSS {args.n:,} vs {args.small:,}: {e_rss / s_rss:.2f}x "
            f"({e_rss / 1024:.1f} vs {s_rss / 1024:.1f} MiB); baseline RSS {b_rss / 1024:.1f} MiB"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
