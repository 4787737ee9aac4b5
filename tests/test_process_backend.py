"""Process backend specifics: whole-tree kill (double-forked daemons), no leftovers,
cgroup limits and accounting, the fallback without cgroups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from _support import until

from glasshouse.backends import _cgroup
from glasshouse.backends.process import ProcessBackend
from glasshouse.core import procfs
from glasshouse.core.execution import ExecutionSpec, Limits
from glasshouse.engine import Engine


def _alive_with_marker(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    with open(f"/proc/{entry}/stat") as st:
                        if st.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(entry))
        except OSError:
            continue
    return found


DAEMONIZE = (
    # double fork + setsid: the grandchild leaves the session and outlives its parent
    "(setsid sh -c 'sleep {n}; echo never' &) ; (sleep {n} &) ; sleep {n}"
)


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
def test_timeout_kills_double_forked_grandchildren(cgroups: bool) -> None:
    if cgroups and not _cgroup.available()[0]:
        pytest.skip(f"cgroups unavailable: {_cgroup.available()[1]}")
    marker = f"9{uuid.uuid4().int % 10**6}"
    backend = ProcessBackend(cgroups=cgroups)
    run = Engine(backend).run(ExecutionSpec(["sh", "-c", DAEMONIZE.format(n=marker)], timeout=1))
    assert run.result.timed_out and run.result.shell_exit_code() == 124
    until(lambda: _alive_with_marker(marker) == [], what="the daemonized grandchildren gone")


def test_processes_left_behind_by_the_root_are_killed() -> None:
    marker = f"8{uuid.uuid4().int % 10**6}"
    run = Engine(ProcessBackend()).run(
        ExecutionSpec(["sh", "-c", f"(setsid sleep {marker} &); echo started"])
    )
    assert run.result.exit_code == 0
    assert _alive_with_marker(marker) == []


def test_cgroup_accounting_and_oom() -> None:
    if not _cgroup.available()[0]:
        pytest.skip(f"cgroups unavailable: {_cgroup.available()[1]}")
    backend = ProcessBackend(cgroups=True)
    run = Engine(backend).run(
        ExecutionSpec(
            ["sh", "-c", "head -c 300000000 /dev/zero | tail -n 1 >/dev/null"],
            limits=Limits(memory_bytes=32 << 20),
        )
    )
    assert run.result.details["cgroup"] == "yes"
    assert run.result.max_rss_kb is not None and run.result.max_rss_kb <= 40 << 10
    assert run.result.exit_code != 0 or run.result.signal is not None


def test_no_cgroup_directories_are_left_behind() -> None:
    if not _cgroup.available()[0]:
        pytest.skip(f"cgroups unavailable: {_cgroup.available()[1]}")
    backend = ProcessBackend(cgroups=True)
    run = Engine(backend).run(ExecutionSpec(["true"], limits=Limits(pids=10)))
    assert run.result.exit_code == 0
    lay = _cgroup.layout()
    roots = [p for p in [lay.v2, *lay.v1.values()] if p is not None]
    for root in roots:
        parent = root / "glasshouse"
        if parent.exists():
            leftovers = [
                d.name
                for d in parent.iterdir()
                if d.is_dir() and str(run.result.root_pid) in d.name
            ]
            assert leftovers == []


_KILLED_OWNER = """
import json, os, signal, time
from glasshouse.backends.process import ProcessBackend
from glasshouse.core.execution import ExecutionSpec
backend = ProcessBackend(cgroups=True)
backend.prepare()
handle = backend.start(ExecutionSpec(["sh", "-c", "sleep {marker} & wait"]))
backend.release(handle)
deadline = time.monotonic() + 60
while len(handle.cgroup.pids()) < 2 and time.monotonic() < deadline:  # sh and its sleep
    time.sleep(0.01)
