"""The receipt log under faults: a full disk, I/O errors, short writes and crashes.

Each fault either leaves the log exactly as it was (a failed append is undone) or leaves a
state the next append settles; afterwards ``verify_log`` is clean and the next append takes
the next sequence number, linked to the last receipt: the chain never forks.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fs_helpers import PAGE, fill, small_tmpfs
from trust_helpers import real_receipt

from glasshouse.core.execution import new_execution_id
from glasshouse.receipt.canonical import seal, to_bytes
from glasshouse.receipt.log import HEAD, INDEX, ReceiptLog
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.verify_log import verify_log


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    """One real receipt (a real run); each append below gets a copy with a fresh id."""
    return real_receipt(["sh", "-c", "echo faults"])


def fresh(base: dict[str, Any]) -> Receipt:
    return Receipt.model_validate({**base, "execution_id": new_execution_id(), "digest": None})


def grow(directory: Path, base: dict[str, Any], n: int, **kw: Any) -> ReceiptLog:
    log = ReceiptLog(directory, **kw)
    for _ in range(n):
        log.append(fresh(base))
    return log


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of the log (temp files and probes excluded: they start with a dot)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def receipts_by_sequence(directory: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for p in directory.glob("exec-*.json"):
        if not p.name.endswith(".dsse.json"):
            data = json.loads(p.read_bytes())
            out[data["sequence"]] = data
    return out


def assert_clean(directory: Path, key: Any = None) -> None:
    report = verify_log(directory, key)
    assert report.ok, [str(p) for p in report.problems]


def assert_resumes(directory: Path, log: ReceiptLog, base: dict[str, Any], key: Any = None) -> None:
    """The log verifies; the next append takes the next sequence, linked to the last one."""
    assert_clean(directory, key)
    chain = receipts_by_sequence(directory)
    expected = len(chain)
    assert sorted(chain) == list(range(expected))
    nxt = log.append(fresh(base))
    assert nxt.sequence == expected
    assert nxt.previous_digest == (chain[expected - 1]["digest"] if expected else None)
    assert_clean(directory, key)


def _fault_points(
    monkeypatch: pytest.MonkeyPatch, name: str, fault: Callable[..., Any], k: int
) -> list[int]:
    """Replace ``os.<name>`` so its k-th call (1-based) runs ``fault``; return the counter."""
    real = getattr(os, name)
    calls = [0]

    def patched(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == k:
            return fault(real, *args)
        return real(*args)

    monkeypatch.setattr(os, name, patched)
    return calls


def _eio(real: Callable[..., Any], *args: Any) -> Any:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def _short_then_enospc(real: Callable[..., Any], fd: int, data: Any) -> int:
    """What the kernel does at the edge of a full disk: write part, then refuse."""
    written = real(fd, bytes(data)[: max(1, len(data) // 2)])

    def refuse(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.write = refuse  # restored by monkeypatch.undo() (the attribute is patched)
    return written


def _calls_in_one_append(base: dict[str, Any], tmp: Path, name: str, **kw: Any) -> int:
    log = grow(tmp, base, 2, **kw)
    with pytest.MonkeyPatch.context() as mp:
        calls = _fault_points(mp, name, _eio, 0)
        log.append(fresh(base))
    return calls[0]


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize(
    ("name", "fault"),
    [("fsync", _eio), ("write", _eio), ("write", _short_then_enospc)],
    ids=["fsync-EIO", "write-EIO", "short-write-then-ENOSPC"],
)
def test_a_failed_append_is_undone_at_every_step(
    base: dict[str, Any], tmp_path: Path, name: str, fault: Any, signed: bool
) -> None:
    """The fault hits each os.write / os.fsync call of an append in turn: every time the
    append raises, the log is byte for byte as before, and the chain resumes correctly."""
    kw: dict[str, Any] = {}
    public = None
    if signed:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        kw["signing_key"] = Ed25519PrivateKey.generate()
        public = kw["signing_key"].public_key()
    points = _calls_in_one_append(base, tmp_path / "count", name, **kw)
    pristine = tmp_path / "pristine"
    grow(pristine, base, 3, **kw)
    traces: list[int] = []
    failed: list[tuple[Path, ReceiptLog]] = []
    for k in range(1, points + 1):
        directory = tmp_path / f"at-{k}"
        shutil.copytree(pristine, directory)
        log = ReceiptLog(directory, **kw)
        before = snapshot(directory)
        with pytest.MonkeyPatch.context() as mp:
            _fault_points(mp, name, fault, k)
            with pytest.raises(OSError):
                log.append(fresh(base))
        if snapshot(directory) != before:
            traces.append(k)
        failed.append((directory, log))
    assert not traces, f"a {name} fault at call(s) {traces} of {points} left a trace"
    for directory, log in failed:
        assert log.failure is not None and "appending a receipt" in log.failure
        assert log.unavailable(probe=True) is None  # the fault is gone: the probe clears it
        assert_resumes(directory, log, base, public)


def test_a_short_write_is_continued_not_ignored(base: dict[str, Any], tmp_path: Path) -> None:
    """os.write may write less than asked: the rest is written, the INDEX line is whole."""
    log = grow(tmp_path, base, 2)
    real = os.write

    def short(fd: int, data: Any) -> int:
        return real(fd, bytes(data)[:18])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", short)
        stored = log.append(fresh(base))
    lines = (tmp_path / INDEX).read_text().splitlines()
    assert json.loads(lines[-1]) == {
        "sequence": 2,
        "id": stored.execution_id,
        "digest": stored.digest,
    }
    assert_resumes(tmp_path, log, base)


# -- a real full disk -------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "fs") as mount:
        yield mount


def pages_for_next(log: ReceiptLog, receipt: Receipt) -> int:
    """Pages the receipt file of the next append will take."""
    sequence, previous = log.head()
    linked = seal(receipt.model_copy(update={"sequence": sequence, "previous_digest": previous}))
    return -(-(len(to_bytes(linked)) + 1) // PAGE)


@pytest.mark.parametrize(
    "room",
    ["nothing", "receipt-not-head", "receipt-index-line-split"],
)
def test_a_full_disk_forks_nothing(base: dict[str, Any], small_fs: Path, room: str) -> None:
    """A real ENOSPC on a tmpfs: with no room at all; with room for the receipt file but
    not for HEAD; and (the reported case) with the INDEX line crossing a page boundary, so
    the journal write is short. The append fails and leaves nothing; once space is back the
    chain resumes at the right sequence and verifies."""
    directory = small_fs / "receipts"
    log = grow(directory, base, 3)
    if room == "receipt-index-line-split":
        # Grow INDEX until its next line crosses a page boundary.
        while True:
            index = (directory / INDEX).read_bytes()
            line = len(index.splitlines()[-1]) + 1
            if len(index) % PAGE + line > PAGE:
                break
            log.append(fresh(base))
    receipt = fresh(base)
    filler = fill(small_fs, 0 if room == "nothing" else pages_for_next(log, receipt))
    before = snapshot(directory)
    with pytest.raises(OSError) as caught:
        log.append(receipt)
    assert caught.value.errno == errno.ENOSPC
    assert snapshot(directory) == before
    assert_clean(directory)
    assert log.unavailable() is not None  # full: refused before any write is tried
    filler.unlink()
    assert log.unavailable() is None
    assert_resumes(directory, log, base)
    assert_resumes(directory, ReceiptLog(directory), base)  # and after a restart


# -- crashes -----------------------------------------------------------------------------------

_CRASHER = """
import os, signal, sys
from glasshouse.core.execution import new_execution_id
from glasshouse.receipt.log import ReceiptLog
from glasshouse.receipt.model import Receipt

