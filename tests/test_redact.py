"""Redaction: default rules, configured rules, and the property that no default-pattern
secret survives into a receipt."""

from __future__ import annotations

import copy
import functools
import json
import shlex
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from trust_helpers import real_receipt

from glasshouse.receipt.canonical import seal_data
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.redact import (
    DEFAULT_RULES,
    RedactionConfigError,
    Redactor,
    load_rules,
    redact_receipt,
)

AWS = "AKIAIOSFODNN7EXAMPLE"
GH = "ghp_" + "Ab1" * 12


@functools.cache
def _template() -> dict:
    return real_receipt(["sh", "-c", "echo template"])


def _strings(value: object):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _receipt_with(argv: list[str], path: str, error: str) -> dict:
    data = copy.deepcopy(_template())
    data["process_tree"] = [
        {"pid": 10, "ppid": 1, "exe": "/usr/bin/tool", "argv": argv, "working_dir": path}
    ]
    data["processes"] = [{"pid": 10, "ppid": 1, "cmd": shlex.join(argv)}]
    data["filesystem"]["reads"] = [path]
    data["outcome"]["error"] = error
    return data


# -- golden cases ---------------------------------------------------------------------------

GOLDEN = [
    ("aws key " + AWS, "aws-access-key-id"),
    ("GITHUB_TOKEN=" + GH, "github-token"),
    ("glpat-abcdefghij0123456789", "gitlab-token"),
    ("xoxb-1234567890-abcdef", "slack-token"),
    ("sk_live_" + "a1B2" * 6, "stripe-key"),
    ("AIza" + "B" * 35, "google-api-key"),
    ("sk-proj-" + "x" * 30, "sk-api-key"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36P", "jwt"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA\n-----END OPENSSH PRIVATE KEY-----", None),
    ("git clone https://alice:pa55word@git.example/x.git", "url-credentials"),
    ("curl -H 'Authorization: Bearer abcdef123456'", "bearer"),
    ("mysql --password hunter2xyz -h db", "flag-value"),
    ("DB_PASSWORD=hunter2xyz ./serve", "assignment"),
]


@pytest.mark.parametrize(("text", "rule"), GOLDEN)
def test_default_rules_golden(text: str, rule: str | None) -> None:
    from collections import Counter

    counts: Counter[str] = Counter()
    out = Redactor(salt=b"fixed").redact_text(text, counts)
    assert "[REDACTED:" in out
    if rule:
        assert counts[rule] >= 1, counts
    for secret in (AWS, GH, "hunter2xyz", "pa55word", "abcdef123456", "b3BlbnNzaA"):
        assert secret not in out


def test_context_is_kept() -> None:
    r = Redactor(salt=b"s")
    assert r.redact_text("DB_PASSWORD=hunter2xyz ./serve").startswith("DB_PASSWORD=[REDACTED:")
    assert r.redact_text("author=me and the tokenizer") == "author=me and the tokenizer"
    assert r.redact_text("/usr/lib/python3/secrets.py") == "/usr/lib/python3/secrets.py"


def test_argv_flag_redacts_next_argument() -> None:
    from collections import Counter

    counts: Counter[str] = Counter()
    out = Redactor(salt=b"s").redact_argv(["psql", "--password", "x", "-v"], counts)
    assert out[:2] == ["psql", "--password"] and out[2].startswith("[REDACTED:")
    assert out[3] == "-v" and counts["argv-flag"] == 1


def test_real_receipt_is_redacted_and_stays_valid() -> None:
    data = real_receipt([f"/nonexistent/{AWS}/run", "--token", "t0k3n-value"])
    assert AWS in data["outcome"]["error"]
    out = redact_receipt(data, Redactor(salt=b"s"))
    assert AWS not in json.dumps(out)
    assert out["redaction"]["applied"] == [{"rule": "aws-access-key-id", "count": 1}]
    assert out["redaction"]["salt"] == "per-run" and out["redaction"]["salt_id"] is None
    Receipt.model_validate(seal_data(out))
    # the input is not modified, identifiers and hashes are untouched
    assert AWS in data["outcome"]["error"]
    assert out["artifacts"] == data["artifacts"]
    assert out["execution_id"] == data["execution_id"]


