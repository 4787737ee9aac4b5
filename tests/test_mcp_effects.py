"""The observed-effects summary (glasshouse.mcp.effects) on real receipts of real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import ebpf_observer
from server_helpers import require_backend

import glasshouse
from glasshouse.mcp.effects import MAX_ITEMS, combine, effects_of, slim

#: Writes one file and deletes another, listens on a loopback port and connects to it (the
#: sandbox's own lo), and starts a child process.
_WORKLOAD = """
import os, socket, subprocess
open('kept.txt', 'w').write('hi')
open('gone.txt', 'w').write('x'); os.remove('gone.txt')
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
port = srv.getsockname()[1]
c = socket.create_connection(('127.0.0.1', port)); c.close()
subprocess.run(['true'])
print(port)
"""

POLICY = """
name: no-kept
rules:
  - id: no-kept-file
    description: the run must not write kept.txt
    match: {file: {path: "**/kept.txt", op: write}}
"""


@pytest.fixture(scope="module")
def observer():
    with ebpf_observer() as obs:
        yield obs


@pytest.fixture(scope="module")
def sandbox_receipt(observer, tmp_path_factory) -> dict:
    require_backend("sandbox", "glasshouse.backends.sandbox")
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY)
    with glasshouse.Runner(
        "sandbox", observers=[observer], pipeline=glasshouse.pipeline_for(policy=policy)
    ) as runner:
        result = runner.run(["python3", "-c", _WORKLOAD], timeout=30)
    assert result.returncode == 0, result.stderr
    return result.receipt


def test_a_run_that_writes_deletes_connects_and_spawns_shows_all_four(sandbox_receipt):
    effects = effects_of(sandbox_receipt)
    assert effects.observed
    assert "/workspace/kept.txt" in effects.files_written
    assert "/workspace/gone.txt" in effects.files_deleted
    loopback = [a for a in effects.network_attempts if a.dst.startswith("127.0.0.1:")]
    assert loopback and loopback[0].protocol == "tcp" and loopback[0].result == "connected"
    assert any(p.argv[:1] == ["true"] for p in effects.processes_started)
    assert effects.processes_started_total == len(sandbox_receipt["process_tree"])


def test_policy_findings_are_carried(sandbox_receipt):
    effects = effects_of(sandbox_receipt)
    assert effects.policy is not None
    assert effects.policy.passed is False
    assert effects.policy.violations == ["no-kept-file"]
    text = "\n".join(effects.lines())
    assert "policy no-kept: FAILED: deny no-kept-file" in text


def test_the_text_rendering_names_each_effect(sandbox_receipt):
    text = "\n".join(effects_of(sandbox_receipt).lines())
    assert "files written" in text and "/workspace/kept.txt" in text
    assert "files deleted (1): /workspace/gone.txt" in text
    assert "tcp 127.0.0.1:" in text and "(connected)" in text
    assert "processes started" in text


def test_an_unobserved_run_says_so_instead_of_claiming_nothing_happened(tmp_path):
    result = glasshouse.run(
        ["sh", "-c", "echo x > f.txt"], backend="process", profile="disabled", cwd=str(tmp_path)
    )
    effects = effects_of(result.receipt)
    assert (tmp_path / "f.txt").exists()
    assert effects.observed is False
    assert effects.files_written == []
    assert effects.lines()[0].startswith("not observed")


def test_lists_are_capped_and_the_totals_count_everything(observer, tmp_path):
    script = f"for i in range({MAX_ITEMS + 5}): open(f'f{{i}}.txt', 'w').close()"
    with glasshouse.Runner("process", observers=[observer]) as runner:
        result = runner.run(["python3", "-c", script], cwd=str(tmp_path), timeout=30)
    effects = effects_of(result.receipt)
    mine = [p for p in result.receipt["filesystem"]["writes"] if p.startswith(str(tmp_path))]
    assert len(mine) == MAX_ITEMS + 5
    assert len(effects.files_written) == MAX_ITEMS
    assert effects.files_written_total >= MAX_ITEMS + 5
    assert f"(+{effects.files_written_total - MAX_ITEMS} more)" in effects.lines()[0]


def test_combine_is_the_union_of_steps(sandbox_receipt):
    second = json.loads(json.dumps(sandbox_receipt))
    second["filesystem"]["writes"] = ["/workspace/other.txt"]
    second["filesystem"]["deletes"] = []
    second["policy"]["passed"] = True
    second["policy"]["violations"] = []
    merged = effects_of(combine([slim(sandbox_receipt), slim(second)]))
    assert "/workspace/kept.txt" in merged.files_written
    assert "/workspace/other.txt" in merged.files_written
    assert merged.files_deleted == ["/workspace/gone.txt"]
    assert merged.processes_started_total == 2 * len(sandbox_receipt["process_tree"])
    assert merged.policy is not None and merged.policy.passed is False  # failed on one step
    # the same attempt seen twice is listed once
    assert len(merged.network_attempts) == len(effects_of(sandbox_receipt).network_attempts)


def test_slim_keeps_what_a_summary_needs_and_drops_the_reads(sandbox_receipt):
    small = slim(sandbox_receipt)
    assert "reads" not in small["filesystem"]
    assert effects_of(small) == effects_of(sandbox_receipt)
    assert len(json.dumps(small)) < len(json.dumps(sandbox_receipt))


def test_a_stored_v030_receipt_still_summarizes():
    fixtures = Path(__file__).parent / "fixtures" / "receipt-v0.3.0"
    paths = sorted(fixtures.glob("*.json"))
    if not paths:
        pytest.skip("no v0.3.0 receipt fixtures")
    for path in paths:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "filesystem" in data:
            effects = effects_of(data)
            assert effects.files_written_total >= len(effects.files_written)
