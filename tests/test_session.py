"""glasshouse.Session on real bubblewrap sandboxes: state across steps, step and session
receipts, limits, isolation between sessions, the files API's refusals.

Network is never used: sessions here run with ``network=False``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import glasshouse
from glasshouse.backends import sandbox as sandbox_mod
from glasshouse.core.errors import (
    BackendUnavailable,
    FileTooLarge,
    NotAFile,
    PathNotFound,
    PathOutside,
    PathRefused,
    SessionBusy,
    SessionGone,
    SessionPaused,
)
from glasshouse.core.execution import Limits
from glasshouse.receipt.canonical import compute_digest
from glasshouse.receipt.model import Receipt

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def _sandbox_ok() -> None:
    ok, why = sandbox_mod.probe()
    if not ok:
        pytest.skip(why)


@pytest.fixture
def session(_sandbox_ok: None) -> glasshouse.Session:
    s = glasshouse.Session(profile="disabled", files={"in.txt": "hello"})
    yield s
    s.close()


def test_interpreter_state_survives_between_steps(session: glasshouse.Session) -> None:
    assert session.run_code("import math\nx = 41\nf = open('in.txt')").returncode == 0
    r = session.run_code("print(x + 1, math.pi > 3, f.read())")
    assert r.stdout == b"42 True hello\n"
    assert (r.step, r.interpreter_restarted) == (2, False)
    assert r.receipt["session"]["kind"] == "step"
    assert r.receipt["code_hash"] is not None


def test_code_imports_modules_from_the_workspace(session: glasshouse.Session) -> None:
    session.files.write("helper.py", "def answer():\n    return 42\n")
    r = session.run_code("import sys, helper\nprint(helper.answer(), sys.argv)")
    assert r.stdout == b"42 ['-c']\n", r.stderr


def test_exit_codes_of_code_and_commands(session: glasshouse.Session) -> None:
    assert session.run_code("import sys; sys.exit(3)").returncode == 3
    boom = session.run_code("raise ValueError('boom')")
    assert boom.returncode == 1 and b"ValueError: boom" in boom.stderr
    assert session.run_command(["sh", "-c", "exit 7"]).returncode == 7
    missing = session.run_command(["no-such-command-here"])
    assert missing.returncode == 127 and "exec failed" in (missing.error or "")
    assert session.run_shell("echo $((6 * 7))").stdout == b"42\n"
    # the interpreter survived all of it
    assert session.run_code("print('alive')").stdout == b"alive\n"


def test_steps_form_a_hash_chain_and_the_session_receipt_lists_them(
    session: glasshouse.Session,
) -> None:
    first = session.run_code("open('made.txt', 'w').write('x')")
    second = session.run_command(["rm", "made.txt"])
    assert first.receipt["session"]["previous_step_digest"] is None
    assert second.receipt["session"]["previous_step_digest"] == first.receipt["digest"]
    for r in (first, second):
        assert compute_digest(r.receipt) == r.receipt["digest"]
        Receipt.model_validate(r.receipt)
    sealed = session.close()
    rc = sealed.receipt
    assert rc["session"]["kind"] == "session" and rc["session"]["reason"] == "closed"
    assert [s["digest"] for s in rc["session"]["steps"]] == [
        first.receipt["digest"],
        second.receipt["digest"],
    ]
    assert compute_digest(rc) == rc["digest"]
    Receipt.model_validate(rc)
    assert session.close() is sealed  # idempotent
    with pytest.raises(SessionGone):
        session.run_code("1")
    with pytest.raises(SessionGone):
        session.files.list()


def test_a_timed_out_code_step_restarts_the_interpreter_not_the_session(
    session: glasshouse.Session,
) -> None:
    session.run_code("kept = 1")
    r = session.run_code("import time\nprint('before', flush=True)\ntime.sleep(60)", timeout=1)
    assert r.timed_out and r.returncode == 124
    assert r.stdout == b"before\n"
    assert r.interpreter_restarted is True
    assert r.receipt["session"]["interpreter_restarted"] is True
    after = session.run_code("print('kept' in dir())")
    assert after.stdout == b"False\n" and after.interpreter_restarted is False
    assert session.run_command(["true"]).returncode == 0


def test_processes_a_step_starts_do_not_outlive_it(session: glasshouse.Session) -> None:
    session.run_code("up = True")  # the interpreter is up: the session's own processes
    before = session.info()["usage"]["pids"]
    r = session.run_shell("sleep 300 & sleep 300 & echo started")
    assert r.stdout == b"started\n"
    assert session.info()["usage"]["pids"] == before  # killed when the step ended
    code = session.run_code("import subprocess\np = subprocess.Popen(['sleep', '300'])")
    assert code.returncode == 0
    assert session.info()["usage"]["pids"] == before  # killed when the step ended
    # the interpreter itself lives on
    assert session.run_code("print(p.poll())").stdout == b"-9\n"


def test_kill_all_from_a_step_does_not_end_the_session(session: glasshouse.Session) -> None:
    session.run_code("x = 5")
    session.run_shell("kill -9 -1")
    r = session.run_code("print('x' in dir())")
    assert r.returncode == 0 and r.interpreter_restarted is True
    assert r.stdout == b"False\n"


def test_a_second_concurrent_step_is_refused(session: glasshouse.Session) -> None:
    started = threading.Event()
    result: list[object] = []

    def slow() -> None:
        result.append(
            session.run_code(
                "import time\nprint(1, flush=True)\ntime.sleep(3)",
                on_stdout=lambda _c: started.set(),
            )
        )

    t = threading.Thread(target=slow)
    t.start()
    assert started.wait(30)
    with pytest.raises(SessionBusy):
        session.run_command(["true"])
    with pytest.raises(SessionBusy):
        session.pause()
    t.join()
    assert result and result[0].returncode == 0  # type: ignore[attr-defined]


def test_output_streams_to_callbacks_as_it_comes(session: glasshouse.Session) -> None:
    chunks: list[bytes] = []
    seen = threading.Event()

    def sink(chunk: bytes) -> None:
        chunks.append(chunk)
        seen.set()

    # The step waits for a file the test writes only after the first chunk arrived.
    code = (
        "import os, time\nprint('first', flush=True)\n"
        "while not os.path.exists('go'):\n    time.sleep(0.01)\nprint('second')"
    )
    out: list[glasshouse.StepResult] = []
    t = threading.Thread(target=lambda: out.append(session.run_code(code, on_stdout=sink)))
    t.start()
    try:
        assert seen.wait(30)
        assert chunks[0].startswith(b"first")  # before the step could end
    finally:  # (the step holds the session lock: write through the live sandbox)
        session._live.files.write("go", b"")
        t.join(30)
    assert out[0].stdout == b"first\nsecond\n"


def test_files_api_and_transfers_in_receipts(session: glasshouse.Session) -> None:
    info = session.files.write("dir/sub/data.bin", b"\x00\x01\x02")
    assert (info.type, info.size) == ("file", 3)
    r = session.run_command(["sh", "-c", "cat dir/sub/data.bin | wc -c; echo out > result.txt"])
    assert r.stdout.strip() == b"3"
    assert [t["direction"] for t in r.receipt["session"]["transfers"]] == ["upload"]
    assert session.files.read("result.txt") == b"out\n"
    names = {f.path: f for f in session.files.list(".")}
    assert names["dir"].type == "directory" and names["result.txt"].sha256 is not None
    assert [f.path for f in session.files.list("dir/sub")] == ["dir/sub/data.bin"]
    session.files.delete("dir/sub/data.bin")
    with pytest.raises(PathNotFound):
        session.files.read("dir/sub/data.bin")
    sealed = session.close()
    directions = [t["direction"] for t in sealed.receipt["session"]["transfers"]]
    assert directions == ["upload", "download"]


def test_files_api_refusals(session: glasshouse.Session, tmp_path: Path) -> None:
    for bad in ("/etc/passwd", "../x", "a/../../b", "", "a\x00b"):
        with pytest.raises(PathRefused):
            session.files.read(bad)
    # links made inside the sandbox: out of the workspace (absolute, via .., via /proc)
    session.run_shell(
        "ln -s /etc/passwd abs; ln -s ../../../../etc/passwd rel; ln -s /proc/self/root pr;"
        " ln -s in.txt inside; mkfifo fifo; mkdir d"
    )
    for link in ("abs", "rel", "pr/etc/passwd"):
        with pytest.raises(PathOutside):
            session.files.read(link)
        with pytest.raises(PathOutside):
            session.files.write(link, b"pwned")
    assert session.files.read("inside") == b"hello"  # a link that stays inside is fine
    with pytest.raises(NotAFile):
        session.files.read("fifo")  # returns at once: never blocks on a FIFO
    with pytest.raises(NotAFile):
        session.files.read("d")
    with pytest.raises(PathNotFound):
        session.files.list("nowhere")
    with pytest.raises(FileTooLarge):
        session.files.read("in.txt", max_bytes=2)
    assert Path("/etc/passwd").read_bytes() != b"pwned"


def test_sessions_see_nothing_of_each_other(_sandbox_ok: None) -> None:
    with glasshouse.Session(profile="disabled") as a, glasshouse.Session(profile="disabled") as b:
        a.files.write("secret.txt", b"a's")
        a.run_code("import time\nmarker = 'session-a-marker'")
        assert b.run_shell("ls").stdout == b""
        assert b.files.list() == []
        ps = b.run_shell("cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
        assert b"session-a-marker" not in ps and b"secret" not in ps
        # b's processes: its agent, its interpreter and this step, nothing of a's
        pids = b.run_shell("ls -d /proc/[0-9]* | wc -l").stdout.strip()
        assert int(pids) <= 5
        assert a.run_shell("id -u").stdout == b.run_shell("id -u").stdout  # same inside...
        ua = a.info()
        assert ua["id"] != b.info()["id"]


def test_pause_keeps_the_workspace_and_says_the_interpreter_state_is_lost(
    session: glasshouse.Session,
) -> None:
    session.run_code("x = 1\nopen('kept.txt', 'w').write('yes')")
    kept = session.pause()
    assert "workspace" in kept and "interpreter" in kept
    assert session.state == "paused" and session.info()["usage"] == {}
    with pytest.raises(SessionPaused):
        session.run_code("1")
    session.resume()
    r = session.run_code("print(open('kept.txt').read(), 'x' in dir())")
    assert r.stdout == b"yes False\n"


def test_memory_limit_kills_the_step_not_the_session(_sandbox_ok: None) -> None:
    limits = Limits(memory_bytes=96 << 20)
    with glasshouse.Session(profile="disabled", limits=limits) as s:
        s.run_code("small = 1")
        r = s.run_code("big = bytearray(400 << 20)\nbig[::4096] = b'x' * len(big[::4096])")
        assert r.returncode != 0 and r.execution.oom_killed
        assert r.interpreter_restarted
        assert s.run_code("print('ok')").stdout == b"ok\n"


def test_a_backend_without_sessions_says_so() -> None:
    with pytest.raises(BackendUnavailable, match="no sessions"):
        glasshouse.Session(backend="process", profile="disabled")


@pytest.mark.bpf
def test_step_receipts_show_the_steps_code_and_nothing_of_ours(_sandbox_ok: None) -> None:
    from _support import ebpf_observer

    with ebpf_observer() as observer:
        s = glasshouse.Session(profile="host", observers=[observer])  # type: ignore[list-item]
        try:
            first = s.run_code("open('w.txt', 'w').write('z')")
            fs = first.receipt["filesystem"]
            assert fs["writes"] == ["/workspace/w.txt"]
            assert fs["reads"] == []  # the interpreter's own startup is not in the step
            cmd = s.run_shell("cat w.txt > copy.txt; rm w.txt")
            fs = cmd.receipt["filesystem"]
            assert "/workspace/copy.txt" in fs["writes"] and "/workspace/w.txt" in fs["deletes"]
            argv = [n.get("argv") for n in cmd.receipt["process_tree"]]
            assert ["sh", "-c", "cat w.txt > copy.txt; rm w.txt"] in argv
            assert ["rm", "w.txt"] in argv
            assert all("step_agent" not in str(a) for a in argv)
            sealed = s.close()
            union = sealed.receipt["filesystem"]
            assert {"/workspace/w.txt", "/workspace/copy.txt"} <= set(union["writes"])
            assert "/workspace/w.txt" in union["deletes"]
        finally:
            s.close()


def test_session_ids_are_unguessable_and_distinct() -> None:
    from glasshouse.session import new_session_id

    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("sess-") and len(i.rsplit("-", 1)[1]) == 20 for i in ids)


def test_the_session_receipt_states_coverage_across_its_steps(_sandbox_ok: None) -> None:
    with glasshouse.Session(profile="disabled") as s:
        s.run_code("x = 1")
    cov = s.close().receipt["observation"]["coverage"]
    assert cov["status"] == "none"  # no step was observed
    empty = glasshouse.Session(profile="disabled")
    cov = empty.close().receipt["observation"]["coverage"]
    assert cov["status"] == "none" and cov["reasons"][0]["code"] == "not_run"


@pytest.mark.bpf
def test_threads_left_running_make_the_session_coverage_incomplete(_sandbox_ok: None) -> None:
    from _support import ebpf_observer

    with ebpf_observer() as observer:
        with glasshouse.Session(profile="host", observers=[observer]) as s:  # type: ignore[list-item]
            done = s.run_code("print(1)")
            assert done.receipt["observation"]["coverage"]["status"] == "complete"
            t = s.run_code(
                "import threading, time\n"
                "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()"
            )
            assert t.execution.details["threads_left_running"] == 1
        cov = s.close().receipt["observation"]["coverage"]
    assert cov["status"] == "incomplete"
    assert [r["code"] for r in cov["reasons"]] == ["between_steps"]


def test_closing_kills_a_step_in_flight(_sandbox_ok: None) -> None:
    s = glasshouse.Session(profile="disabled")
    started = threading.Event()
    out: list[glasshouse.StepResult] = []
    code = "import time\nprint('go', flush=True)\ntime.sleep(600)"
    t = threading.Thread(
        target=lambda: out.append(s.run_code(code, on_stdout=lambda _: started.set()))
    )
    t.start()
    assert started.wait(30)
    sealed = s.close("expired")
    t.join(30)
    assert not t.is_alive()
    assert out[0].error == "killed: session expired" and out[0].execution.signal == 9
    assert sealed.receipt["session"]["steps"][-1]["digest"] == out[0].receipt["digest"]


def test_a_session_outlives_the_thread_that_opened_it(_sandbox_ok: None) -> None:
    """Runs are forked with SIGKILL as their parent-death signal, which the kernel ties to
    the forking *thread*: a session opened by a short-lived thread (a server's worker that
    idles out) must not die with it. (Failed before forks moved to one spawner thread.)"""
    opened: list[glasshouse.Session] = []
    t = threading.Thread(target=lambda: opened.append(glasshouse.Session(profile="disabled")))
    t.start()
    t.join()
    s = opened[0]
    try:
        assert s.run_shell("echo alive").stdout == b"alive\n"
        assert s.run_code("print(1)").stdout == b"1\n"
    finally:
        s.close()
