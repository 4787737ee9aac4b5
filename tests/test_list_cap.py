"""Receipt lists are capped: while observing (the eBPF folder and the strace parser keep at
most ``list_cap`` entries per list), and when the receipt is built; what each capped list
left out is counted in ``observation.omitted`` and shown, never silent.

(``DEFAULT_LIST_CAP`` is imported inside the tests, so this file also runs, and fails, against
the code before the cap existed.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glasshouse.backends import create
from glasshouse.core.execution import ExecutionSpec
from glasshouse.core.profiling import Observation, ObserverUnavailable
from glasshouse.engine import Engine
from glasshouse.observe._strace_parse import Parser
from glasshouse.observe.ebpf import _decode as d
from glasshouse.receipt.model import Filesystem, ProcessNode, Receipt

NAMES = {257: "openat", 87: "unlink"}
O_WRONLY, O_CREAT = 0o1, 0o100


def file_rec(path: str, pid: int = 10, nr: int = 257, flags: int = O_WRONLY | O_CREAT) -> bytes:
    raw = path.encode() + b"\0"
    return d.HDR.pack(d.EV_FILE, 0, 1, pid, pid, 1, 3, nr, -100, flags, len(raw), 0, 0, 0) + raw


def fork_rec(parent: int, child: int) -> bytes:
    return d.HDR.pack(d.EV_FORK, 0, 1, parent, parent, 1, 0, child, parent, 0, 0, 0, 0, 0)


# -- while observing: the eBPF folder ---------------------------------------------------


def test_folder_keeps_at_most_the_cap_and_counts_the_rest() -> None:
    f = d.Folder(10, 1, NAMES, list_cap=100)
    f.feed(file_rec(f"/w/f{i}") for i in range(5000))
    f.feed(file_rec(f"/w/f{i}") for i in range(50))  # repeats of kept entries: folded
    f.feed(fork_rec(10, 1000 + i) for i in range(300))
    tree, fs, *_ = f.result({})
    assert fs.writes == [f"/w/f{i}" for i in range(100)]
    assert len(tree) == 100
    assert f.omitted() == {"filesystem.writes": 4900, "process_tree": 201}
    # memory: no structure grows past the cap
    assert len(f.writes._seen) == 100 and len(f._raw_seen) <= 100 and len(f.procs) == 100


def test_folder_default_cap() -> None:
    from glasshouse.core.execution import DEFAULT_LIST_CAP

    f = d.Folder(10, 1, NAMES)
    assert f.cap == DEFAULT_LIST_CAP == 10_000


# -- while observing: the strace parser ------------------------------------------------


def _hex(s: str) -> str:
    return '"' + "".join(f"\\x{b:02x}" for b in s.encode()) + '"'


def test_strace_parser_caps_lists_and_forgets_exited_processes() -> None:
    p = Parser(100, 1, "/w", cap=20)
    p.line(f"100 1.0 execve({_hex('/bin/sh')}, [{_hex('sh')}], 0x0 /* 0 vars */) = 0")
    for i in range(200):
        child = 1000 + i
        p.line(f"100 1.1 clone(child_stack=NULL, flags=SIGCHLD) = {child}")
        p.line(
            f"{child} 1.2 openat(AT_FDCWD<{_hex('/w')}>, {_hex(f'f{i}')}, "
            f"O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3<{_hex(f'/w/f{i}')}>"
        )
        p.line(f"{child} 1.3 +++ exited with 0 +++")
    obs = p.observation("strace", "test")
    assert len(obs.filesystem.writes) == 20 and obs.filesystem.writes[0] == "/w/f0"
    assert obs.omitted == {"filesystem.writes": 180, "process_tree": 181}
    assert len(obs.process_tree) == 20
    # per-process state follows the live processes, not every process ever seen
    assert set(p.cwd) == {100} and set(p.tgid) == {100} and not p.dropped


# -- when the receipt is built ----------------------------------------------------------


class _Chatty:
    """An in-process observer that does not cap (``list_cap_aware`` unset): it reports
    ``n`` reads and processes; the Engine's aggregation must cap them."""

    name, provenance = "chatty", "host"

    def __init__(self, n: int) -> None:
        self.n = n

    def start(self, root_pid: int):
        n = self.n

        class _Session:
            def stop(self) -> Observation:
                return Observation(
                    observer="chatty",
                    provenance="host",
                    process_tree=[ProcessNode(pid=i + 1, ppid=0) for i in range(n)],
                    filesystem=Filesystem(reads=[f"/r{i}" for i in range(n)]),
                    omitted={"filesystem.reads": 7},
                )

        return _Session()


