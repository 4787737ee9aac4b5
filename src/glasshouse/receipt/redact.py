"""Secret redaction: replace tokens, keys and passwords in a receipt before it is sealed.

Every string in the receipt (argv, paths, command lines, errors, details...) is scanned with a
set of rules; each match becomes ``[REDACTED:<16 hex>]``, the hex being an HMAC-SHA256 of the
secret under a salt. With the default per-run random salt (never stored) the marker cannot be
used to confirm a guessed password; with a configured salt the same secret gets the same
marker across runs, so a leak can be traced without storing it. The receipt's ``redaction``
block lists the active rules and how many matches each replaced.

Rules are regular expressions; when a rule has a ``secret`` group only that group is replaced
(``password=hunter2`` keeps ``password=``). In an argv list, the element after a sensitive flag
(``--password``, ``--token``, ...) is replaced whole. Identifiers and digests (``execution_id``,
hashes, timestamps) are not scanned. Known limit: ``artifacts.command_hash`` is the hash of the
command as it ran, secrets included; a low-entropy secret can be brute-forced against it.

Pure Python and ``re`` only: it runs on the CLI's hot path without importing pydantic or yaml
(only :func:`load_rules` imports yaml).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glasshouse.core.errors import GlasshouseError

MARKER = re.compile(r"\[REDACTED:[0-9a-f]{16}\]")
#: Environment variable with a salt (any string) shared across runs.
SALT_ENV = "GLASSHOUSE_REDACT_SALT"

_NOT_MARKER = r"(?!\[REDACTED:)"
_SECRET_WORDS = (
    r"passw(?:or)?d|pass|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|private[-_]?key"
    r"|auth[-_]?token|authorization|credentials?|client[-_]?secret|session[-_]?key"
)
#: argv flags whose *next* argument is a secret.
SENSITIVE_FLAG = re.compile(
    rf"^--?(?:[A-Za-z0-9]{{1,32}}[-_]){{0,4}}(?:{_SECRET_WORDS})$", re.IGNORECASE
)
#: Receipt fields never scanned: identifiers, digests and timestamps.
_SKIP_KEYS = frozenset(
    {
        "execution_id",
        "timestamp",
        "started_at",
        "ended_at",
        "version",
        "digest",
        "previous_digest",
        "code_hash",
        "command_hash",
        "stdout_hash",
        "stderr_hash",
        "policy_digest",
        "redaction",
    }
)


class RedactionConfigError(GlasshouseError, ValueError):
    """A redaction rules file is malformed; the message names the rule and the reason."""


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    description: str = ""
    #: Lower-case substrings every match contains: a rule is skipped for text holding none
    #: (case-insensitive alternations are slow in ``re``; ``in`` is not).
    hints: tuple[str, ...] = ()

    def spans(self, text: str, lowered: str | None = None) -> list[tuple[int, int]]:
        if self.hints:
            lowered = _fold(text) if lowered is None else lowered
            if not any(h in lowered for h in self.hints):
                return []
        out = []
        for match in self.pattern.finditer(text):
            if "secret" in self.pattern.groupindex and match.group("secret") is not None:
                start, end = match.span("secret")
            else:
                start, end = match.span()
            if end > start:
                out.append((start, end))
        return out


def _rule(name: str, regex: str, description: str, hints: tuple[str, ...] = ()) -> Rule:
    return Rule(name, re.compile(regex), description, hints)


def _fold(text: str) -> str:
    """Case-folded so that whatever ``re.IGNORECASE`` matches, ``in`` finds: casefold maps
    the long s and the Kelvin sign; the dotless i, which ``re`` also equates to i, is added."""
    return text.casefold().replace("\u0131", "i")


#: Every alternative of _SECRET_WORDS contains one of these.
_WORD_HINTS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")


DEFAULT_RULES: tuple[Rule, ...] = (
    _rule(
        "private-key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|$)",
        "PEM/OpenSSH/PGP private key blocks",
        ("private key",),
    ),
    _rule(
        "aws-access-key-id",
        r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[0-9A-Z]{16}",
        "AWS key id",
        ("akia", "asia", "agpa", "aida", "aroa", "anpa", "aipa"),
    ),
    _rule(
        "github-token",
        r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
        "GitHub tokens",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _rule(
        "gitlab-token", r"glpat-[A-Za-z0-9_-]{20,}", "GitLab personal access tokens", ("glpat-",)
    ),
    _rule("slack-token", r"xox[abposr]-[A-Za-z0-9-]{10,}", "Slack tokens", ("xox",)),
    _rule(
        "stripe-key",
        r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
        "Stripe secret keys",
        ("_live_", "_test_"),
    ),
    _rule("google-api-key", r"AIza[0-9A-Za-z_-]{35}", "Google API keys", ("aiza",)),
    _rule("sk-api-key", r"sk-[A-Za-z0-9_-]{20,}", "OpenAI/Anthropic-style sk- keys", ("sk-",)),
    _rule(
        "jwt",
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        "JSON Web Tokens",
        ("eyj",),
    ),
    _rule(
        "url-credentials",
        r"://(?P<secret>[^/\s:@\[\]]*:[^/\s@\[\]]+)@",
        "user:password in URLs",
        ("://",),
    ),
    _rule(
        "bearer",
        rf"(?i:\b(?:bearer|basic)\s+){_NOT_MARKER}(?P<secret>[A-Za-z0-9._~+/=-]{{8,}})",
        "HTTP Authorization credentials",
        ("bearer", "basic"),
    ),
    _rule(
        "flag-value",
        rf"(?i:(?:^|\s)--?(?:[a-z0-9]{{1,32}}[-_]){{0,4}}(?:{_SECRET_WORDS})\s+){_NOT_MARKER}"
        r"(?P<secret>'[^']*'|\"[^\"]*\"|\S+)",
        "the value after --password/--token/... in a command line",
        _WORD_HINTS,
    ),
    _rule(
        "assignment",
        rf"(?i:(?:{_SECRET_WORDS})[A-Za-z0-9_.-]{{0,64}}[ \t]{{0,8}}[=:][ \t]{{0,8}})"
        rf"{_NOT_MARKER}(?!(?i:bearer|basic|token)\s)(?P<secret>[^\s&;,'\"]+)",
        "values of password=, TOKEN=, api_key: ... assignments",
        _WORD_HINTS,
    ),
)


@dataclass
class Redactor:
    """Applies rules with one salt. Use one Redactor per receipt (per-run salt)."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    salt_configured: bool = False
    argv_flags: bool = True
    _screen: re.Pattern[str] | bool | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def from_env(cls, rules: tuple[Rule, ...] = DEFAULT_RULES) -> Redactor:
        configured = os.environ.get(SALT_ENV)
        if configured:
            return cls(rules, configured.encode(), salt_configured=True)
        return cls(rules)

    def marker(self, secret: str) -> str:
        mac = hmac.new(self.salt, secret.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"[REDACTED:{mac.hexdigest()[:16]}]"

    def redact_text(self, text: str, counts: Counter[str] | None = None) -> str:
        """``text`` with every rule's matches replaced (rules apply in order)."""
        lowered: str | None = None
        if self._screen is None:
            self._screen = _screen(self.rules) or False
        screen = self._screen
        if isinstance(screen, re.Pattern):
            lowered = _fold(text)
            if screen.search(lowered) is None:
                return text  # the common case (paths, names): no rule can match
        for rule in self.rules:
            if rule.hints and lowered is None:
                lowered = _fold(text)
            spans = rule.spans(text, lowered)
            if not spans:
                continue
            lowered = None  # the text changes below
            if counts is not None:
                counts[rule.name] += len(spans)
            pieces, last = [], 0
            for start, end in spans:
                pieces += [text[last:start], self.marker(text[start:end])]
                last = end
            pieces.append(text[last:])
            text = "".join(pieces)
        return text

    def redact_argv(self, argv: list[str], counts: Counter[str]) -> list[str]:
        out: list[str] = []
        sensitive_next = False
        for arg in argv:
            if sensitive_next and isinstance(arg, str) and not MARKER.fullmatch(arg):
                counts["argv-flag"] += 1
                out.append(self.marker(arg))
                sensitive_next = False
                continue
            sensitive_next = (
                self.argv_flags and isinstance(arg, str) and bool(SENSITIVE_FLAG.match(arg))
            )
            out.append(self.redact_text(arg, counts) if isinstance(arg, str) else arg)
        return out

    def redact_receipt(self, data: dict[str, Any]) -> dict[str, Any]:
        """A redacted copy of receipt JSON data with its ``redaction`` block filled in.

        The copy is unsealed (``digest`` None): redaction happens before sealing and signing.
        """
        counts: Counter[str] = Counter()
        out: dict[str, Any] = self._walk(data, counts, None)
        names = [r.name for r in self.rules] + (["argv-flag"] if self.argv_flags else [])
        out["redaction"] = {
            "rules": names,
            "applied": [{"rule": n, "count": counts[n]} for n in names if counts[n]],
            "salt": "configured" if self.salt_configured else "per-run",
            "salt_id": hashlib.sha256(self.salt).hexdigest()[:16] if self.salt_configured else None,
        }
        out["digest"] = None
        return out

    def _walk(self, value: Any, counts: Counter[str], key: str | None) -> Any:
        if isinstance(value, str):
            return self.redact_text(value, counts)
        if isinstance(value, dict):
            return {k: v if k in _SKIP_KEYS else self._walk(v, counts, k) for k, v in value.items()}
        if isinstance(value, list):
            if key == "argv":
                return self.redact_argv(value, counts)
            return [self._walk(v, counts, None) for v in value]
        return value


@functools.lru_cache(maxsize=64)
def _screen(rules: tuple[Rule, ...]) -> re.Pattern[str] | None:
    """A literal alternation of every rule's hints, or None when a rule has none (a custom
    rule always runs)."""
    if not rules or any(not r.hints for r in rules):
        return None
    hints = sorted({h for r in rules for h in r.hints})
    return re.compile("|".join(re.escape(h) for h in hints))


def redact_receipt(data: dict[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    """Redact receipt JSON data with ``redactor`` (default rules and salt from the env)."""
    return (redactor or Redactor.from_env()).redact_receipt(data)


def receipt_hook(redactor: Redactor | None = None) -> Any:
    """``hook(receipt_data) -> receipt_data`` redacting each receipt with a fresh per-run salt
    (or the configured one), for the server's ``ServerConfig.receipt_hooks``."""

    def hook(data: dict[str, Any]) -> dict[str, Any]:
        if redactor is None:
            return Redactor.from_env().redact_receipt(data)
        if redactor.salt_configured:
            return redactor.redact_receipt(data)
        fresh = Redactor(redactor.rules, argv_flags=redactor.argv_flags)
        return fresh.redact_receipt(data)

    return hook


def load_rules(path: str | os.PathLike[str]) -> Redactor:
    """A Redactor from a YAML file::

    defaults: true            # keep the default rules (default: true)
    salt: "team-wide salt"    # optional; else $GLASSHOUSE_REDACT_SALT, else per run
    argv_flags: true          # redact the argument after --password & co (default: true)
    rules:
      - name: internal-host
        pattern: 'db[0-9]+\\.corp\\.example'
      - name: ticket-secret
        pattern: 'ticket=(?P<secret>[A-Z0-9]+)'   # only the 'secret' group is replaced
    """
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise RedactionConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RedactionConfigError(f"{path}: not YAML: {exc}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise RedactionConfigError(f"{path}: expected a mapping with 'rules'")
    unknown = set(doc) - {"defaults", "salt", "argv_flags", "rules"}
    if unknown:
        raise RedactionConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    rules: list[Rule] = list(DEFAULT_RULES) if doc.get("defaults", True) else []
    for i, item in enumerate(doc.get("rules") or []):
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str):
            raise RedactionConfigError(f"{path}: rules[{i}]: needs a 'pattern' string")
        name = str(item.get("name") or f"custom-{i}")
        try:
            pattern = re.compile(item["pattern"])
        except re.error as exc:
            raise RedactionConfigError(f"{path}: rule {name!r}: bad pattern: {exc}") from exc
        if pattern.match(""):
            raise RedactionConfigError(f"{path}: rule {name!r}: pattern matches empty text")
        if any(r.name == name for r in rules):
            raise RedactionConfigError(f"{path}: rule {name!r} is defined twice")
        rules.append(Rule(name, pattern, str(item.get("description", ""))))
    salt = doc.get("salt")
    base = Redactor.from_env(tuple(rules))
    if salt is not None:
        base = Redactor(tuple(rules), str(salt).encode(), salt_configured=True)
    base.argv_flags = bool(doc.get("argv_flags", True))
    return base
