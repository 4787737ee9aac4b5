"""The HTTP API's wire types (pydantic v2): what a client sends and what it gets back.

Requests are strict (no type coercion: ``"60"`` is not a timeout) and closed (unknown fields
are an error), so a typo in a field name fails loudly instead of being silently ignored.
These models are also the OpenAPI schema served at ``/openapi.json`` and ``/docs``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Bounds a request may ask for. The server's ceilings (``--max-memory``...) lower the upper
#: ones; a request above a ceiling gets 422 ``above_ceiling`` (``glasshouse.server._limits``).
TIMEOUT_MIN_S = 1
TIMEOUT_MAX_S = 300
MAX_FILES = 64
MAX_PIDS = 4096
MAX_MEMORY_BYTES = 16 << 30
MAX_OUTPUT_BYTES = 64 << 20
MAX_DISK_BYTES = 1 << 40
#: Longest argv string (``command`` item, ``shell``) in UTF-8 bytes: the kernel's
#: MAX_ARG_STRLEN (128 KiB) with its NUL.
MAX_ARG_BYTES = (128 << 10) - 1
MAX_ARGS = 1024
#: What a run is: exactly one of these fields (none: 422 ``missing_code``; several: 422
#: ``conflicting_fields``).
PROGRAM_FIELDS = ("code", "command", "shell")


def _utf8(value: str, what: str) -> str:
    """JSON may carry lone surrogates (``"\\ud800"``): they are not text and cannot be run."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text (lone surrogate)") from exc
    return value


