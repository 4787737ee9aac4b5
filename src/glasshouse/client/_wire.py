"""What both clients share: the server's errors, answers and streamed events.

Pure functions and data (no connection): the sync and the async Sandbox and the one-shot
Client build requests and read answers with these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from glasshouse.core.errors import GlasshouseError

SSE = "text/event-stream"
#: Extra seconds an HTTP call waits beyond a step's own timeout (setup, receipt).
SLACK_S = 30.0
_MAX_RETRY_WAIT_S = 30.0


class ServerError(GlasshouseError):
    """The server refused or failed a request. ``code`` is the server's stable error code
    (``session_busy``, ``file_not_found``...), ``status`` the HTTP status (0: no answer)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def error_of(response: httpx.Response) -> ServerError:
    """The :class:`ServerError` an error answer carries (read ``response`` first)."""
    retry_after = None
    if "retry-after" in response.headers:
        try:
            retry_after = float(response.headers["retry-after"])
        except ValueError:
            retry_after = None
    try:
        err = response.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:200] or response.reason_phrase
    return ServerError(response.status_code, code, message, retry_after)


def error_from_body(body: Any) -> ServerError:
    """The :class:`ServerError` of a streamed ``error`` event (the run failed after the 200)."""
    try:
        err = body["error"]
        return ServerError(200, str(err["code"]), str(err["message"]))
    except (KeyError, TypeError):
        return ServerError(200, "http_error", f"a malformed error event: {body!r}")


def retry_wait(error: ServerError) -> float:
    return min(_MAX_RETRY_WAIT_S, error.retry_after or 1.0)


@dataclass(frozen=True)
class RunResult:
    """One run's answer (``exit_code`` is shell-style: 124 timeout, 128+N signal, 125 error)."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    receipt_id: str
    timed_out: bool
    truncated: bool
    backend: str
    isolation: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class StepResult(RunResult):
    """A session step's answer: a run's, plus its number and whether the interpreter it ran
    in is a fresh one."""

    step: int = 0
    interpreter_restarted: bool = False


@dataclass(frozen=True)
class FileEntry:
    """A workspace entry (``type``: file, directory, symlink, other)."""

    name: str
    path: str
    type: str
    size: int
    mtime: float
    sha256: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileEntry:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def session_body(
    *,
    network: bool,
    memory: int | None,
    pids: int | None,
    disk: int | None,
    ttl_s: float | None,
    idle_timeout_s: float | None,
    env: Mapping[str, str] | None,
    files: Mapping[str, str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"network": network}
    limits = {k: v for k, v in (("memory", memory), ("pids", pids), ("disk", disk)) if v}
    if limits:
        body["limits"] = limits
    for name, value in (("ttl_s", ttl_s), ("idle_timeout_s", idle_timeout_s)):
        if value is not None:
            body[name] = value
    if env:
        body["env"] = dict(env)
    if files:
        body["files"] = dict(files)
    return body


def step_body(
    program: dict[str, Any],
    *,
    stdin: str | None,
    env: Mapping[str, str] | None,
    cwd: str | None,
    timeout: float | None,
) -> dict[str, Any]:
    body = dict(program)
    for name, value in (("stdin", stdin), ("cwd", cwd), ("timeout", timeout)):
        if value is not None:
            body[name] = value
    if env:
        body["env"] = dict(env)
    return body


def command_program(cmd: str | Sequence[str]) -> dict[str, Any]:
    """``commands.run``'s argument: a string is a shell script, a list an argv."""
    if isinstance(cmd, str):
        return {"shell": cmd}
    return {"command": list(cmd)}


class EventReader:
    """Server-Sent Events, a line at a time: :meth:`feed` returns a finished ``(event,
    data)`` when a blank line ends one, else None."""

    def __init__(self) -> None:
        self._kind: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, Any] | None:
        if line == "":
            kind, data = self._kind, self._data
            self._kind, self._data = None, []
            if kind is None:
                return None
            return kind, json.loads("\n".join(data))
        if line.startswith(":"):
            return None  # a comment
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        return None


def http_timeout(timeout: float | None) -> float:
    return (timeout if timeout is not None else 60.0) + SLACK_S
