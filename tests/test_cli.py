"""The CLI as a user runs it: exit code paths, receipts, live output, show, schema, doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gh(*args: str, cwd: Path, stdin: bytes | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def gh_live(script: str, cwd: Path) -> subprocess.Popen[bytes]:
    """``glasshouse run -p disabled -- sh -c SCRIPT`` in the background, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "glasshouse.cli", "run", "--profile", "disabled", "--",
         "sh", "-c", script],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def receipt(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "receipt.json").read_text())


def test_run_prints_output_exits_with_code_and_writes_receipt(tmp_path: Path) -> None:
    p = gh("run", "--", "python3", "-c", "import sys; print('hi'); sys.exit(3)", cwd=tmp_path)
    assert p.returncode == 3
    assert p.stdout == b"hi\n"
    rec = receipt(tmp_path)
    assert rec["exit_code"] == 3 and rec["outcome"]["exit_code"] == 3
    assert rec["version"] == "v0.4.0" and rec["digest"].startswith("sha256:")
    assert b"exit 3" in p.stderr


def test_timeout_is_124_and_kills_grandchildren(tmp_path: Path) -> None:
    import uuid

    marker = str(600 + uuid.uuid4().int % 10**6)  # a sleep length no other process uses
    p = gh("run", "--timeout", "2", "--", "sh", "-c", f"(sleep {marker} &); sleep 10", cwd=tmp_path)
    assert p.returncode == 124
    rec = receipt(tmp_path)
    assert rec["outcome"]["timed_out"] is True
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if f"sleep\0{marker}".encode() in fh.read():
                    alive.append(pid)
        except OSError:
            continue
    assert alive == []


def test_signal_is_128_plus_n(tmp_path: Path) -> None:
    p = gh("run", "--", "sh", "-c", "kill -TERM $$", cwd=tmp_path)
    assert p.returncode == 143
    assert receipt(tmp_path)["outcome"]["signal"] == 15


@pytest.mark.parametrize(
    ("argv", "code"), [(["no-such-command-xyz"], 127), (["/etc/hostname"], 126)]
)
def test_not_found_and_not_executable(tmp_path: Path, argv: list[str], code: int) -> None:
    p = gh("run", "--", *argv, cwd=tmp_path)
    assert p.returncode == code
    assert receipt(tmp_path)["outcome"]["exit_code"] == code
    assert p.stderr.decode().strip().splitlines()[-1].startswith("glasshouse: ")


def test_own_error_is_125_with_one_line(tmp_path: Path) -> None:
    p = gh("run", "--backend", "nope", "--", "true", cwd=tmp_path)
    assert p.returncode == 125
    assert p.stderr.decode().count("\n") == 1 and "unknown backend" in p.stderr.decode()
    assert b"Traceback" not in p.stderr


def test_debug_shows_traceback_for_own_errors(tmp_path: Path) -> None:
    p = gh("run", "--debug", "--stdin", "/nonexistent/file", "--", "true", cwd=tmp_path)
    assert p.returncode != 0
    assert b"Traceback" in p.stderr


def test_profile_disabled_still_writes_receipt_saying_so(tmp_path: Path) -> None:
    p = gh("run", "--profile", "disabled", "--", "echo", "x", cwd=tmp_path)
    assert p.returncode == 0
    obs = receipt(tmp_path)["observation"]
    assert obs["profile"] == "disabled" and "no observation was made" in obs["note"]


def test_stdin_file_and_receipt_path(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"from file\n")
    out = tmp_path / "sub" / "r.json"
    p = gh("run", "--stdin", "in.txt", "--receipt", str(out), "--", "cat", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == b"from file\n"
    assert json.loads(out.read_text())["exit_code"] == 0


def test_stdin_is_dev_null_by_default(tmp_path: Path) -> None:
    p = gh("run", "--", "cat", cwd=tmp_path, stdin=b"should not be read")
    assert p.returncode == 0 and p.stdout == b""


def test_output_reaches_terminal_before_the_command_ends(tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    import os

    os.mkfifo(fifo)
    proc = gh_live(f"echo first; cat {fifo}; echo second", tmp_path)
    try:
        assert proc.stdout.readline() == b"first\n"
        assert proc.poll() is None  # still blocked on the fifo: the line came live
        with open(fifo, "w") as fh:
            fh.write("")
        assert proc.stdout.readline() == b"second\n"
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_receipt_show(tmp_path: Path) -> None:
    gh("run", "--", "sh", "-c", "echo out; exit 2", cwd=tmp_path)
    p = gh("receipt", "show", "receipt.json", cwd=tmp_path)
    text = p.stdout.decode()
    assert p.returncode == 0
    assert "exit 2" in text and "matches content" in text and "process" in text


def test_receipt_show_detects_tampering_and_bad_files(tmp_path: Path) -> None:
    gh("run", "--", "true", cwd=tmp_path)
    rec = receipt(tmp_path)
    rec["exit_code"] = 9
    (tmp_path / "receipt.json").write_text(json.dumps(rec))
    shown = gh("receipt", "show", "receipt.json", cwd=tmp_path).stdout.decode()
    assert "does not match content" in shown
    (tmp_path / "bad.json").write_text("{}")
    p = gh("receipt", "show", "bad.json", cwd=tmp_path)
    assert p.returncode == 2 and b"not a valid receipt (v0.3.0 or v0.4.0)" in p.stderr


def test_schema_command_prints_committed_schema(tmp_path: Path) -> None:
    p = gh("schema", cwd=tmp_path)
    committed = (ROOT / "schemas" / "receipt-v0.4.0.schema.json").read_text()
    assert json.loads(p.stdout) == json.loads(committed)


def test_doctor_json(tmp_path: Path) -> None:
    p = gh("doctor", "--json", cwd=tmp_path)
    checks = {c["name"]: c for c in json.loads(p.stdout)}
    assert {"btf", "cgroups", "kvm", "bubblewrap", "root"} <= set(checks)
    assert all({"ok", "detail", "disables"} <= set(c) for c in checks.values())


def test_bad_limit_value_is_a_usage_error(tmp_path: Path) -> None:
    p = gh("run", "--memory", "lots", "--", "true", cwd=tmp_path)
    assert p.returncode == 2 and b"not a size" in p.stderr


def test_interrupt_kills_the_tree_and_still_writes_the_receipt(tmp_path: Path) -> None:
    import signal

    proc = gh_live("echo ready; sleep 60", tmp_path)
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    rec = receipt(tmp_path)
    assert rec["outcome"]["error"] == "killed: interrupted by SIGINT"


def test_process_backend_refuses_workspace_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    p = gh("run", "--file", "a.txt", "--", "true", cwd=tmp_path)
    assert p.returncode == 125 and b"no private workspace" in p.stderr
