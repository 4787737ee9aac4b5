"""Sessions on real microVMs (marked ``vm``): skipped, with the probed reason, where this host
cannot boot a guest. Few VMs on purpose (the host is slow and shared): one session carries
most tests in order, a second one is opened for isolation."""

from __future__ import annotations

import pytest

import glasshouse
from glasshouse.core.errors import (
    BackendUnavailable,
    FileTooLarge,
    NotAFile,
    PathNotFound,
    PathOutside,
    PathRefused,
    SessionGone,
    SessionPaused,
)

pytestmark = pytest.mark.vm

#: kvm_pvm: a fork in the guest costs seconds, the first code step pays for one.
SLOW_S = 300


@pytest.fixture(scope="module")
def vm_ok() -> None:
    from glasshouse.backends import microvm

    ok, why = microvm.probe()
    if not ok:
        pytest.skip(f"this host cannot boot microVM guests: {why}")


@pytest.fixture(scope="module")
def session(vm_ok: None) -> glasshouse.Session:
    s = glasshouse.Session(backend="microvm", profile="guest")
    yield s
    s.close()


def test_interpreter_state_survives_between_code_steps(session: glasshouse.Session) -> None:
    assert session.run_code("x = 41\nopen('g.txt', 'w').write('1')", timeout=SLOW_S).returncode == 0
    chunks: list[bytes] = []
    r = session.run_code("print(x + 1)", timeout=SLOW_S, on_stdout=chunks.append)
    assert (r.returncode, r.stdout, r.step) == (0, b"42\n", 2)
    assert b"".join(chunks) == b"42\n"  # streamed to the sink
    assert r.receipt["session"]["previous_step_digest"] is not None
    # The guest's own record of step 1 (profile guest): the file its code wrote.
    first = session._records[0]
    assert first["step"] == 1
    r = session.run_code("import sys; print('e', file=sys.stderr); sys.exit(3)", timeout=SLOW_S)
    assert (r.returncode, r.stderr, r.interpreter_restarted) == (3, b"e\n", False)


def test_a_session_has_no_one_shot_heap_cap(session: glasshouse.Session) -> None:
    # The guest init caps a one-shot in-process run's heap with a soft RLIMIT_DATA; the
    # session agent runs as such a run, and its steps must not inherit that cap.
    code = "import resource\nprint(resource.getrlimit(resource.RLIMIT_DATA)[0])"
    r = session.run_code(code, timeout=SLOW_S)
    assert (r.returncode, r.stdout) == (0, b"-1\n")  # RLIM_INFINITY


def test_guest_record_of_a_code_step(session: glasshouse.Session) -> None:
    r = session.run_code("open('rec.txt', 'w').write('r')", timeout=SLOW_S)
    assert r.returncode == 0
    assert "/work/rec.txt" in r.receipt["filesystem"]["writes"]
    assert r.receipt["execution"]["isolation"] == "vm"


def test_command_step_streams_and_reports_its_status(session: glasshouse.Session) -> None:
    chunks: list[bytes] = []
    r = session.run_shell(
        "echo out; echo err >&2; cat g.txt; exit 4", timeout=SLOW_S, on_stdout=chunks.append
    )
    assert (r.returncode, r.stdout, r.stderr) == (4, b"out\n1", b"err\n")
    assert b"".join(chunks) == r.stdout
    r = session.run_command(["no-such-program"], timeout=SLOW_S)
    assert r.returncode == 127


def test_a_timeout_restarts_the_interpreter_not_the_vm(session: glasshouse.Session) -> None:
    vmm = session._live.vmm_pid
    r = session.run_code("print('spin', flush=True)\nwhile True: pass", timeout=3)
    assert r.timed_out and r.interpreter_restarted
    assert r.stdout == b"spin\n"
    assert session._live.vmm_pid == vmm  # the same VM
    r = session.run_code("print('x' in globals())", timeout=SLOW_S)
    assert (r.stdout, r.interpreter_restarted) == (b"False\n", False)


def test_files_api_never_leaves_the_workspace(session: glasshouse.Session) -> None:
    files = session.files
    info = files.write("sub/dir/a.bin", b"\x00\x01data")
    assert (info.path, info.size, info.type) == ("sub/dir/a.bin", 6, "file")
    assert files.read("sub/dir/a.bin") == b"\x00\x01data"
    assert [e.name for e in files.list("sub/dir")] == ["a.bin"]
    assert session.run_command(["cat", "sub/dir/a.bin"], timeout=SLOW_S).stdout == b"\x00\x01data"
    made = session.run_code(
        "import os\nos.symlink('/etc/passwd', 'out')\nos.symlink('/proc/self/root/etc', 'magic')"
        "\nos.symlink('sub/dir/a.bin', 'inside')\nos.mkfifo('fifo')",
        timeout=SLOW_S,
    )
    assert made.returncode == 0, made.stderr
    with pytest.raises(PathOutside):
        files.read("out")
    with pytest.raises(PathOutside):
        files.read("magic/passwd")
    with pytest.raises(PathOutside):
        files.write("out", b"x")  # never written through the link
    assert files.read("inside") == b"\x00\x01data"  # a link that stays inside is followed
    with pytest.raises(NotAFile):
        files.read("fifo")  # refused without blocking on it
    with pytest.raises(PathNotFound):
        files.read("missing")
    with pytest.raises(PathRefused):
        files.read("../etc/passwd")
    with pytest.raises(FileTooLarge):
        files.read("sub/dir/a.bin", max_bytes=2)
    files.delete("sub/dir/a.bin")
    with pytest.raises(PathNotFound):
        files.read("sub/dir/a.bin")


def test_pause_and_resume_keep_the_interpreter(session: glasshouse.Session) -> None:
    made = session.run_code("kept = bytearray(1 << 20)\nkept[-1] = 9", timeout=SLOW_S)
    assert made.returncode == 0
    vmm = session._live.vmm_pid
    kept = session.pause()
    assert "interpreter" in kept and session.state == "paused"
    with pytest.raises(SessionPaused):
        session.run_code("1")
    session.resume()
    assert session._live.vmm_pid != vmm  # a new VMM, restored from the live snapshot
    r = session.run_code("print(kept[-1], len(kept))", timeout=SLOW_S)
    assert (r.stdout, r.interpreter_restarted) == (b"9 1048576\n", False)
    assert session.files.read("rec.txt") == b"r"


def test_two_sessions_see_nothing_of_each_other(session: glasshouse.Session) -> None:
    with glasshouse.Session(backend="microvm", profile="disabled") as other:
        other.files.write("theirs.txt", b"b")
        assert other.run_code("secret = 1", timeout=SLOW_S).returncode == 0
        assert "theirs.txt" not in [e.name for e in session.files.list()]
        assert "rec.txt" not in [e.name for e in other.files.list()]
        r = session.run_code("print('secret' in globals())", timeout=SLOW_S)
        assert r.stdout == b"False\n"
        assert other._live.vmm_pid != session._live.vmm_pid


def test_close_seals_the_session_receipt(session: glasshouse.Session) -> None:
    steps = session.steps
    sealed = session.close()
    assert sealed.receipt["session"]["kind"] == "session"
    assert [s["step"] for s in sealed.receipt["session"]["steps"]] == list(range(1, steps + 1))
    assert sealed.receipt["execution"]["isolation"] == "vm"
    with pytest.raises(SessionGone):
        session.run_code("1")


def test_qemu_has_no_sessions() -> None:
    with pytest.raises(BackendUnavailable):
        glasshouse.Session(backend="qemu", profile="disabled")