directory, k, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
log = ReceiptLog(directory)
import json
data = json.loads(open(base).read())
receipt = Receipt.model_validate({**data, "execution_id": new_execution_id(), "digest": None})
calls = [0]
def crashing(name):
    real = getattr(os, name)
    def call(*args):
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)
    return call
for name in ("write", "fsync", "replace", "ftruncate", "unlink"):
    setattr(os, name, crashing(name))
log.append(receipt)
"""


def test_a_crash_at_any_point_of_an_append(base: dict[str, Any], tmp_path: Path) -> None:
    """A real process killed (SIGKILL) before each write, fsync, rename of an append: the
    next open and append settle what it left, and the chain verifies without a fork."""
    pristine = tmp_path / "pristine"
    grow(pristine, base, 3)
    base_file = tmp_path / "base.json"
    base_file.write_text(json.dumps(base))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    outcomes = []
    for k in range(1, 50):
        directory = tmp_path / f"crash-{k}"
        shutil.copytree(pristine, directory)
        done = subprocess.run(
            [sys.executable, "-c", _CRASHER, str(directory), str(k), str(base_file)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode in (0, -9), done.stderr
        log = ReceiptLog(directory)  # a restarted writer settles the crash at open
        assert_clean(directory)
        outcomes.append(len(receipts_by_sequence(directory)))
        assert_resumes(directory, log, base)
        if done.returncode == 0:
            break
    else:
        pytest.fail("the append never completed")
    # Early crashes lose the append, late ones (receipt complete) are committed on restart.
    assert outcomes[0] == 3 and outcomes[-1] == 4, outcomes


def test_a_partial_index_line_is_cut_before_the_next_append(
    base: dict[str, Any], tmp_path: Path
) -> None:
    """The reported state: an 18-byte partial INDEX line (a short write that was ignored)."""
    log = grow(tmp_path, base, 3)
    with open(tmp_path / INDEX, "ab") as fh:
        fh.write(b'{"sequence":3,"id"')
    assert_resumes(tmp_path, log, base)
    assert_resumes(tmp_path, ReceiptLog(tmp_path), base)


def test_a_receipt_without_its_index_line_is_adopted(base: dict[str, Any], tmp_path: Path) -> None:
    """The state an older version left when it crashed between the receipt file and INDEX
    (it wrote the file first): the file links to the head, so it joins the chain instead of
    its sequence being used twice."""
    grow(tmp_path, base, 3)
    index = (tmp_path / INDEX).read_bytes()
    head = (tmp_path / HEAD).read_bytes()
    orphan = ReceiptLog(tmp_path).append(fresh(base))
    (tmp_path / INDEX).write_bytes(index)
    (tmp_path / HEAD).write_bytes(head)
    os.utime(tmp_path / f"{orphan.execution_id}.json")  # written after HEAD, as in the crash
    log = ReceiptLog(tmp_path)
    assert log.head() == (4, orphan.digest)
    assert_resumes(tmp_path, log, base)


def test_an_interrupted_append_past_head_is_undone_when_incomplete(
    base: dict[str, Any], tmp_path: Path
) -> None:
    """An INDEX line whose receipt file never made it (a crash right after the journal):
    the line is removed, the sequence is free again, verify-log reports nothing."""
    log = grow(tmp_path, base, 3)
    before = snapshot(tmp_path)
    gone = log.append(fresh(base))
    (tmp_path / f"{gone.execution_id}.json").unlink()
    (tmp_path / HEAD).write_bytes(before[HEAD])
    log = ReceiptLog(tmp_path)
    assert snapshot(tmp_path) == before
    assert_resumes(tmp_path, log, base)


def test_stale_temp_files_of_dead_writers_are_swept(base: dict[str, Any], tmp_path: Path) -> None:
    grow(tmp_path, base, 1)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    stale = [tmp_path / f".HEAD.{pid}.abcdef.tmp", tmp_path / f".probe.1.{pid}"]
    mine = tmp_path / f".HEAD.{os.getpid()}.abcdef.tmp"
    for path in [*stale, mine]:
        path.write_bytes(b"x")
    ReceiptLog(tmp_path)
    assert not any(p.exists() for p in stale)
    assert mine.exists()
