"""The receipt's coverage statement (issue 14, item 6), without root: each reason derived from
the shapes observers really produce, the statement's place in the sealed receipt (model,
schema, digest, signature), receipts written before it (coverage unknown), the in-toto
runtime trace and the policy leaf that requires completeness."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from glasshouse.backends import create
from glasshouse.backends.microvm import _events
from glasshouse.core.execution import ExecutionResult, ExecutionSpec
from glasshouse.core.profiling import CoverageGap, Observation
from glasshouse.engine import Engine
from glasshouse.observe import unavailable_observer
from glasshouse.policy import evaluate, parse_policy
from glasshouse.receipt import intoto
from glasshouse.receipt.aggregate import build_receipt
from glasshouse.receipt.canonical import check_digest, seal_data
from glasshouse.receipt.coverage import DERIVERS, coverage_of
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.model import Resources as ResourcesModel
from glasshouse.receipt.sign import (
    VerificationError,
    load_private_key,
    load_public_key,
    sign_receipt,
    verify_attestation,
    verify_envelope,
)
from glasshouse.receipt.store import ReceiptError, load_receipt, parse_receipt

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "receipt-v0.4.0.schema.json").read_text())
FIXTURES = ROOT / "tests" / "fixtures"
PRE = FIXTURES / "receipt-v0.4.0-pre-coverage"
V030 = FIXTURES / "receipt-v0.3.0"
KEY = V030 / "test-only.key"
PUB = V030 / "test-only.pub"
FAKE = create("fake")


def _host(**fields: Any) -> Observation:
    """An observation shaped like the eBPF observer's for a run it saw whole."""
    from glasshouse.receipt.model import Filesystem, Network, ProcessNode, Syscalls

    base: dict[str, Any] = {
        "observer": "ebpf",
        "provenance": "host",
        "process_tree": [ProcessNode(pid=10, ppid=1, exe="/usr/bin/true", argv=["true"])],
        "filesystem": Filesystem(reads=["/etc/ld.so.cache"]),
        "network": Network(),
        "syscalls": Syscalls(counts={"execve": 1, "openat": 3}),
        "resources": ResourcesModel(max_rss_kb=1000, cpu_time_ms=1),
        "events": 5,
    }
    return Observation(**(base | fields))


