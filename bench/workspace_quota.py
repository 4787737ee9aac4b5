"""Per-run cost of a workspace disk quota: a tmpfs (what the sandbox uses) vs an ext4 image on
a loop device (the disk-backed alternative), set up and torn down on an empty directory.

    .venv/bin/python bench/workspace_quota.py [--rounds 15] [--size 1G]

Needs root (mounts). Directories are made under the sandbox base (same filesystem as the
workspaces) and removed afterwards. Medians in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import time
from pathlib import Path

from glasshouse.backends import _quota
from glasshouse.cli.params import parse_size

_BASE = Path(os.environ.get("GLASSHOUSE_SANDBOX_DIR", "/var/lib/glasshouse/sandbox"))


def tmpfs(size: int) -> tuple[float, float]:
    path = _BASE / f"bench-quota-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    try:
        t0 = time.perf_counter()
        _quota.mount(path, size, 0x70000001, 0x70000001)
        t1 = time.perf_counter()
        _quota.unmount(path)
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
    finally:
        path.rmdir()


def ext4_loop(size: int) -> tuple[float, float]:
    path = _BASE / f"bench-quota-{secrets.token_hex(4)}"
    image = path.with_suffix(".img")
    path.mkdir(mode=0o700)
    try:
        t0 = time.perf_counter()
        with open(image, "wb") as f:
            f.truncate(size)
        mkfs = ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0"]
        mkfs += ["-E", "lazy_itable_init=1,nodiscard", str(image)]
        subprocess.run(mkfs, check=True)
        subprocess.run(["mount", "-o", "loop,nosuid,nodev", str(image), str(path)], check=True)
        t1 = time.perf_counter()
        subprocess.run(["umount", str(path)], check=True)  # loop device auto-cleared
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
    finally:
        image.unlink(missing_ok=True)
        path.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", default="1G")
    args = parser.parse_args()
    size = parse_size(args.size)
    for name, fn in (("tmpfs", tmpfs), ("ext4 on loop", ext4_loop)):
        times = [fn(size) for _ in range(args.rounds)]
        up = statistics.median(t for t, _ in times)
        down = statistics.median(t for _, t in times)
        print(f"{name:14} setup {up:8.2f} ms   teardown {down:8.2f} ms")


if __name__ == "__main__":
    main()
