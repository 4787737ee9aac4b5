"""``auto``: the strongest isolation that serves real work (issue 17, item 5).

The rule (figures in, choice and reason out) is tested on any host; the real probe, its
cache, ``glasshouse doctor``, the CLI and the server's ``/health`` on hosts where both the
microVM and the sandbox run (skipped with the probed reason elsewhere).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from server_helpers import config

from glasshouse import backends
from glasshouse.backends import _auto
from glasshouse.backends._auto_rule import (
    MAX_RATIO,
    MAX_VM_MS,
    TOUCH_MIB,
    Figures,
    decide,
)


def _figures(vm_ms: float | None, sandbox_ms: float | None = 20.0, **kw: object) -> Figures:
    return Figures(sandbox_ms=sandbox_ms, vm_ms=vm_ms, vm_timeout_s=5.0, **kw)  # type: ignore[arg-type]


# -- the rule --------------------------------------------------------------------------
def test_a_vm_timeout_is_far_slower() -> None:
    choice = decide(_figures(None, vm_timed_out=True))
    assert choice.backend == "sandbox"
    assert "timed out after 5 s" in choice.reason and "sandbox 20 ms" in choice.reason


def test_far_slower_means_both_over_the_ratio_and_over_a_second() -> None:
    slow = decide(_figures(21_000.0))
    assert slow.backend == "sandbox"
    assert "21.0 s" in slow.reason and "1050.0x" in slow.reason
    # 45x the sandbox but under a second: still serves real work.
    assert decide(_figures(900.0)).backend == "microvm"
    # Over a second but within 10x (a slow sandbox on a busy host): the microVM.
    assert decide(_figures(1500.0, sandbox_ms=200.0)).backend == "microvm"
    # On the bound itself: not over it.
    on_bound = decide(_figures(MAX_VM_MS, sandbox_ms=MAX_VM_MS / MAX_RATIO))
    assert on_bound.backend == "microvm"
    assert "serves real work" in on_bound.reason
    assert decide(_figures(MAX_VM_MS + 1, sandbox_ms=MAX_VM_MS / MAX_RATIO)).backend == "sandbox"


def test_a_side_that_fails_the_check() -> None:
    vm_broken = decide(_figures(None, vm_error="exit 1: MemoryError"))
    assert vm_broken.backend == "sandbox" and "MemoryError" in vm_broken.reason
    sandbox_broken = decide(_figures(300.0, sandbox_ms=None, sandbox_error="exit 137"))
    assert sandbox_broken.backend == "microvm" and "exit 137" in sandbox_broken.reason


def test_a_fast_sandbox_reading_of_zero_does_not_divide_by_zero() -> None:
    assert decide(_figures(2000.0, sandbox_ms=0.0)).backend == "sandbox"
    assert decide(_figures(0.0, sandbox_ms=0.0)).backend == "microvm"


def test_choice_and_figures_serialise() -> None:
    figures = _figures(None, vm_timed_out=True, measured_at="2026-12-03T10:00:00+00:00")
    assert Figures.from_dict(json.loads(json.dumps(figures.to_dict()))) == figures
    data = decide(figures).to_dict()
    assert data["backend"] == "sandbox" and data["figures"]["vm_timed_out"] is True


# -- the cache -------------------------------------------------------------------------
def _store(path: Path, figures: Figures, age_s: float) -> None:
    path.write_text(json.dumps({"at": time.time() - age_s, "figures": figures.to_dict()}))


def test_cached_figures_expire(tmp_path: Path) -> None:
    path = tmp_path / "auto.json"
    measured = _figures(None, vm_timed_out=True)
    _store(path, measured, 60)
    assert _auto._read(path) == measured
    _store(path, measured, _auto.CACHE_TTL_S + 1)
    assert _auto._read(path) is None
    _store(path, measured, -3600)  # from the future (clock stepped back): not trusted
    assert _auto._read(path) is None


def test_a_failed_check_is_retried_sooner(tmp_path: Path) -> None:
    path = tmp_path / "auto.json"
    failed = _figures(None, vm_error="RuntimeError: restore failed")
    _store(path, failed, _auto.FAILURE_TTL_S - 60)
    assert _auto._read(path) == failed
    _store(path, failed, _auto.FAILURE_TTL_S + 1)
    assert _auto._read(path) is None


def test_unreadable_cache_entries_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "auto.json"
    assert _auto._read(path) is None
    path.write_text(f'{{"at": {time.time() - 1}, "figures": {{"sandbox_ms": 23, "vm_ms": 1, '
                    '"vm_timeout_s": 5}}')  # fmt: skip
    assert _auto._read(path) == _figures(1, sandbox_ms=23)  # the well-formed one is read
    for text in (
        "",
        "{",
        "[]",
        '{"at": 1}',
        '{"at": "x", "figures": {}}',
        '{"at": NOW, "figures": []}',
        '{"at": NOW, "figures": {"sandbox_ms": "23", "vm_ms": null, "vm_timeout_s": 5}}',
        '{"at": NOW, "figures": {"sandbox_ms": 23, "vm_ms": true, "vm_timeout_s": 5}}',
        '{"at": NOW, "figures": {"sandbox_ms": 23, "vm_ms": 1, "vm_timeout_s": null}}',
    ):
        text = text.replace("NOW", str(time.time() - 1))
        path.write_text(text)
        assert _auto._read(path) is None


def test_the_cache_key_covers_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _auto.cache_path()
    assert _auto.cache_path() == before
    monkeypatch.setattr(_auto, "__version__", "0.0.0-other")
    assert _auto.cache_path() != before


# -- the help texts state the rule ------------------------------------------------------
@pytest.mark.parametrize("command", ["glasshouse.cli._run:run", "glasshouse.server.cli:main"])
def test_help_states_the_rule(command: str) -> None:
    module, _, attr = command.partition(":")
    cmd = getattr(importlib.import_module(module), attr)
    text = " ".join(CliRunner().invoke(cmd, ["--help"], terminal_width=1000).output.split())
    assert f"touching {TOUCH_MIB} MiB" in text
    assert f"over {MAX_RATIO:g}x and over {MAX_VM_MS / 1000:g} s" in text
    assert f"past a {_auto.VM_TIMEOUT_S:g} s timeout" in text


# -- the real probe on this host ---------------------------------------------------------
def _need_both() -> None:
    for name in ("microvm", "sandbox"):
        ok, why = _auto._probe(f"glasshouse.backends.{name}")
        if not ok:
            pytest.skip(f"{name} cannot run here: {why}")


@pytest.fixture(scope="module")
def measured() -> Figures:
    """The real check, measured afresh on this host (and cached for what follows)."""
    _need_both()
    return _auto.workload_figures(refresh=True)


def test_the_real_check_records_figures_and_follows_the_rule(measured: Figures) -> None:
    assert measured.sandbox_ms is not None, measured.sandbox_error
    assert measured.vm_ms is not None or measured.vm_timed_out, measured.vm_error
    assert measured.touch_mib == TOUCH_MIB and measured.measured_at
    cached = json.loads(_auto.cache_path().read_text())
    assert Figures.from_dict(cached["figures"]) == measured
    # A later resolution reads those figures (same measurement time) and applies the rule.
    choice = backends.auto_choice()
    assert choice.figures == measured
    assert choice == decide(measured)
    vm = measured.vm_ms
    far_slower = measured.vm_timed_out or (
        vm is not None and vm > MAX_RATIO * measured.sandbox_ms and vm > MAX_VM_MS
    )
    assert choice.backend == ("sandbox" if far_slower else "microvm")
    assert backends.auto_select() == choice.backend


def test_doctor_shows_the_choice_and_figures(measured: Figures) -> None:
    check = {c.name: c for c in backends.doctor_checks()}["auto-backend"]
    choice = backends.auto_choice()
    assert check.ok
    assert check.detail.startswith(f"{choice.backend}: {choice.reason}")
    assert f"sandbox {measured.sandbox_ms:.0f} ms" in check.detail
    assert measured.measured_at in check.detail  # type: ignore[operator]


def test_health_says_what_auto_chose_and_why(measured: Figures, tmp_path: Path) -> None:
    from glasshouse.server import Runner
    from glasshouse.server.models import Health

    runner = Runner(config(tmp_path, backend="auto", pool_size=0))
    try:
        health = Health.model_validate(runner.health())
    finally:
        runner.close()
    choice = backends.auto_choice(allow_unsandboxed=False)
    assert health.backend == choice.backend
    assert health.backend_choice.requested == "auto"
    assert health.backend_choice.backend == choice.backend
    assert health.backend_choice.reason == choice.reason
    assert health.backend_choice.figures == measured.to_dict()


def test_health_of_an_explicit_backend(tmp_path: Path) -> None:
    from glasshouse.server import Runner
    from glasshouse.server.models import Health

    ok, why = _auto._probe("glasshouse.backends.sandbox")
    if not ok:
        pytest.skip(f"sandbox cannot run here: {why}")
    runner = Runner(config(tmp_path, backend="sandbox", pool_size=0))
    try:
        choice = Health.model_validate(runner.health()).backend_choice
    finally:
        runner.close()
    assert (choice.requested, choice.backend, choice.figures) == ("sandbox", "sandbox", None)


def _import_log(tmp_path: Path, backend: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    receipt = tmp_path / f"{backend}.json"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "glasshouse.cli", "run", "--backend",
         backend, "--profile", "disabled", "--receipt", str(receipt), "--", "true"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads(receipt.read_text())


def test_cli_auto_reads_the_cache_and_sandbox_skips_it(measured: Figures, tmp_path: Path) -> None:
    proc, receipt = _import_log(tmp_path, "auto")
    chosen, ran = backends.auto_select(), receipt["execution"]["backend"]
    # (a microVM run's receipt names its VMM)
    assert ran == chosen or (chosen == "microvm" and ran in ("firecracker", "qemu")), ran
    assert "glasshouse.backends._auto" in proc.stderr
    assert json.loads(_auto.cache_path().read_text())["figures"] == measured.to_dict()
    proc, receipt = _import_log(tmp_path, "sandbox")
    assert receipt["execution"]["backend"] == "sandbox"
    assert "glasshouse.backends._auto" not in proc.stderr