def test_engine_caps_every_list_and_adds_up_what_was_left_out() -> None:
    engine = Engine(create("process"), observers=[_Chatty(50)], profile="host", list_cap=10)
    run = engine.run(ExecutionSpec(["true"]))
    rec = run.receipt
    assert len(rec.filesystem.reads) == 10 and len(rec.process_tree) == 10
    assert len(rec.processes) == 10
    assert rec.observation.list_cap == 10
    # 40 cut here, plus the 7 the observer itself already left out
    assert rec.observation.omitted == {"filesystem.reads": 47, "process_tree": 40}


def test_uncapped_run_says_nothing_was_left_out() -> None:
    from glasshouse.core.execution import DEFAULT_LIST_CAP

    run = Engine(create("process"), observers=[_Chatty(5)], profile="host").run(
        ExecutionSpec(["true"])
    )
    assert run.receipt_data["observation"]["list_cap"] == DEFAULT_LIST_CAP
    assert run.receipt_data["observation"]["omitted"] == {"filesystem.reads": 7}


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_engine_refuses_a_bad_cap(bad: object) -> None:
    with pytest.raises(ValueError, match="list_cap"):
        Engine(create("process"), list_cap=bad)  # type: ignore[arg-type]


# -- end to end: a real sandbox, the real observers, the CLI ----------------------------


def gh(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args],
        cwd=cwd, capture_output=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


SCRIPT = "for i in $(seq 300); do : > f$i; done; for i in $(seq 40); do /bin/true; done"


def _observer_or_skip(name: str) -> None:
    from glasshouse.backends import sandbox

    ok, why = sandbox.probe()
    if not ok:
        pytest.skip(why)
    if name == "strace":
        if not shutil.which("strace"):
            pytest.skip("strace not installed")
        return
    from glasshouse.observe.ebpf import EbpfObserver

    try:
        EbpfObserver().close()
    except ObserverUnavailable as exc:
        pytest.skip(f"eBPF observer unavailable: {exc}")


@pytest.mark.root
@pytest.mark.parametrize("observer", ["ebpf", "strace"])
def test_cli_cap_is_counted_exactly_and_shown(observer: str, tmp_path: Path) -> None:
    _observer_or_skip(observer)
    env = {"GLASSHOUSE_OBSERVER": observer}
    full, capped = tmp_path / "full", tmp_path / "capped"
    full.mkdir()
    capped.mkdir()
    p = gh("run", "-b", "sandbox", "-q", "--", "sh", "-c", SCRIPT, cwd=full, env=env)
    assert p.returncode == 0, p.stderr
    p = gh("run", "-b", "sandbox", "--max-list", "25", "--", "sh", "-c", SCRIPT, cwd=capped,
           env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    everything = json.loads((full / "receipt.json").read_text())
    data = json.loads((capped / "receipt.json").read_text())
    Receipt.model_validate(data)
    obs = data["observation"]
    assert obs["list_cap"] == 25 and everything["observation"]["omitted"] == {}
    writes = everything["filesystem"]["writes"]
    assert len(writes) >= 300  # the eBPF observer: exactly the 300 (no harness writes)
    assert len(data["filesystem"]["writes"]) == 25
    assert obs["omitted"]["filesystem.writes"] == len(writes) - 25
    assert len(data["process_tree"]) == 25 == len(data["processes"])
    assert obs["omitted"]["process_tree"] == len(everything["process_tree"]) - 25
    # never silent: the run's summary line and `receipt show` name the capped lists
    assert f"filesystem.writes left out {len(writes) - 25}" in p.stderr.decode()
    shown = gh("receipt", "show", "receipt.json", cwd=capped).stdout.decode()
    assert "lists capped at 25 entries" in shown
    assert f"+ {len(writes) - 25} left out at the list cap" in shown


def test_cli_refuses_a_zero_cap(tmp_path: Path) -> None:
    p = gh("run", "--max-list", "0", "--", "true", cwd=tmp_path)
    assert p.returncode == 2 and b"Invalid value for '--max-list'" in p.stderr
