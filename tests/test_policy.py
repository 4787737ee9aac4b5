"""The policy language: golden cases, error messages with lines, and hypothesis properties."""

from __future__ import annotations

import copy
import functools
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust_helpers import real_receipt

from glasshouse.policy import PolicyError, apply_verdict, evaluate, load_policy, parse_policy
from glasshouse.receipt.canonical import seal_data
from glasshouse.receipt.model import Receipt


@functools.cache
def _observed() -> dict:
    """A real receipt with observed sections filled in (as an observer would)."""
    data = real_receipt(["sh", "-c", "echo observed"])
    data["process_tree"] = [
        {"pid": 100, "ppid": 1, "exe": "/usr/bin/python3", "argv": ["python3", "agent.py"]},
        {"pid": 101, "ppid": 100, "exe": "/usr/bin/curl", "argv": ["curl", "-s", "http://x/"]},
        {"pid": 102, "ppid": 100, "exe": "/bin/sh", "argv": ["sh", "-c", "rm -rf /tmp/w"]},
    ]
    data["filesystem"].update(
        reads=["/etc/passwd", "/home/u/.ssh/id_ed25519", "/work/in.txt"],
        writes=["/work/out.txt", "/etc/cron.d/evil"],
        deletes=["/tmp/w/a"],
        renames=[{"src": "/work/a", "dst": "/etc/b"}],
    )
    data["network"]["attempts"] = [
        {"dst": "127.0.0.1:8080", "protocol": "tcp", "result": "connected"},
        {"dst": "203.0.113.7:443", "protocol": "tcp", "result": "attempted"},
        {"dst": "[2001:db8::1]:53", "protocol": "udp", "result": "attempted"},
    ]
    data["syscalls"]["counts"] = {"clone": 250, "openat": 40, "ptrace": 1}
    data["syscalls"]["denied"] = ["ptrace"]
    data["resources"] = {"max_rss_kb": 300_000, "cpu_time_ms": 1200}
    data["observation"]["missing"] = {}
    data["outcome"].update(exit_code=3, signal=None, timed_out=False, error=None)
    Receipt.model_validate(seal_data(data))
    return data


GOLDEN_POLICY = """\
name: golden
rules:
  - id: curl-used
    match: {exec: {path: "**/curl"}}
  - id: shell-rm
    action: warn
    severity: low
    match: {exec: {argv: "sh -c *rm -rf*"}}
  - id: ssh-keys
    severity: critical
    match: {file: {path: ["**/.ssh/*"], op: read}}
  - id: etc-writes
    match: {file: {path: "/etc/**", op: [write, rename]}}
  - id: public-egress
    match:
      all:
        - network: {cidr: [0.0.0.0/0, "::/0"]}
        - not: {network: {cidr: 10.0.0.0/8}}
  - id: https
    match: {network: {port: 443, protocol: tcp}}
  - id: dns-v6
    match: {network: {cidr: "2001:db8::/32", port: "50-60", protocol: udp}}
  - id: fork-storm
    match: {syscall: {name: [clone, fork, vfork], over: 100}}
  - id: denied-ptrace
    match: {syscall: {name: ptrace, denied: true}}
  - id: big-rss
    match: {resources: {max_rss_kb: {over: 262144}}}
  - id: failed
    action: warn
    match: {outcome: {failed: true}}
  - id: never-timeout
    match: {outcome: {timed_out: true}}
  - id: quiet
    match: {any: [{exec: {path: /usr/bin/nc}}, {file: {path: /root/**}}]}
"""

GOLDEN_FIRED = {
    "big-rss": ["/resources/max_rss_kb"],
    "curl-used": ["/process_tree/1"],
    "denied-ptrace": ["/syscalls/denied/0"],
    "dns-v6": ["/network/attempts/2"],
    "etc-writes": ["/filesystem/renames/0", "/filesystem/writes/1"],
    "failed": ["/outcome/exit_code"],
    "fork-storm": ["/syscalls/counts/clone"],
    "https": ["/network/attempts/1"],
    "public-egress": ["", "/network/attempts/0", "/network/attempts/1", "/network/attempts/2"],
    "shell-rm": ["/process_tree/2"],
    "ssh-keys": ["/filesystem/reads/1"],
}


