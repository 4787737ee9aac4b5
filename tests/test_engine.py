"""Engine orchestration: every outcome yields a receipt; observers fail open."""

from __future__ import annotations

from glasshouse.backends.fake import FakeBackend
from glasshouse.core.execution import ExecutionSpec
from glasshouse.core.profiling import Observation, ObserverUnavailable
from glasshouse.engine import Engine
from glasshouse.receipt.model import ProcessNode


class _Recorder:
    """A real (in-process) observer used to check ordering: it records the root pid."""

    name, provenance = "recorder", "host"

    def __init__(self) -> None:
        self.started: list[int] = []

    def start(self, root_pid: int):
        self.started.append(root_pid)
        recorder = self

        class _Session:
            def stop(self) -> Observation:
                return Observation(
                    observer=recorder.name,
                    provenance="host",
                    process_tree=[ProcessNode(pid=root_pid, ppid=1, argv=["x"])],
                )

        return _Session()


class _Broken:
    name, provenance = "broken", "host"

    def start(self, root_pid: int):
        raise ObserverUnavailable("no BTF on this host")


def test_backend_failing_to_start_yields_receipt_with_error() -> None:
    run = Engine(FakeBackend(fail_start="no such image")).run(ExecutionSpec(["true"]))
    assert run.result.error == "fake: no such image"
    assert run.result.shell_exit_code() == 125
    assert run.receipt.outcome.error == "fake: no such image"
    assert run.receipt.outcome.exit_code is None


def test_backend_failing_to_prepare_yields_receipt() -> None:
    run = Engine(FakeBackend(fail_prepare="kernel missing")).run(ExecutionSpec(["true"]))
    assert "kernel missing" in run.receipt.outcome.error


def test_wait_failure_still_cleans_up() -> None:
    backend = FakeBackend(fail_wait="vm crashed")
    run = Engine(backend).run(ExecutionSpec(["true"]))
    assert "vm crashed" in run.result.error
    assert backend.live == set()  # cleanup ran


def test_disabled_profile_says_no_observation_was_made() -> None:
    run = Engine(FakeBackend(), profile="disabled").run(ExecutionSpec(["true"]))
    obs = run.receipt.observation
    assert obs.profile == "disabled"
    assert run.receipt.provenance == "none"
    assert "no observation was made" in obs.note
    assert set(obs.missing) == {"process_tree", "filesystem", "network", "syscalls", "resources"}


def test_unavailable_observer_fails_open_with_reason() -> None:
    from glasshouse.backends import create

    run = Engine(create("process"), observers=[_Broken()], profile="host").run(
        ExecutionSpec(["sh", "-c", "exit 4"])
    )
    assert run.result.exit_code == 4
    report = run.receipt.observation.observers[0]
    assert not report.available and report.reason == "no BTF on this host"
    assert "no BTF" in run.receipt.observation.missing["filesystem"]


def test_observer_is_attached_to_the_gated_root_pid() -> None:
    from glasshouse.backends import create

    rec = _Recorder()
    run = Engine(create("process"), observers=[rec], profile="host").run(ExecutionSpec(["true"]))
    assert rec.started == [run.result.root_pid]
    assert run.receipt.provenance == "host"
    assert run.receipt.processes[0].pid == run.result.root_pid
    assert "process_tree" in run.receipt.observation.collected


def test_backend_without_host_process_reports_observer_unavailable() -> None:
    run = Engine(FakeBackend(), observers=[_Recorder()], profile="host").run(
        ExecutionSpec(["true"])
    )
    report = run.receipt.observation.observers[0]
    assert not report.available and "no host process" in report.reason


def test_kill_all_kills_in_flight_runs() -> None:
    import threading

    backend = FakeBackend()
    engine = Engine(backend)
    started = threading.Event()
    box = {}
    t = threading.Thread(
        target=lambda: box.setdefault(
            "run",
            engine.run(ExecutionSpec(["sh", "-c", "sleep 30"]), on_start=lambda h: started.set()),
        )
    )
    t.start()
    assert started.wait(10)
    while engine.kill_all("shutdown") == 0:
        pass
    t.join(10)
    assert box["run"].result.error == "killed: shutdown"


def test_guest_profile_without_a_guest_says_so() -> None:
    run = Engine(FakeBackend(), profile="guest").run(ExecutionSpec(["true"]))
    report = run.receipt.observation.observers[0]
    assert report.name == "guest" and not report.available
    assert "reported no guest-side events" in report.reason
    assert run.receipt.provenance == "none"