#: The schema's statement of what the validators below enforce (no NUL, no lone
#: surrogates; a workspace path is relative, each segment non-empty and not starting with
#: "." so it is never "." or ".."). Documented for clients and the schema fuzzer.
_TEXT = "^[^\\ud800-\\udfff]*$"
_CODE = "^[^\\u0000\\ud800-\\udfff]*$"
_SEGMENT = "[^./\\u0000\\ud800-\\udfff][^/\\u0000\\ud800-\\udfff]*"
FILE_NAME = f"^{_SEGMENT}(/{_SEGMENT})*$"
_FILE_NAME_RE = re.compile(FILE_NAME)
#: (The per-argument byte cap is checked by ``_arg``, not stated as a maxLength: it counts
#: UTF-8 bytes, and the body limit bounds the whole request anyway.)
_Arg = Annotated[str, Field(json_schema_extra={"pattern": _CODE})]
_FileName = Annotated[str, Field(max_length=255, json_schema_extra={"pattern": FILE_NAME})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RunLimits(_Strict):
    """Per-run resource limits; omitted ones take the server's defaults, and none may be
    above the server's ceilings (``/health`` states them)."""

    memory: Annotated[int, Field(ge=1 << 20, le=MAX_MEMORY_BYTES)] | None = Field(
        default=None, description="Memory limit in bytes (at least 1 MiB)."
    )
    pids: Annotated[int, Field(ge=1, le=MAX_PIDS)] | None = Field(
        default=None, description="Maximum number of processes and threads."
    )
    output: Annotated[int, Field(ge=0, le=MAX_OUTPUT_BYTES)] | None = Field(
        default=None,
        description="Bytes kept per output stream; the receipt hashes the full stream.",
    )
    disk: Annotated[int, Field(ge=1 << 20, le=MAX_DISK_BYTES)] | None = Field(
        default=None, description="Disk quota of the run's workspace in bytes (at least 1 MiB)."
    )


def _program_schema(schema: dict[str, Any]) -> None:
    """The schema says what the validator enforces: exactly one program field, not null."""
    properties = schema["properties"]
    for name in PROGRAM_FIELDS:
        prop = properties[name]
        branch = next(b for b in prop.pop("anyOf") if b.get("type") != "null")
        prop.pop("default", None)
        properties[name] = {**branch, **prop}
    schema["oneOf"] = [{"required": [name]} for name in PROGRAM_FIELDS]


class RunRequest(_Strict):
    """Run one program in a fresh sandbox: ``code`` (``python3 -c``), ``command`` (an argv)
    or ``shell`` (``sh -c``); exactly one of the three."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_program_schema)

    code: str | None = Field(
        default=None,
        description="Python source, run as `python3 -c CODE` in the workspace.",
        json_schema_extra={"pattern": _CODE},
    )
    command: (
        Annotated[
            list[_Arg],
            Field(min_length=1, max_length=MAX_ARGS),
        ]
        | None
    ) = Field(
        default=None,
        description='An argv run as is in the workspace (`["ls", "-l"]`; looked up in PATH).',
    )
    shell: _Arg | None = Field(
        default=None, description="A shell script, run as `sh -c SHELL` in the workspace."
    )
    timeout: Annotated[float, Field(ge=TIMEOUT_MIN_S, le=TIMEOUT_MAX_S)] = Field(
        default=60,
        description="Wall-clock limit in seconds (1..300, and at most the server's ceiling; "
        "omitted: 60 or the ceiling if lower).",
    )
    stdin: Annotated[str, Field(json_schema_extra={"pattern": _TEXT})] | None = Field(
        default=None, description="Text fed to the program's stdin."
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_FILES,
        description="Workspace files to create first: relative path -> text content.",
        json_schema_extra={
            "propertyNames": {"pattern": FILE_NAME, "maxLength": 255},
            "additionalProperties": {"type": "string", "pattern": _TEXT},
        },
    )
    outputs: list[_FileName] = Field(
        default_factory=list,
        max_length=MAX_FILES,
        description="Workspace files to return after the run, base64 in the answer's "
        "`outputs` (relative paths like `files`; capped per file and in total, see /health).",
    )
    limits: RunLimits = Field(default_factory=RunLimits)
    network: bool = Field(default=False, description="Allow network access (off by default).")

    @field_validator("code")
    @classmethod
    def _code_ok(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\x00" in value:
            raise ValueError("code contains a NUL byte (Python source cannot)")
        return _utf8(value, "code")

    @field_validator("shell")
    @classmethod
    def _shell_ok(cls, value: str | None) -> str | None:
        return None if value is None else _arg(value, "shell")

    @field_validator("command")
    @classmethod
    def _command_ok(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [_arg(arg, f"command[{i}]") for i, arg in enumerate(value)]

    @field_validator("outputs")
    @classmethod
    def _outputs_ok(cls, value: list[str]) -> list[str]:
        for name in value:
            _path(name)
        if len(set(value)) != len(value):
            raise ValueError("outputs names a file twice")
        return value

    @model_validator(mode="after")
    def _one_program(self) -> RunRequest:
        given = self.program_fields()
        if len(given) != 1:
            raise ValueError(program_fields_message(given))
        return self

    def program_fields(self) -> list[str]:
        """Which of ``code``, ``command``, ``shell`` the request sets."""
        return [name for name in PROGRAM_FIELDS if getattr(self, name) is not None]

    @field_validator("stdin")
    @classmethod
    def _stdin_ok(cls, value: str | None) -> str | None:
        return None if value is None else _utf8(value, "stdin")

    @field_validator("files")
    @classmethod
    def _files_ok(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            _path(name)
            _utf8(content, f"files[{name!r}]")
        for name in value:
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in value:
                    raise ValueError(f"{'/'.join(parts[:i])!r} is both a file and a directory")
        return value


def program_fields_message(given: list[str]) -> str:
    """Why a request with ``given`` program fields (not exactly one) is refused."""
    if not given:
        return "the request has none of 'code', 'command', 'shell': give exactly one"
    return f"the request has {', '.join(repr(g) for g in given)}: give exactly one of them"


def _arg(value: str, what: str) -> str:
    """An argv string: text, no NUL, at most the kernel's limit for one argument."""
    _utf8(value, what)
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte (an argv string cannot)")
    if len(value.encode("utf-8")) > MAX_ARG_BYTES:
        raise ValueError(f"{what} is over the kernel's {MAX_ARG_BYTES} bytes per argument")
    return value


def _path(name: str) -> None:
    """A workspace path: relative, each part non-empty and not starting with '.'."""
    _utf8(name, "a file name")
    if len(name) > 255 or not _FILE_NAME_RE.match(name):
        raise ValueError(
            f"file name must be a relative path whose parts do not start with '.': {name!r}"
        )


class OutputFile(BaseModel):
    """A workspace file named in the request's ``outputs``."""

    content_b64: str | None = Field(
        description="The file's bytes, base64; null when not returned (see `error`)."
    )
    size: int | None = Field(description="Bytes in the file; null if it was not copied back.")
    sha256: str | None = Field(description="Hex sha256 of the file; null if not copied back.")
    error: str | None = Field(
        default=None,
        description="Why the content is not here: not copied back (missing, a symlink, not a "
        "regular file...) or over the per-file or total cap.",
    )


class RunResponse(BaseModel):
    """What happened. ``exit_code`` is shell-style: the program's own code, 124 on timeout,
    128+N when killed by signal N, 125 when Glasshouse itself failed (see ``error``)."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    receipt_id: str
    timed_out: bool
    truncated: bool = Field(description="True when stdout or stderr was cut at the limit.")
    backend: str
    isolation: str
    error: str | None = Field(default=None, description="Why the run failed, if it did.")
    outputs: dict[str, OutputFile] = Field(
        default_factory=dict, description="The requested `outputs`, by path."
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `invalid_request`.")
    message: str


class ErrorResponse(BaseModel):
    """Every error, 4xx and 5xx alike, has this shape."""

    error: ErrorDetail


class BackendChoice(BaseModel):
    requested: str = Field(description="`--backend` as given (`auto` or a backend name).")
    backend: str = Field(description="The backend that serves runs.")
    reason: str = Field(description="Why: the flag, or what `auto` measured and decided.")
    figures: dict[str, float | int | bool | str | None] | None = Field(
        default=None,
        description="`auto`'s workload check: ms to touch `touch_mib` MiB of fresh memory "
        "in the sandbox (`sandbox_ms`) and in a microVM (`vm_ms`, None if it timed out after "
        "`vm_timeout_s` or failed), and `measured_at`; None when not measured.",
    )


class Health(BaseModel):
    status: str = Field(
        description="`ok`; `draining` during shutdown; `receipt_store_unavailable` while "
        "the receipt store cannot write (runs are refused with 503)."
    )
    version: str
    backend: str
    backend_choice: BackendChoice = Field(
        description="Which backend `--backend` resolved to and why (with `auto`'s figures)."
    )
    isolation: str
    sandboxed: bool = Field(description="False when running with --allow-unsandboxed.")
    warning: str | None = None
    capabilities: dict[str, bool | int | float | str]
    running: int
    queued: int
    sessions_open: int = Field(default=0, description="Sessions open (running or paused).")
    max_concurrency: int
    queue_limit: int
    pool: dict[str, int | str]
    receipt_store: dict[str, bool | int | str | None] = Field(
        default_factory=dict,
        description="`writable`, `free_bytes` and `error` (why appends fail) of the "
        "receipts directory.",
    )


class PublicKey(BaseModel):
    """The key that verifies this server's DSSE envelopes (``glasshouse verify --key``)."""

    keyid: str = Field(description="The envelopes' `keyid`: hex sha256 of the raw public key.")
    algorithm: str = Field(description="`ed25519`.")
    public_key: str = Field(description="The public key, SubjectPublicKeyInfo PEM.")


class ReceiptSummary(BaseModel):
    id: str
    sequence: int | None
    timestamp: str
    exit_code: int | None
    timed_out: bool
    error: str | None
    duration_ms: int
    backend: str
    isolation: str
    code_hash: str | None
    digest: str | None


class ReceiptPage(BaseModel):
    receipts: list[ReceiptSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null on the last page."
    )


# -- sessions ---------------------------------------------------------------------------------
#: Bounds of a session's life a request may ask for (the server's flags lower them).
SESSION_TTL_MAX_S = 7 * 24 * 3600
#: The least a session can start with (the sandbox's step agent and interpreter need these:
#: with 2 processes or 8 MiB the agent does not come up).
SESSION_MIN_MEMORY = 32 << 20
SESSION_MIN_PIDS = 3
_ENV_NAME = "^[^=\\u0000\\ud800-\\udfff]+$"


def _env_ok(value: dict[str, str] | None) -> dict[str, str] | None:
    """Environment variables: text, a name without '=' or NUL, a value without NUL."""
    for name, content in (value or {}).items():
        _utf8(name, "an environment variable name")
        _utf8(content, f"env[{name!r}]")
        if not name or "=" in name or "\x00" in name or "\x00" in content:
            raise ValueError(f"env: {name!r} is not a valid variable (no '=', no NUL)")
    return value


_EnvMap = Annotated[
    dict[str, str],
    Field(
        max_length=256,
        json_schema_extra={
            "propertyNames": {"pattern": _ENV_NAME},
            "additionalProperties": {"type": "string", "pattern": _CODE},
        },
    ),
]


class SessionLimits(_Strict):
    """The whole session's resources (every step together); omitted ones take the server's
    defaults, none may be above its ceilings."""

    memory: Annotated[int, Field(ge=SESSION_MIN_MEMORY, le=MAX_MEMORY_BYTES)] | None = Field(
        default=None,
        description="Memory limit of the session's cgroup in bytes (>= 32 MiB: its step "
        "agent and interpreter alone use ~12 MiB).",
    )
    pids: Annotated[int, Field(ge=SESSION_MIN_PIDS, le=MAX_PIDS)] | None = Field(
        default=None,
        description="Processes and threads the session may have at once (>= 3: its step "
        "agent, its interpreter and one step's process).",
    )
    disk: Annotated[int, Field(ge=1 << 20, le=MAX_DISK_BYTES)] | None = Field(
        default=None, description="Disk quota of the session's workspace in bytes (>= 1 MiB)."
    )


class SessionRequest(_Strict):
    """Open a session: a sandbox that lives across steps."""

    network: bool = Field(default=False, description="Allow network access (off by default).")
    limits: SessionLimits = Field(default_factory=SessionLimits)
    ttl_s: Annotated[float, Field(gt=0, le=SESSION_TTL_MAX_S)] | None = Field(
        default=None,
        description="Seconds the session may live at most (default and ceiling: the server's "
        "--session-ttl / --max-session-ttl); then it is closed, reason `ttl`.",
    )
    idle_timeout_s: Annotated[float, Field(gt=0, le=SESSION_TTL_MAX_S)] | None = Field(
        default=None,
        description="Seconds without a step, a file transfer or a resume after which the "
        "session is closed, reason `idle` (default: --session-idle-timeout; at most ttl_s).",
    )
    env: _EnvMap = Field(
        default_factory=dict, description="Base environment of every step (added to PATH...)."
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_FILES,
        description="Workspace files to create first: relative path -> text (binary: PUT "
        "/sessions/{id}/files/{path}).",
        json_schema_extra={
            "propertyNames": {"pattern": FILE_NAME, "maxLength": 255},
            "additionalProperties": {"type": "string", "pattern": _TEXT},
        },
    )

    @field_validator("env")
    @classmethod
    def _env_ok(cls, value: dict[str, str]) -> dict[str, str]:
        return _env_ok(value) or {}

    @field_validator("files")
    @classmethod
    def _files_ok(cls, value: dict[str, str]) -> dict[str, str]:
        return RunRequest._files_ok(value)


class StepRequest(_Strict):
    """One step in a session: ``code`` (Python, in the session's persistent interpreter),
    ``command`` (an argv) or ``shell`` (``sh -c``); exactly one of the three."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_program_schema)

    code: str | None = Field(
        default=None,
        description="Python source run in the session's persistent interpreter: variables, "
        "imports and open files survive between steps, as in a notebook.",
        json_schema_extra={"pattern": _CODE},
    )
    command: Annotated[list[_Arg], Field(min_length=1, max_length=MAX_ARGS)] | None = Field(
        default=None, description="An argv run as a new process in the session's sandbox."
    )
    shell: _Arg | None = Field(default=None, description="A shell script, run as `sh -c SHELL`.")
    stdin: Annotated[str, Field(json_schema_extra={"pattern": _TEXT})] | None = Field(
        default=None, description="Text fed to the step's stdin."
    )
    env: _EnvMap | None = Field(
        default=None, description="Variables added to the session's environment for this step."
    )
    cwd: _FileName | None = Field(
        default=None, description="Working directory, relative to the workspace."
    )
    timeout: Annotated[float, Field(ge=TIMEOUT_MIN_S, le=TIMEOUT_MAX_S)] = Field(
        default=60,
        description="Wall-clock limit of the step in seconds (1..300, at most the server's "
        "ceiling). A step that times out is killed with what it started (for `code`: the "
        "interpreter is restarted), never the session.",
    )

    # the same checks as RunRequest's fields of the same names
    @field_validator("code")
    @classmethod
    def _code_ok(cls, value: str | None) -> str | None:
        return RunRequest._code_ok(value)

    @field_validator("shell")
    @classmethod
    def _shell_ok(cls, value: str | None) -> str | None:
        return RunRequest._shell_ok(value)

    @field_validator("command")
    @classmethod
    def _command_ok(cls, value: list[str] | None) -> list[str] | None:
        return RunRequest._command_ok(value)

    @field_validator("stdin")
    @classmethod
    def _stdin_ok(cls, value: str | None) -> str | None:
        return RunRequest._stdin_ok(value)

    @field_validator("env")
    @classmethod
    def _env_ok(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _env_ok(value)

    @field_validator("cwd")
    @classmethod
    def _cwd_ok(cls, value: str | None) -> str | None:
        if value is not None:
            _path(value)
        return value

    @model_validator(mode="after")
    def _one_program(self) -> StepRequest:
        given = self.program_fields()
        if len(given) != 1:
            raise ValueError(program_fields_message(given))
        return self

    def program_fields(self) -> list[str]:
        return [name for name in PROGRAM_FIELDS if getattr(self, name) is not None]


class SessionCreated(BaseModel):
    id: str = Field(description="sess-<unix ms>-<20 hex digits> (80 random bits).")
    backend: str
    isolation: str
    created: str = Field(description="RFC 3339, UTC.")
    expires_at: str = Field(description="When the ttl closes it (RFC 3339, UTC).")


class SessionUsage(BaseModel):
    memory_bytes: int | None = None
    cpu_ms: int | None = None
    pids: int | None = None


class SessionInfo(SessionCreated):
    state: str = Field(description="`running` or `paused`.")
    steps: int = Field(description="Steps run so far.")
    last_active: str = Field(description="The last step, transfer or resume (RFC 3339).")
    idle_timeout_s: float
    idle_expires_at: str = Field(description="When it is closed if nothing happens before.")
    busy: bool = Field(description="A step is running now.")
    usage: SessionUsage = Field(description="What the session uses now (empty when paused).")


class SessionPage(BaseModel):
    sessions: list[SessionInfo]


class StepResponse(RunResponse):
    """A step's answer: as /run's, plus its number and whether the interpreter was new."""

    step: int = Field(description="The step's number in the session, from 1.")
    interpreter_restarted: bool = Field(
        description="The interpreter was restarted during this step (it timed out or "
        "crashed): variables and imports from before are gone."
    )


class SessionClosedResponse(BaseModel):
    receipt_id: str = Field(description="The session receipt (GET /receipts/{id}).")


class SessionPaused(BaseModel):
    state: str
    kept: str = Field(description="What the paused session keeps.")


class FileEntry(BaseModel):
    name: str
    path: str = Field(description="Relative to the workspace.")
    type: str = Field(description="`file`, `directory`, `symlink` or `other`.")
    size: int
    mtime: float
    sha256: str | None = Field(description="Regular files only.")


class FileList(BaseModel):
    path: str
    entries: list[FileEntry]