def test_golden_verdict() -> None:
    policy = parse_policy(GOLDEN_POLICY)
    verdict = evaluate(policy, _observed())
    got = {r.rule: [e.at for e in r.evidence] for r in verdict.fired}
    assert got == GOLDEN_FIRED
    assert not verdict.passed
    assert verdict.warnings == ["failed", "shell-rm"]
    assert "never-timeout" not in got and "quiet" not in got
    # the evidence is the receipt's own item
    https = next(r for r in verdict.fired if r.rule == "https")
    assert https.evidence[0].value == _observed()["network"]["attempts"][1]
    assert verdict.unobserved == ()


def test_verdict_goes_into_a_valid_receipt() -> None:
    policy = parse_policy(GOLDEN_POLICY)
    data = apply_verdict(_observed(), evaluate(policy, _observed()))
    rec = Receipt.model_validate(seal_data(data))
    assert rec.policy is not None and rec.policy.passed is False
    assert "ssh-keys: /home/u/.ssh/id_ed25519" in rec.filesystem.policy_violations
    assert "curl-used: /usr/bin/curl" in rec.filesystem.policy_violations
    assert not any(v.startswith("shell-rm") for v in rec.filesystem.policy_violations)  # warn


def test_passing_policy_and_unobserved_sections() -> None:
    policy = parse_policy("rules:\n  - id: no-net\n    match: {network: {cidr: 0.0.0.0/0}}\n")
    real = real_receipt(["true"])  # profiling disabled: network not observed
    verdict = evaluate(policy, real)
    assert verdict.passed and verdict.fired == ()
    assert verdict.unobserved == ("network",)
    assert evaluate(policy, _observed()).violations == ["no-net"]


def test_not_outcome_and_exit_codes() -> None:
    policy = parse_policy(
        "rules:\n"
        "  - id: ok\n    match: {outcome: {exit_code: [0]}}\n"
        "  - id: not-ok\n    match: {not: {outcome: {exit_code: 0}}}\n"
    )
    assert evaluate(policy, real_receipt(["true"])).violations == ["ok"]
    assert evaluate(policy, real_receipt(["false"])).violations == ["not-ok"]


ERRORS = [
    ("rules:\n  - id: a\n    match: {all: []}\n", 3, "empty 'all'"),
    ("rules:\n  - id: a\n    match: {any: []}\n", 3, "empty 'any'"),
    ("rules:\n  - id: a\n    match:\n      network: {port: 70000}\n", 4, "not a port"),
    ("rules:\n  - id: a\n    match:\n      network: {cidr: 10.0.0.0/33}\n", 4, "not a CIDR"),
    ("rules:\n  - id: a\n    match: {exec: {path: x}, file: {path: y}}\n", 3, "exactly one key"),
    ("rules:\n  - id: a\n    match: {proc: {}}\n", 3, "unknown key 'proc'"),
    ("rules:\n  - id: a\n    match: {file: {op: read}}\n", 3, "needs 'path'"),
    ("rules:\n  - id: a\n    match: {file: {path: '[abc'}}\n", 3, "unclosed"),
    (
        "rules:\n  - id: a\n    action: block\n    match: {outcome: {failed: true}}\n",
        3,
        "deny or warn",
    ),
    ("rules:\n  - id: a\n    match: {outcome: {exit_code: x}}\n", 3, "expected an integer"),
    (
        "rules:\n  - {id: a, match: {outcome: {failed: true}}}\n"
        "  - {id: a, match: {outcome: {failed: true}}}\n",
        3,
        "already used on line 2",
    ),
    (
        "rules:\n  - id: a\n    match: {outcome: {failed: true}}\n"
        "    match: {outcome: {failed: true}}\n",
        4,
        "duplicate key",
    ),
    ("rules: []\n", 1, "'rules' is empty"),
    ("name: x\n", 1, "needs 'rules'"),
    ("rules:\n  - id: a\n    match: {exec: {path: x}\n", 4, "not valid YAML"),
    ("", 1, "empty policy"),
    ("version: 2\nrules: []\n", 1, "version 1"),
    ("rules:\n  - match: {outcome: {failed: true}}\n", 2, "needs an 'id'"),
    ("rules:\n  - id: 'bad id!'\n    match: {outcome: {failed: true}}\n", 2, "rule id"),
    ("rules:\n  - id: a\n    match: {syscall: {denied: true, over: 3}}\n", 3, "cannot be used"),
    ("rules:\n  - id: a\n    match: {resources: {max_rss_kb: 5}}\n", 3, "expected a mapping"),
]


@pytest.mark.parametrize(("text", "line", "reason"), ERRORS)
def test_errors_name_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="p.yaml")
    err = info.value
    assert reason in err.reason, err.diagnostic()
    assert err.line == line, err.diagnostic()
    assert err.diagnostic().startswith(f"p.yaml:{line}: ")


