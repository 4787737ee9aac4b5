"""Parts working together as a user runs them: the sandbox observed by host eBPF."""

from __future__ import annotations

import pytest

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine

pytestmark = [pytest.mark.root, pytest.mark.bpf]


@pytest.fixture(scope="module")
def observer():
    from glasshouse.observe import host_observer

    try:
        obs = host_observer(fallback=False)
    except Exception as exc:
        pytest.skip(f"eBPF observation unavailable here: {exc}")
    return obs


def test_sandboxed_processes_carry_host_and_sandbox_pids(observer) -> None:
    try:
        from glasshouse.backends.sandbox import probe

        ok, why = probe()
    except Exception as exc:
        ok, why = False, str(exc)
    if not ok:
        pytest.skip(f"sandbox unavailable: {why}")
    run = Engine(create("sandbox"), observers=[observer], profile="host").run(
        ExecutionSpec(["sh", "-c", "echo $$; exec true"])
    )
    assert run.result.exit_code == 0
    inner = int(run.result.stdout.data)
    nodes = run.receipt.process_tree
    harness = run.receipt.observation.harness
    assert harness is not None
    bwrap = harness.processes[0]  # Glasshouse's own set-up: not in the workload's tree
    assert bwrap.ns_pid is None  # bwrap itself runs in the host's pid namespace
    shell = [n for n in nodes if n.ns_pid == inner]
    assert len(shell) == 1, [(n.pid, n.ns_pid, n.argv) for n in nodes]
    assert shell[0].pid != inner  # the host pid differs from the one the shell saw as $$
    assert shell[0].argv[-1] == "true" or "sh" in (shell[0].exe or "")
