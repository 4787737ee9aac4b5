"""``glasshouse run``'s fast path (argparse, no click) and its click command agree.

Both are built from one option table. For any arguments, the fast path either reads exactly
the values click would pass to the command, or leaves them to click (which then words the
help or the error); run end to end, both give the same exit code, output and receipt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from glasshouse.cli import _fast
from glasshouse.cli._run import run as click_run
from glasshouse.cli._run_options import (
    CHOICE,
    COUNT,
    ENV,
    FILES,
    FLAG,
    FLOAT,
    INT,
    OPTIONS,
    PATH,
    SIZE,
    SWITCH,
    TEXT,
    Option,
)

_CLICK = (  # the click application alone, as before the fast path
    "import sys; from glasshouse.cli._app import cli; "
    "cli.main(sys.argv[1:], prog_name='glasshouse')"
)


def _click_params(args: list[str]) -> dict[str, object] | None:
    """What the click command would be called with, or None for a usage error."""
    try:
        with click_run.make_context("run", list(args)) as ctx:
            return dict(ctx.params)
    except click.UsageError:
        return None


# -- the same values for every form of arguments the fast path takes ---------------------
_FILE = Path(__file__)
_NUMBERS = (["5", "0", "1.5", "1e3", "-1"], ["x", "", "0x10"])
_PATHS = ([str(_FILE), str(_FILE.parent), "/nonexistent/x"], ["-", ""])
_VALUES = {  # kind -> (values click takes for some option of the kind, values it refuses)
    FLOAT: _NUMBERS,
    INT: _NUMBERS,
    COUNT: _NUMBERS,
    CHOICE: (["disabled", "host", "guest"], ["bogus", "HOST"]),
    SIZE: (["16M", "512k", "1G", "0"], ["lots", "-1"]),
    PATH: _PATHS,
    ENV: (["A=1", "B="], ["x", "=y", "-x=1"]),
    FILES: ([str(_FILE), f"in={_FILE}"], ["/nonexistent/x", str(_FILE.parent)]),
    TEXT: (["sandbox", "process", "x"], ["", "-q", "--"]),
}
_ODD = ["-qp", "-qt5", "-pdisabled", "-qe", "--quiet=1", "-x", "--nope", "-", "x", "--help"]


def _option_words(option: Option) -> st.SearchStrategy[list[str]]:
    """One option as a user may write it: ``-t 5``, ``--timeout=5``, ``-t5``, ``-t=5``, an
    abbreviation, a flag given a value."""
    flags = [*option.flags, *([option.off] if option.off else [])]
    short = [f[: len(f) - 2] for f in flags if f.startswith("--")]  # an abbreviation
    flag = st.one_of(st.sampled_from(flags), st.sampled_from(flags), st.sampled_from(short))
    if option.kind in (FLAG, SWITCH):
        return st.one_of(flag.map(lambda f: [f]), flag.map(lambda f: [f + "=1"]))
    good, bad = (st.sampled_from(v) for v in _VALUES[option.kind])
    pair = st.tuples(flag, st.one_of(good, good, good, bad))
    return st.one_of(
        pair.map(list),
        pair.map(list),
        pair.map(lambda fv: [f"{fv[0]}={fv[1]}"]),
        pair.map(lambda fv: [fv[0] + fv[1]]),
    )


_WORDS = st.one_of(
    *(_option_words(o) for o in OPTIONS if not o.loader), st.sampled_from(_ODD).map(lambda w: [w])
)  # (the loaded options: test_loaded_options_are_loaded_alike)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=st.lists(_WORDS, max_size=4),
    dashes=st.integers(min_value=0, max_value=4),
    command=st.lists(st.sampled_from(["true", "sh", "-c", "--", "-q", "x"]), max_size=3),
)
def test_the_fast_path_reads_arguments_as_click_does_or_leaves_them(
    options: list[list[str]], dashes: int, command: list[str]
) -> None:
    words = [w for option in options for w in option]
    args = [*words, *(["--"] if dashes else []), *command]  # (mostly with the "--")
    fast = _fast.parse(args)
    event("fast path" if fast is not None else "left to click")
    if fast is not None:
        assert fast == _click_params(args), args


@pytest.mark.parametrize(
    "args",
    [
        ["--", "true"],
        ["-q", "-p", "disabled", "--receipt", "r.json", "--", "true"],
        ["-qpdisabled", "-t", "5", "--cpu", "2", "--memory", "512M", "--pids", "9", "--", "a"],
        ["--output-limit", "1k", "--file-size", "1M", "--disk", "1G", "--no-network", "--", "a"],
        ["-e", "A=1", "--env", "B=", "--clean-env", "--cwd", "/", "--stdin", "-", "--", "a"],
        ["--file", str(_FILE), "--file", f"in={_FILE}", "--output", "o", "--", "a", "--", "-q"],
        ["--output-dir", "/", "--max-list", "3", "--redact", "--envelope", "e.json", "--", "a"],
        ["--network", "--no-network", "--network", "-b", "sandbox", "--debug", "--", "a"],
    ],
)
def test_common_forms_take_the_fast_path(args: list[str]) -> None:
    fast = _fast.parse(args)
    assert fast is not None and fast == _click_params(args)


@pytest.mark.parametrize(
    "args",
    [
        ["-q", "true"],  # no "--": click's interspersed reading
        ["--help"],
        ["-h", "--", "true"],
        ["-t=5", "--", "true"],  # click reads "=5" as the value
        ["--output=--", "--", "true"],  # argparse drops a value "--"
        ["--time", "5", "--", "true"],  # click has no abbreviations
        ["--memory", "lots", "--", "true"],
        ["-e", "x", "--", "true"],
        ["--receipt", "/", "--", "true"],
        ["--max-list", "0", "--", "true"],
        ["--"],
    ],
)
def test_help_errors_and_other_forms_are_left_to_click(args: list[str]) -> None:
    assert _fast.parse(args) is None


def test_loaded_options_are_loaded_alike(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("name: t\nrules:\n  - id: nonzero\n    match: {outcome: {failed: true}}\n")
    args = ["--policy", str(policy), "--", "true"]
    fast, slow = _fast.parse(args), _click_params(args)
    assert fast is not None and slow is not None
    assert repr(fast.pop("policy")) == repr(slow.pop("policy")) and fast == slow
    policy.write_text("rules: [")
    assert _fast.parse(args) is None and _click_params(args) is None


# -- end to end: the same exit codes, output, errors and receipts ---------------------------
def _volatile(data: object) -> object:
    """The receipt without what differs between two runs of the same command."""
    if isinstance(data, dict):
        drop = {"digest", "duration_ms", "execution_id", "timestamp", "timing", "resources"}
        drop |= {"scope", "attached"}  # (pids, cgroup names and ids of this run)
        return {k: _volatile(v) for k, v in data.items() if k not in drop}
    if isinstance(data, list):
        return [_volatile(v) for v in data]
    return data


def _gh(argv: list[str], cwd: Path, *, fast: bool) -> tuple[int, bytes, str, object]:
    entry = ["-m", "glasshouse.cli"] if fast else ["-c", _CLICK]
    p = subprocess.run(
        [sys.executable, *entry, "run", *argv], cwd=cwd, capture_output=True, timeout=120
    )
    stderr = " ".join(w for w in p.stderr.decode().split() if not w.isdigit())  # (the ms)
    receipt = cwd / "receipt.json"
    data = _volatile(json.loads(receipt.read_text())) if receipt.exists() else None
    return p.returncode, p.stdout, stderr, data


@pytest.mark.parametrize(
    "argv",
    [
        ["-p", "disabled", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        ["-p", "disabled", "-e", "A=1", "--clean-env", "--", "sh", "-c", "echo $A; env | wc -l"],
        ["-p", "disabled", "--stdin", "in.txt", "--max-list", "2", "--", "cat"],
        ["-p", "disabled", "--timeout", "0.5", "--", "sleep", "30"],
        ["-p", "disabled", "--", "no-such-command-xyz"],
        ["-p", "disabled", "--backend", "nope", "--", "true"],
        ["-p", "disabled", "--no-network", "--", "true"],
        ["--memory", "lots", "--", "true"],
        ["-t=5", "--", "true"],
        ["--help"],
    ],
)
def test_both_paths_run_alike(tmp_path: Path, argv: list[str]) -> None:
    results = []
    for fast in (True, False):
        cwd = tmp_path / ("fast" if fast else "click")
        cwd.mkdir()
        (cwd / "in.txt").write_text("from a file\n")
        results.append(_gh(argv, cwd, fast=fast))
    assert results[0] == results[1]


def test_the_fast_path_imports_no_click(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom glasshouse.cli._fast import run\n"
        "try:\n    run(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print(e.code, 'click' in sys.modules)\n"
    )
    args = ["-q", "-p", "disabled", "--", "true"]
    p = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert p.stdout.split() == ["0", "False"], p.stderr
    assert (tmp_path / "receipt.json").exists()
    assert os.path.getsize(tmp_path / "receipt.json") > 0


def test_every_command_loads() -> None:
    """The lazy group leaves out a command whose module cannot be imported (a part missing
    from a build); our own import errors must not hide a command that way."""
    import importlib

    from glasshouse.cli import _COMMANDS

    for name, target in _COMMANDS.items():
        module, _, attr = target.partition(":")
        try:
            assert getattr(importlib.import_module(module), attr) is not None, name
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith("glasshouse"):
                raise
            pytest.skip(f"{name}: optional dependency {exc.name} is not installed")