def test_load_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(p)
    good = tmp_path / "mine.yaml"
    good.write_text("rules:\n  - {id: a, match: {outcome: {failed: true}}}\n")
    assert load_policy(good).name == "mine"


def test_alias_bomb_is_rejected() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]\n"
    with pytest.raises(PolicyError):
        parse_policy(bomb)


# -- properties ----------------------------------------------------------------------------

_RULE_BODIES = [
    "{exec: {path: '**/curl'}}",
    "{exec: {arg: '-s'}}",
    "{file: {path: '/etc/**', op: write}}",
    "{file: {path: '**'}}",
    "{network: {cidr: 0.0.0.0/0}}",
    "{network: {port: '400-500'}}",
    "{syscall: {name: clone, over: 10}}",
    "{resources: {cpu_time_ms: {over: 5}}}",
    "{outcome: {failed: true}}",
    "{not: {outcome: {timed_out: true}}}",
    "{any: [{exec: {path: /bin/sh}}, {file: {path: /nope}}]}",
    "{all: [{network: {protocol: udp}}, {not: {exec: {path: /x}}}]}",
    "{coverage: {complete: false}}",
    "{coverage: {reason: 'blind:*', status: [incomplete, unknown]}}",
]


def _policy_text(bodies: list[int], actions: list[str]) -> str:
    lines = ["rules:"]
    for i, (b, a) in enumerate(zip(bodies, actions, strict=False)):
        lines.append(f"  - {{id: r{i}, action: {a}, match: {_RULE_BODIES[b]}}}")
    return "\n".join(lines) + "\n"


_rules = st.lists(st.integers(0, len(_RULE_BODIES) - 1), min_size=1, max_size=8)
_actions = st.lists(st.sampled_from(["deny", "warn"]), min_size=8, max_size=8)


def _mutated(seed: int) -> dict:
    data = copy.deepcopy(_observed())
    if seed % 2:
        data["network"]["attempts"].reverse()
    if seed % 3 == 0:
        data["outcome"]["exit_code"] = 0
    if seed % 5 == 0:
        data["process_tree"] = data["process_tree"][:1]
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rules, _actions, st.integers(0, 30), st.randoms(use_true_random=False))
def test_same_input_same_verdict_and_order_irrelevant(bodies, actions, seed, rnd) -> None:
    receipt = _mutated(seed)
    text = _policy_text(bodies, actions)
    policy = parse_policy(text)
    first = evaluate(policy, receipt).to_dict()
    assert evaluate(parse_policy(text), copy.deepcopy(receipt)).to_dict() == first
    # the same rules in another order (ids travel with their rules)
    lines = text.splitlines()
    body = lines[1:]
    rnd.shuffle(body)
    shuffled = parse_policy("\n".join([lines[0], *body]) + "\n")
    assert shuffled.digest == policy.digest
    assert evaluate(shuffled, receipt).to_dict() == first
    # evaluation never changes the receipt
    assert receipt == _mutated(seed)


_KEYS = st.sampled_from(
    [
        "rules",
        "id",
        "match",
        "all",
        "any",
        "not",
        "exec",
        "file",
        "network",
        "path",
        "op",
        "cidr",
        "port",
        "protocol",
        "syscall",
        "name",
        "over",
        "outcome",
        "exit_code",
        "failed",
        "resources",
        "max_rss_kb",
        "action",
        "severity",
        "version",
        "coverage",
        "complete",
        "status",
        "reason",
        "denied",
        "kind",
        "x",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["0.0.0.0/0", "1-2", "[a", "**", "deny", "read"]),
)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_TREES.map(lambda t: yaml.safe_dump(t)), st.text(max_size=200)))
def test_malformed_policies_are_rejected_with_a_message(text: str) -> None:
    try:
        policy = parse_policy(text, source="fuzz.yaml")
    except PolicyError as exc:
        assert exc.reason and exc.diagnostic().startswith("fuzz.yaml")
        return
    evaluate(policy, _observed())  # whatever parsed must also evaluate


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TREES)
def test_wrapped_random_conditions_never_crash(tree) -> None:
    text = yaml.safe_dump({"rules": [{"id": "r", "match": tree}]})
    try:
        policy = parse_policy(text)
    except PolicyError as exc:
        assert exc.line is not None and exc.reason
        return
    evaluate(policy, _observed())