def test_salt_controls_linkability(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Redactor(), Redactor()
    assert a.marker("hunter2") != b.marker("hunter2")  # per-run salts differ
    monkeypatch.setenv("GLASSHOUSE_REDACT_SALT", "team salt")
    c, d = Redactor.from_env(), Redactor.from_env()
    assert c.marker("hunter2") == d.marker("hunter2")
    out = c.redact_receipt(_template())
    assert out["redaction"]["salt"] == "configured" and len(out["redaction"]["salt_id"]) == 16


def test_load_rules(tmp_path: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        "defaults: false\nsalt: abc\nrules:\n"
        "  - name: host\n    pattern: 'db[0-9]+\\.corp'\n"
        "  - name: ticket\n    pattern: 'ticket=(?P<secret>[A-Z0-9]+)'\n"
    )
    r = load_rules(cfg)
    assert [x.name for x in r.rules] == ["host", "ticket"] and r.salt_configured
    assert r.redact_text("db12.corp ticket=AB12") == (
        f"{r.marker('db12.corp')} ticket={r.marker('AB12')}"
    )
    assert r.redact_text(AWS) == AWS  # defaults off
    for text, message in [
        ("rules: [{pattern: '('}]", "bad pattern"),
        ("rules: [{pattern: 'a*'}]", "matches empty"),
        ("rules: [{name: x}]", "needs a 'pattern'"),
        ("colour: red", "unknown key"),
        ("- a", "expected a mapping"),
        ("rules: [{name: jwt, pattern: x}]", "defined twice"),
        ("a: [", "not YAML"),
    ]:
        cfg.write_text(text)
        with pytest.raises(RedactionConfigError, match=message):
            load_rules(cfg)


# -- the property ---------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
_UPPER_DIGITS = string.ascii_uppercase + string.digits
_B64URL = _ALNUM + "_-"


def _s(alphabet: str, n: int, m: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=n, max_size=m or n)


_TOKENS = {
    "aws": st.builds(lambda p, b: p + b, st.sampled_from(["AKIA", "ASIA"]), _s(_UPPER_DIGITS, 16)),
    "github": st.builds(lambda b: "ghp_" + b, _s(_ALNUM, 36, 50)),
    "github-pat": st.builds(lambda b: "github_pat_" + b, _s(_ALNUM + "_", 22, 40)),
    "gitlab": st.builds(lambda b: "glpat-" + b, _s(_B64URL, 20, 30)),
    "slack": st.builds(lambda b: "xoxb-" + b, _s(_ALNUM + "-", 10, 30)),
    "stripe": st.builds(lambda b: "sk_live_" + b, _s(_ALNUM, 16, 30)),
    "google": st.builds(lambda b: "AIza" + b, _s(_B64URL, 35)),
    "sk": st.builds(lambda b: "sk-ant-" + b, _s(_B64URL, 20, 40)),
    "jwt": st.builds(
        lambda a, b, c: f"eyJ{a}.eyJ{b}.{c}",
        _s(_B64URL, 8, 20),
        _s(_B64URL, 8, 20),
        _s(_B64URL, 8, 20),
    ),
    "pem": st.builds(
        lambda b: f"-----BEGIN RSA PRIVATE KEY-----\n{b}\n-----END RSA PRIVATE KEY-----",
        _s(_ALNUM + "+/", 16, 64),
    ),
}
#: passwords: at least one non-hex character so a digest can never contain one by chance
_PASSWORD = _s(_ALNUM + "!#%^*()+{}~", 12, 24).filter(
    lambda s: any(c not in "0123456789abcdef" for c in s)
)
_CONTEXT = st.text(alphabet=string.ascii_letters + string.digits + " ./:=-_", max_size=12)
_KEYWORDS = st.sampled_from(["password", "DB_PASSWORD", "api_key", "SECRET", "auth_token"])
_FLAGS = st.sampled_from(["--password", "--token", "--api-key", "-secret", "--client-secret"])


@st.composite
def _secret_case(draw: st.DrawFn) -> tuple[str, list[str], str, str]:
    """(secret, argv, path, error) with the secret in one or more places."""
    pre, post = draw(_CONTEXT), draw(_CONTEXT)
    form = draw(st.sampled_from(["token", "assign", "flag", "url"]))
    if form == "token":
        secret = draw(st.one_of(*_TOKENS.values()))
        carrier = pre + secret + post
        argv = ["tool", carrier]
    elif form == "assign":
        secret = draw(_PASSWORD)
        carrier = f"{pre} {draw(_KEYWORDS)}={secret}{post}"
        argv = ["env", carrier, "tool"]
    elif form == "flag":
        secret = draw(_PASSWORD)
        flag = draw(_FLAGS)
        carrier = f"{pre} {flag} {secret}"
        argv = ["tool", flag, secret, post]
    else:
        secret = draw(_PASSWORD.map(lambda s: s.replace("@", "")))
        carrier = f"{pre} https://user:{secret}@host.example/{post}"
        argv = ["git", "clone", carrier.strip()]
    assume(secret not in pre and secret not in post)  # the secret only where it is one
    where = draw(st.sets(st.sampled_from(["argv", "path", "error"]), min_size=1))
    path = f"/work/{carrier}/file" if "path" in where else "/work/file"
    error = f"failed: {carrier}" if "error" in where else "none"
    if "argv" not in where:
        argv = ["tool"]
    return secret, argv, path, error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_secret_case())
def test_no_default_pattern_secret_survives(case: tuple[str, list[str], str, str]) -> None:
    secret, argv, path, error = case
    data = _receipt_with(argv, path, error)
    assert any(secret in s for s in _strings(data))
    out = redact_receipt(data, Redactor(salt=b"property"))
    leaked = [s for s in _strings(out) if secret in s]
    assert not leaked, (secret, leaked)
    assert out["redaction"]["applied"]


def test_every_default_rule_has_a_golden_case() -> None:
    covered = {rule for _, rule in GOLDEN if rule} | {"private-key"}
    assert covered == {r.name for r in DEFAULT_RULES}


@pytest.mark.parametrize(
    "text",
    [
        "PASSWORD=hunter2xyz",
        "pa\u017f\u017fword=hunter2xyz",  # long s: re.IGNORECASE equates it with s
        "api_\u212aey=hunter2xyz",  # Kelvin sign ~ k
        "credent\u0131al=hunter2xyz",  # dotless i ~ i
    ],
)
def test_rule_hints_never_skip_what_the_pattern_matches(text: str) -> None:
    """Hints skip a rule only when its pattern cannot match: Unicode case folding included."""
    rule = next(r for r in DEFAULT_RULES if r.name == "assignment")
    assert rule.pattern.search(text), "the pattern itself matches"
    assert "hunter2xyz" not in Redactor(salt=b"s").redact_text(text)


def test_every_default_rule_has_hints_covering_its_matches() -> None:
    """The screen skips text with no hint: each default rule's golden secret must hit one."""
    assert all(r.hints for r in DEFAULT_RULES)
    for text, rule in GOLDEN:
        if rule:
            r = next(x for x in DEFAULT_RULES if x.name == rule)
            assert any(h in text.casefold() for h in r.hints), (rule, text)