def _build(
    observations: list[Observation],
    *,
    isolation: str = "none",
    profile: str = "host",
    list_cap: int = 10_000,
    result: ExecutionResult | None = None,
    sandbox: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The receipt data ``build_receipt`` makes of ``observations``, validated by the model
    and the committed schema."""
    if result is None:
        result = ExecutionResult(exit_code=0, root_pid=10)
    result.details.setdefault("isolation", isolation)
    result.sandbox.update(sandbox or {})
    data = build_receipt(
        execution_id="exec-1-00",
        spec=ExecutionSpec(argv=["true"]),
        result=result,
        observations=observations,
        profile=profile,
        backend=FAKE,
        list_cap=list_cap,
    )
    Receipt.model_validate(data)
    jsonschema.validate(data, SCHEMA)
    return data


def _coverage(data: dict[str, Any]) -> dict[str, Any]:
    return data["observation"]["coverage"]


def _codes(data: dict[str, Any]) -> list[str]:
    return [r["code"] for r in _coverage(data)["reasons"]]


def _only(data: dict[str, Any], code: str) -> dict[str, Any]:
    found = [r for r in _coverage(data)["reasons"] if r["code"] == code]
    assert len(found) == 1, _coverage(data)
    return found[0]


# -- each reason, from the shapes observers produce ------------------------------------------


def test_a_run_seen_whole_is_complete() -> None:
    data = _build([_host()])
    statement = {k: _coverage(data)[k] for k in ("status", "complete", "reasons")}
    assert statement == {"status": "complete", "complete": True, "reasons": []}


def test_profile_disabled_is_none() -> None:
    run = Engine(create("process"), profile="disabled").run(ExecutionSpec(argv=["true"]))
    cov = _coverage(run.receipt_data)
    assert cov["status"] == "none" and cov["complete"] is False
    assert [r["code"] for r in cov["reasons"]] == ["disabled"]
    assert "--profile disabled" in cov["reasons"][0]["message"]


def test_nothing_ran_and_no_observer_are_none() -> None:
    observer = unavailable_observer("unused")
    engine = Engine(create("process"), observers=[observer], profile="host")
    data = engine.run(ExecutionSpec(argv=[])).receipt_data  # an invalid spec: nothing runs
    assert _coverage(data)["status"] == "none" and _codes(data) == ["not_run"]
    assert "argv is empty" in _coverage(data)["reasons"][0]["message"]
    data = Engine(create("process"), profile="host").run(ExecutionSpec(argv=["true"])).receipt_data
    assert _coverage(data)["status"] == "none" and _codes(data) == ["no_observer"]


def test_unavailable_observer() -> None:
    engine = Engine(
        create("process"), observers=[unavailable_observer("no BTF here")], profile="host"
    )
    data = engine.run(ExecutionSpec(argv=["true"])).receipt_data
    assert _coverage(data)["status"] == "none"
    reason = _only(data, "observer_unavailable")
    assert reason["observer"] == "ebpf" and "no BTF here" in reason["message"]
    # one observer of two unavailable: the other's observation stands, incomplete
    guest = Observation.unavailable("guest", "guest", "backend process reported no guest events")
    data = _build([_host(), guest], profile="combined")
    assert _coverage(data)["status"] == "incomplete"
    assert _only(data, "observer_unavailable")["observer"] == "guest"


def test_events_lost_derived_from_the_count() -> None:
    data = _build([_host(observer="strace", events_lost=7)])
    reason = _only(data, "events_lost")
    assert reason["count"] == 7 and reason["observer"] == "strace"


def test_events_lost_stated_by_the_observer_with_its_causes() -> None:
    causes = {"kernel": 5, "recursion": 0, "undelivered": 2}
    gap = CoverageGap("events_lost", "7 event(s) lost: ...", count=7, detail=causes)
    obs = _host(events_lost=7, gaps=[gap], accounts_for=frozenset({"events_lost"}))
    reason = _only(_build([obs]), "events_lost")  # stated once, not derived again
    assert reason["detail"] == causes and reason["observer"] == "ebpf"


def test_truncations() -> None:
    reason = _only(_build([_host(truncations=2)]), "truncated")
    assert reason["count"] == 2 and reason["observer"] == "ebpf"


def test_list_capped_at_the_observer_and_at_the_receipt() -> None:
    from glasshouse.receipt.model import Filesystem

    obs = _host(
        filesystem=Filesystem(reads=[f"/r{i}" for i in range(5)]),
        omitted={"filesystem.writes": 4},
    )
    data = _build([obs], list_cap=2)
    reason = _only(data, "list_capped")
    assert reason["detail"] == {"filesystem.reads": 3, "filesystem.writes": 4}
    assert reason["count"] == 7 and reason["sections"] == ["filesystem"]
    assert "capped at 2" in reason["message"]


def _blind_host() -> Observation:
    """The eBPF observer's observation when the workload start is ``none`` (runsc, a VMM)."""
    from glasshouse.receipt.model import Harness, HarnessCounts

    why = "the workload ran where the host cannot see it (gVisor's sentry or a VM guest)"
    return Observation(
        observer="ebpf",
        provenance="host",
        resources=ResourcesModel(max_rss_kb=2000, cpu_time_ms=9),
        missing={s: why for s in ("process_tree", "filesystem", "network", "syscalls")},
        harness=Harness(counts=HarnessCounts(syscalls=900)),
    )


def test_gvisor_blind() -> None:
    data = _build([_blind_host()], isolation="gvisor")
    reason = _only(data, "blind:gvisor")
    assert reason["sections"] == ["process_tree", "filesystem", "network", "syscalls"]
    assert "not_collected" not in _codes(data)  # the blind spot explains the missing sections


def test_vm_blind_unless_the_guest_covered_it() -> None:
    data = _build([_blind_host()], isolation="vm")
    assert _only(data, "blind:vm_guest")["sections"] == [
        "process_tree",
        "filesystem",
        "network",
        "syscalls",
    ]
    # python3 -c in the warm guest interpreter: the guest's audit events cover all but syscalls
    opened = ["open", "/work/x", 0o101]
    process = ["process", 7, "/usr/bin/python3", ["python3", "-c", "..."], 0, None]
    guest = _events.fold([opened, process], count=2, lost=0, mode="inprocess", complete=True)
    data = _build([_blind_host(), guest], isolation="vm", profile="combined")
    assert _only(data, "blind:vm_guest")["sections"] == ["syscalls"]
    assert data["filesystem"]["writes"] == ["/work/x"]
    # a command exec'd in the guest: only its process is recorded there
    guest = _events.fold([process], count=1, lost=0, mode="exec", complete=True)
    data = _build([_blind_host(), guest], isolation="vm", profile="combined")
    assert _only(data, "blind:vm_guest")["sections"] == ["filesystem", "network", "syscalls"]


def test_guest_spawns_and_a_partial_guest_record() -> None:
    spawn = ["spawn", "/bin/sh", ["sh", "-c", "echo > f"]]
    process = ["process", 7, "/usr/bin/python3", ["python3", "-c", "..."], None, None]
    guest = _events.fold([spawn, process], count=2, lost=0, mode="inprocess", complete=False)
    data = _build([guest], isolation="vm", profile="guest")
    spawned = _only(data, "blind:guest_spawn")
    assert spawned["count"] == 1 and spawned["observer"] == "guest-audit"
    partial = _only(data, "partial")
    assert partial["sections"] == ["process_tree"] and "without a result" in partial["message"]


def test_section_not_collected() -> None:
    # the strace fallback has no resource accounting; nor has this backend's result
    data = _build([_host(observer="strace", resources=None)])
    reason = _only(data, "not_collected")
    assert reason["sections"] == ["resources"]


def test_io_uring_used_not_denied_not_accounted_for() -> None:
    from glasshouse.receipt.model import Syscalls

    used = Syscalls(counts={"io_uring_enter": 3, "io_uring_setup": 1, "openat": 2})
    reason = _only(_build([_host(syscalls=used)]), "blind:io_uring")
    assert reason["count"] == 4
    assert reason["detail"] == {"io_uring_setup": 1, "io_uring_enter": 3}
    # a sandbox whose seccomp program refuses io_uring_setup: no ring could be made
    denied = {"seccomp_denied": ["io_uring_setup", "io_uring_enter", "io_uring_register"]}
    data = _build([_host(syscalls=used)], sandbox=denied)
    assert "blind:io_uring" not in _codes(data)
    # the extension point: an observer that decodes io_uring states what it could not see
    decoded = _host(syscalls=used, accounts_for=frozenset({"blind:io_uring"}))
    assert _coverage(_build([decoded]))["status"] == "complete"
    gap = CoverageGap("blind:io_uring", "2 IORING_OP_URING_CMD not decoded", count=2)
    partly = _host(syscalls=used, accounts_for=frozenset({"blind:io_uring"}), gaps=[gap])
    assert _only(_build([partly]), "blind:io_uring")["count"] == 2


def test_unknown_syscall_numbers() -> None:
    from glasshouse.receipt.model import Syscalls

    obs = _host(syscalls=Syscalls(counts={"openat": 1, "unknown": 3}))
    assert _only(_build([obs]), "blind:unknown_syscalls")["count"] == 3


def test_observer_stated_gaps_carry_the_observer() -> None:
    gaps = [
        CoverageGap("not_drained", "the run ended before the reader drained"),
        CoverageGap("survivors_unobserved", "2 still running", count=2),
    ]
    data = _build([_host(gaps=gaps)])
    assert _codes(data) == ["not_drained", "survivors_unobserved"]
    assert {r["observer"] for r in _coverage(data)["reasons"]} == {"ebpf"}


def test_reasons_are_in_a_stable_order() -> None:
    from glasshouse.receipt.model import Syscalls

    obs = _host(
        observer="strace",
        events_lost=1,
        truncations=1,
        syscalls=Syscalls(counts={"io_uring_setup": 1}),
        resources=None,
    )
    data = _build([obs])
    assert _codes(data) == sorted(_codes(data))
    assert _build([obs])["observation"]["coverage"] == _coverage(data)
    assert len(DERIVERS) == len(set(DERIVERS))


# -- the statement in the receipt: model, schema, digest, signature --------------------------


def _sealed_incomplete() -> dict[str, Any]:
    return seal_data(_build([_host(events_lost=3)]))


def test_model_refuses_an_inconsistent_statement() -> None:
    data = _sealed_incomplete()
    for change in (
        {"complete": True},  # says complete, status incomplete
        {"status": "complete", "complete": True},  # complete with reasons
        {"reasons": []},  # incomplete without a reason
        {"status": "partial"},
    ):
        bad = copy.deepcopy(data)
        bad["observation"]["coverage"].update(change)
        with pytest.raises(ReceiptError):
            parse_receipt(json.dumps(bad))
    bad = copy.deepcopy(data)
    bad["observation"]["coverage"]["reasons"][0]["code"] = "Events Lost"
    with pytest.raises(ReceiptError, match="code"):
        parse_receipt(json.dumps(bad))


def test_coverage_is_sealed_and_signed() -> None:
    data = _sealed_incomplete()
    assert check_digest(data)
    key = load_private_key(KEY)
    envelope = sign_receipt(data, key)
    verify_envelope(envelope, key.public_key(), receipt=data)
    forged = copy.deepcopy(data)
    forged["observation"]["coverage"] = {"status": "complete", "complete": True, "reasons": []}
    assert not check_digest(forged)
    with pytest.raises(VerificationError):
        verify_envelope(envelope, key.public_key(), receipt=forged)


def test_a_v030_receipt_cannot_state_coverage() -> None:
    old = json.loads((V030 / "receipt.json").read_text())
    old["observation"]["coverage"] = {"status": "complete", "complete": True, "reasons": []}
    with pytest.raises(ReceiptError, match=r"observation\.coverage is a v0\.4\.0 field"):
        parse_receipt(json.dumps(old))


@pytest.mark.parametrize("fixture", [V030, PRE], ids=["v0.3.0", "v0.4.0-pre-coverage"])
def test_older_receipts_still_verify_and_read_as_unknown(fixture: Path) -> None:
    raw = json.loads((fixture / "receipt.json").read_text())
    assert "coverage" not in raw["observation"]
    rec = load_receipt(fixture / "receipt.json")
    assert rec.observation.coverage is None
    assert rec.model_dump(mode="json") == raw  # nothing added: the digest still checks
    assert check_digest(rec)
    jsonschema.validate(raw, SCHEMA)
    verify_envelope((fixture / "receipt.dsse.json").read_text(), load_public_key(PUB), receipt=raw)
    assert coverage_of(raw) == {"status": "unknown", "complete": False, "reasons": []}


def test_a_runtime_trace_signed_before_coverage_still_verifies() -> None:
    raw = json.loads((PRE / "receipt.json").read_text())
    verified = verify_attestation(
        (PRE / "trace.dsse.json").read_text(), load_public_key(PUB), receipt=raw
    )
    assert verified.statement["predicateType"] == intoto.PREDICATE_TYPE


def test_runtime_trace_carries_the_statement() -> None:
    data = _sealed_incomplete()
    stmt = intoto.runtime_trace_statement(data)
    cov = stmt["predicate"]["metadata"]["glasshouse"]["coverage"]
    assert cov["status"] == "incomplete" and cov["complete"] is False
    assert [r["code"] for r in cov["reasons"]] == ["events_lost"]
    assert cov["eventsLost"] == 3  # the observation block's own fields stay beside it
    assert "coverage" not in cov
    assert intoto.statement_problems(stmt) == []


def _gh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_show_states_coverage(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_sealed_incomplete()))
    shown = _gh("receipt", "show", str(path), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "coverage" in shown.stdout and "incomplete: events_lost (3)" in shown.stdout
    shown = _gh("receipt", "show", str(PRE / "receipt.json"), cwd=tmp_path)
    assert shown.returncode == 0 and "unknown" in shown.stdout


# -- the policy leaf -------------------------------------------------------------------------

REQUIRE = """\
rules:
  - id: complete-observation
    description: the receipt must be able to prove an absence
    match: {coverage: {complete: false}}
"""


def _fired(policy_text: str, data: dict[str, Any]) -> dict[str, list[str]]:
    verdict = evaluate(parse_policy(policy_text), data)
    return {r.rule: [e.at for e in r.evidence] for r in verdict.fired}


def test_policy_requires_complete_coverage() -> None:
    complete = _build([_host()])
    assert _fired(REQUIRE, complete) == {}
    incomplete = _build([_host(events_lost=3, truncations=1)])
    verdict = evaluate(parse_policy(REQUIRE), incomplete)
    assert not verdict.passed
    assert [e.at for e in verdict.fired[0].evidence] == [
        "/observation/coverage/reasons/0",
        "/observation/coverage/reasons/1",
    ]
    assert verdict.violation_lines() == [
        "complete-observation: events_lost",
        "complete-observation: truncated",
    ]
    disabled = Engine(create("process"), profile="disabled").run(ExecutionSpec(argv=["true"]))
    assert _fired(REQUIRE, disabled.receipt_data) == {
        "complete-observation": ["/observation/coverage/reasons/0"]
    }
    # a receipt that states no coverage cannot prove an absence either
    old = json.loads((PRE / "receipt.json").read_text())
    verdict = evaluate(parse_policy(REQUIRE), old)
    assert not verdict.passed
    assert verdict.fired[0].evidence[0].value == {
        "absent": "observation.coverage (coverage unknown)"
    }


def test_policy_matches_status_and_reason_codes() -> None:
    policy = """\
rules:
  - {id: blind, match: {coverage: {reason: "blind:*"}}}
  - {id: lost, match: {coverage: {reason: [events_lost, not_drained]}}}
  - {id: unknown-or-none, match: {coverage: {status: [none, unknown]}}}
  - {id: is-complete, action: warn, match: {coverage: {complete: true}}}
  - {id: incomplete-blind, match: {coverage: {status: incomplete, reason: "blind:gvisor"}}}
"""
    gvisor = _build([_blind_host()], isolation="gvisor")
    assert _fired(policy, gvisor) == {
        "blind": ["/observation/coverage/reasons/0"],
        "incomplete-blind": ["/observation/coverage/reasons/0"],
    }
    assert _fired(policy, _build([_host()])) == {"is-complete": ["/observation/coverage/status"]}
    old = json.loads((PRE / "receipt.json").read_text())
    assert _fired(policy, old) == {"unknown-or-none": [""]}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{}", "coverage needs one of: complete, status, reason"),
        ("{status: partial}", "'partial' is not one of: complete, incomplete, none, unknown"),
        ("{complete: maybe}", "expected true or false"),
        ("{reason: '[a'}", "unclosed '\\[' in glob"),
        ("{level: 1}", "unknown key 'level'"),
    ],
)
def test_policy_leaf_errors(body: str, reason: str) -> None:
    from glasshouse.policy import PolicyError

    with pytest.raises(PolicyError, match=reason) as info:
        parse_policy(f"rules:\n  - id: r\n    match: {{coverage: {body}}}\n")
    assert info.value.line == 3


def test_policy_digest_is_canonical() -> None:
    a = parse_policy("rules: [{id: r, match: {coverage: {status: [none, unknown]}}}]")
    b = parse_policy("rules:\n  - id: r\n    match: {coverage: {status: [unknown, none]}}\n")
    assert a.digest == b.digest