def test_docs_examples_parse() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "trust.md"
    if not docs.exists():
        pytest.skip("docs/trust.md not written yet")
    blocks = textwrap.dedent(docs.read_text()).split("```yaml\n")[1:]
    policies = [b.split("```")[0] for b in blocks if b.lstrip().startswith(("rules:", "name:"))]
    assert policies
    for text in policies:
        evaluate(parse_policy(text, source="docs/trust.md"), _observed())


def test_doctor_reports_trust_libraries() -> None:
    from glasshouse.doctor import run_checks

    checks = {c.name: c for c in run_checks()}
    assert checks["cryptography"].ok and checks["pyyaml"].ok


def _resolve(doc: object, pointer: str) -> object:
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]  # type: ignore[index]
    return doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rules, _actions, st.integers(0, 30))
def test_evidence_points_at_the_receipt_item(bodies, actions, seed) -> None:
    receipt = _mutated(seed)
    verdict = evaluate(parse_policy(_policy_text(bodies, actions)), receipt)
    for result in verdict.fired:
        for ev in result.evidence:
            if ev.at:
                assert _resolve(receipt, ev.at) == ev.value, (result.rule, ev)
            else:
                assert "absent" in ev.value


def test_deep_nesting_is_rejected_not_a_recursion_crash() -> None:
    with pytest.raises(PolicyError, match="nested too deeply"):
        parse_policy("[" * 5_000 + "]" * 5_000)
    deep = "{not: " * 200 + "{outcome: {failed: true}}" + "}" * 200
    with pytest.raises(PolicyError, match="nested deeper than 32"):
        parse_policy(f"rules:\n  - id: a\n    match: {deep}\n")


def test_syscall_total_sums_matching_names() -> None:
    each = parse_policy(
        "rules:\n  - {id: r, match: {syscall: {name: [clone, openat], over: 260}}}\n"
    )
    total = parse_policy(
        "rules:\n  - {id: r, match: {syscall: {name: [clone, openat], over: 260, total: true}}}\n"
    )
    assert evaluate(each, _observed()).fired == ()  # 250 and 40: neither is over 260
    (fired,) = evaluate(total, _observed()).fired  # together 290
    assert [e.at for e in fired.evidence] == ["/syscalls/counts/clone", "/syscalls/counts/openat"]
    assert each.digest != total.digest


def test_failed_file_attempts() -> None:
    data = copy.deepcopy(_observed())
    data["filesystem"]["failed"] = [
        {"op": "openat", "path": "/etc/shadow", "errno": "EACCES"},
        {"op": "renameat2", "path": "/work/a -> /etc/passwd", "errno": "EPERM"},
    ]
    Receipt.model_validate(seal_data(data))
    tried = parse_policy("rules:\n  - {id: r, match: {file: {path: /etc/*, op: failed}}}\n")
    (fired,) = evaluate(tried, data).fired
    assert [e.at for e in fired.evidence] == ["/filesystem/failed/0", "/filesystem/failed/1"]
    anything = parse_policy("rules:\n  - {id: r, match: {file: {path: /etc/shadow}}}\n")
    assert evaluate(anything, data).violations == ["r"]  # the default op includes attempts
    only_reads = parse_policy("rules:\n  - {id: r, match: {file: {path: /etc/shadow, op: read}}}\n")
    assert evaluate(only_reads, data).fired == ()


def test_a_capped_list_makes_its_section_unobserved() -> None:
    """A pass over a list the receipt cut at its cap is partial: what was left out could
    hold the match, so the section is reported as not (fully) observed."""
    policy = parse_policy("rules:\n  - id: no-etc\n    match: {file: {path: /etc/**, op: write}}\n")
    data = _observed()
    data["filesystem"]["writes"] = ["/work/out.txt"]
    data["observation"]["missing"] = {}
    assert evaluate(policy, data).unobserved == ()
    data["observation"]["omitted"] = {"filesystem.writes": 12}
    verdict = evaluate(policy, data)
    assert verdict.passed and verdict.unobserved == ("filesystem",)


def test_exec_path_matches_the_resolved_file_or_the_named_path() -> None:
    policy = parse_policy(
        "rules:\n  - id: no-sh\n    description: no shell\n    match: {exec: {path: /bin/sh}}\n"
    )
    named = {"process_tree": [{"pid": 1, "ppid": 0, "exe": "/usr/bin/dash", "argv": ["/bin/sh"]}]}
    bare = {"process_tree": [{"pid": 1, "ppid": 0, "exe": "/usr/bin/dash", "argv": ["sh"]}]}
    assert evaluate(policy, named).violations == ["no-sh"]
    assert evaluate(policy, bare).violations == []  # "sh" via PATH: the resolved file only