dirs = [str(d) for d in handle.cgroup.dirs.values()]
print(json.dumps({{"root": handle.pid, "cgroup": dirs}}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_owner_leaves_nothing_running_past_the_next_start() -> None:
    # The Glasshouse process is SIGKILLed mid-run: it cannot clean up. The run's root dies
    # with it; what the root started lives on in the run's cgroup until the next start.
    if not _cgroup.available()[0]:
        pytest.skip(f"cgroups unavailable: {_cgroup.available()[1]}")
    marker = f"7{uuid.uuid4().int % 10**6}"
    owner = subprocess.run(
        [sys.executable, "-c", _KILLED_OWNER.format(marker=marker)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    run = json.loads(owner.stdout)
    try:
        until(lambda: not procfs.running(run["root"]), what="the run's root gone with its owner")
        assert _alive_with_marker(marker) != []  # (the sweep below is what ends it)
        ProcessBackend(cgroups=True).prepare()
        assert _alive_with_marker(marker) == []
        assert [d for d in run["cgroup"] if Path(d).exists()] == []
    finally:
        for pid in _alive_with_marker(marker):  # (only if the test failed)
            os.kill(pid, signal.SIGKILL)


def test_the_sweep_leaves_live_owners_and_unowned_groups_running() -> None:
    if not _cgroup.available()[0]:
        pytest.skip(f"cgroups unavailable: {_cgroup.available()[1]}")
    token = uuid.uuid4().hex[:8]
    names = [_cgroup.owned_name("run-", f"mine-{token}"), f"run-{os.getpid()}-{token}"]
    groups, children = [], []
    try:
        for name in names:  # ours (a live owner), and one named the older way (no owner)
            child = subprocess.Popen(["sleep", "600"])
            children.append(child)
            groups.append(_cgroup.Cgroup.create(name))
            groups[-1].add(child.pid)
            os.utime(groups[-1].dirs["v2" if "v2" in groups[-1].dirs else "memory"], (0, 0))
        _cgroup.sweep_dead_owners("run-")
        assert [c.poll() for c in children] == [None, None]
        assert all(d.exists() for g in groups for d in g.dirs.values())
    finally:
        for group in groups:
            group.kill()
            group.remove()
        for child in children:
            child.kill()
            child.wait()


def test_cpu_rlimit() -> None:
    run = Engine(ProcessBackend()).run(
        ExecutionSpec(["sh", "-c", "while :; do :; done"], limits=Limits(cpu_s=1), timeout=30)
    )
    assert run.result.signal in (9, 24)  # SIGXCPU at the soft limit, SIGKILL at the hard one
    assert not run.result.timed_out


def test_file_size_limit() -> None:
    run = Engine(ProcessBackend()).run(
        ExecutionSpec(
            ["sh", "-c", "head -c 100000 /dev/zero > /dev/shm/gh-fsize-test; echo $?"],
            limits=Limits(file_size_bytes=1000),
        )
    )
    os.path.exists("/dev/shm/gh-fsize-test") and os.unlink("/dev/shm/gh-fsize-test")
    assert run.result.stdout.data.strip() == b"153"  # head died of SIGXFSZ (128 + 25)


def test_network_off_is_refused_by_process_backend() -> None:
    run = Engine(ProcessBackend()).run(ExecutionSpec(["true"], network=False))
    assert "cannot isolate the network" in run.result.error
    assert run.result.shell_exit_code() == 125


def test_not_executable_is_126(tmp_path) -> None:
    script = tmp_path / "x.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    run = Engine(ProcessBackend()).run(ExecutionSpec([str(script)]))
    assert run.result.exit_code == 126
    assert run.receipt.outcome.exit_code == 126


def test_path_lookup_like_a_shell(tmp_path) -> None:
    from glasshouse.backends.process import resolve_executable
    from glasshouse.core.execution import CommandNotRunnable

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "tool").write_text("#!/bin/sh\n")  # not executable: skipped if another one exists
    (b / "tool").write_text("#!/bin/sh\n")
    (b / "tool").chmod(0o755)
    path = f"{a}:{b}"
    assert resolve_executable("tool", path) == str(b / "tool")
    (b / "tool").chmod(0o644)
    with pytest.raises(CommandNotRunnable) as exc:
        resolve_executable("tool", path)
    assert exc.value.exit_code == 126
    with pytest.raises(CommandNotRunnable) as exc:
        resolve_executable("nope", path)
    assert exc.value.exit_code == 127
