"""A small real file system for full-disk tests: a tmpfs mounted for one test (root only)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = 4096


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``mount`` (created); skip the test with the reason when
    this host cannot (not root, or mounting is refused)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real ENOSPC needs root")
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave_pages: int = 0) -> Path:
    """Fill the file system at ``mount``, then give back ``leave_pages`` pages; return the
    filler file (unlink it to free the space)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * PAGE
        while True:
            try:
                if os.write(fd, block) < PAGE:
                    break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, size - size % PAGE - leave_pages * PAGE)
    finally:
        os.close(fd)
    assert os.statvfs(mount).f_bavail == leave_pages
    return filler
