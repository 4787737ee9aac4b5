"""The MCP tools and the receipt resource, over one client's Glasshouse session.

Each tool is one decorated function: its docstring is the description a model reads, its
typed parameters the input schema, its result model (``glasshouse.mcp.models``) the output
schema. A result carries ``structuredContent`` (the model's data) and a text rendering. A
failure the model can act on (a bad path, a timeout, a limit, a busy session) is a tool
error (``isError``) with a clear message; the session's blocking calls run in worker
threads, never on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from glasshouse.core.errors import GlasshouseError
from glasshouse.mcp.effects import effects_of
from glasshouse.mcp.models import (
    FileContent,
    FileEntry,
    FileList,
    ReceiptResult,
    ResetResult,
    RunResult,
    SessionSummary,
    WriteResult,
)
from glasshouse.mcp.sessions import Client, Hub

#: How a tool finds the calling client's state.
Resolve = Callable[[Context], Awaitable[Client]]
T = TypeVar("T")

_RUNS = ToolAnnotations(destructive_hint=True, idempotent_hint=False, open_world_hint=False)
_READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITES = ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False)

Timeout = Annotated[
    float | None,
    Field(
        gt=0,
        description="Seconds before the run is killed (default: the server's; it has a maximum).",
    ),
]
WorkspacePath = Annotated[
    str,
    Field(
        min_length=1,
        description="A path relative to the session's workspace (the working directory of "
        "every run), e.g. 'src/main.py'. Absolute paths and '..' are refused.",
    ),
]


def register(server: MCPServer, hub: Hub, resolve: Resolve) -> None:
    """Add the eight tools and the receipt resource to ``server``."""
    options = hub.options
    cap = options.output_cap  # bytes of each stream kept (the digests cover them whole)

    async def blocking(client: Client, call: Callable[[Any], T]) -> T:
        """``call(session)`` in a worker thread; Glasshouse's errors become tool errors."""

        def work() -> T:
            try:
                return call(client.session)
            except GlasshouseError as exc:
                raise ToolError(_message(exc)) from exc

        return await anyio.to_thread.run_sync(work)

    def run_result(client: Client, result: Any, timeout: float) -> CallToolResult:
        client.record(result.receipt)
        session = client.session
        out = RunResult(
            exit_code=result.returncode,
            stdout=_cap(result.stdout, options.output_cap),
            stderr=_cap(result.stderr, options.output_cap),
            stdout_truncated=len(result.stdout) > options.output_cap
            or bool(result.execution.stdout.truncated),
            stderr_truncated=len(result.stderr) > options.output_cap
            or bool(result.execution.stderr.truncated),
            duration_ms=result.duration_ms,
            timed_out=result.timed_out,
            timeout_s=timeout,
            interpreter_restarted=bool(getattr(result, "interpreter_restarted", False)),
            error=result.error,
            step=int(result.step),
            session_id=str(session.id),
            receipt_id=str(result.receipt["execution_id"]),
            effects=effects_of(result.receipt),
        )
        # A non-zero exit is the program's answer; a timeout, a kill or Glasshouse's own
        # failure is this tool's error (the result and its receipt are still there).
        failed = out.timed_out or result.execution.signal is not None or out.error is not None
        return _result(out, is_error=failed)

    def step_options(seconds: float) -> dict[str, Any]:
        return {"timeout": seconds, "output_bytes": cap}

    def timeout_for(timeout: float | None) -> float:
        if timeout is None:
            return options.timeout_s
        if timeout > options.max_timeout_s:
            raise ToolError(
                f"timeout {timeout:g}s is above this server's maximum of {options.max_timeout_s:g}s"
            )
        return timeout

    @server.tool(annotations=_RUNS)
    async def run_python(
        ctx: Context,
        code: Annotated[str, Field(description="Python source to execute.")],
        timeout: Timeout = None,
    ) -> Annotated[CallToolResult, RunResult]:
        """Run Python code in this session's persistent interpreter, like a notebook cell:
        variables, imports and open files survive from one call to the next. The code runs
        isolated (sandbox, no network unless the server allows it) with the workspace as
        its working directory. Print what you want to see. The result has stdout, stderr,
        the exit code, timing, a receipt_id, and the observed effects: files written and
        deleted, network attempts, processes started and policy findings, as the operating
        system saw them. Check the effects when the code should not have touched something.
        A run that times out restarts the interpreter (its variables are lost)."""
        client = await resolve(ctx)
        seconds = timeout_for(timeout)
        result = await blocking(client, lambda s: s.run_code(code, **step_options(seconds)))
        return run_result(client, result, seconds)

    @server.tool(annotations=_RUNS)
    async def run_command(
        ctx: Context,
        command: Annotated[
            str | list[str],
            Field(
                description="A string runs with 'sh -c' (pipes, redirects, &&); a list of "
                "strings runs as an argv without a shell, e.g. ['ls', '-l']."
            ),
        ],
        timeout: Timeout = None,
    ) -> Annotated[CallToolResult, RunResult]:
        """Run a shell command or a program in this session's sandbox, in the workspace
        directory (the files you wrote are there). Processes it starts do not outlive it.
        The result has stdout, stderr, the exit code (non-zero is not an error of this
        tool: read stderr), timing, a receipt_id and the observed effects (files written
        and deleted, network attempts, processes started, policy findings)."""
        client = await resolve(ctx)
        seconds = timeout_for(timeout)
        if isinstance(command, str):
            if not command.strip():
                raise ToolError("command is empty")
            result = await blocking(client, lambda s: s.run_shell(command, **step_options(seconds)))
        else:
            if not command or not command[0]:
                raise ToolError("command is an empty argv: give at least the program name")
            argv = list(command)
            result = await blocking(client, lambda s: s.run_command(argv, **step_options(seconds)))
        return run_result(client, result, seconds)

    @server.tool(annotations=_WRITES)
    async def write_file(
        ctx: Context,
        path: WorkspacePath,
        content: Annotated[str, Field(description="The file's content.")],
        encoding: Annotated[
            Literal["utf-8", "base64"],
            Field(description="utf-8 (text, the default) or base64 (binary content)."),
        ] = "utf-8",
    ) -> Annotated[CallToolResult, WriteResult]:
        """Create or overwrite a file in the session's workspace (parent directories are
        created). Use it to put code or data in place before run_python or run_command."""
        client = await resolve(ctx)
        data = _decode(content, encoding)
        await blocking(client, lambda s: s.files.write(path, data))
        out = WriteResult(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        return _result(out)

    @server.tool(annotations=_READS)
    async def read_file(
        ctx: Context, path: WorkspacePath
    ) -> Annotated[CallToolResult, FileContent]:
        """Read a file from the session's workspace. Text comes back as is; a file that is
        not UTF-8 comes back base64-encoded with encoding 'base64'. Large files are cut at
        the server's cap (the result says so and gives the full size)."""
        client = await resolve(ctx)
        cap = options.read_cap
        data, size = await blocking(client, lambda s: _read_capped(s, path, cap))
        text, encoding = _as_text(data, cut=size > len(data))
        out = FileContent(
            path=path,
            encoding=encoding,  # type: ignore[arg-type]
            content=text,
            size=size,
            truncated=size > len(data),
            cap_bytes=cap,
        )
        return _result(out)

    @server.tool(annotations=_READS)
    async def list_files(
        ctx: Context,
        path: Annotated[
            str, Field(description="A directory relative to the workspace ('.' is its root).")
        ] = ".",
    ) -> Annotated[CallToolResult, FileList]:
        """List a directory of the session's workspace: name, type, size, modification time
        and sha256 of each entry."""
        client = await resolve(ctx)
        infos = await blocking(client, lambda s: s.files.list(path))
        entries = [
            FileEntry(
                name=i.name, path=i.path, type=i.type, size=i.size, mtime=i.mtime, sha256=i.sha256
            )
            for i in infos
        ]
        return _result(FileList(path=path, entries=entries))

    @server.tool(annotations=_READS)
    async def get_receipt(
        ctx: Context,
        receipt_id: Annotated[
            str,
            Field(description="A receipt_id from a run result, or a session receipt id."),
        ],
    ) -> Annotated[CallToolResult, ReceiptResult]:
        """Get the full execution receipt of one of your runs (or of a session you sealed):
        every process with its arguments, every file read, written and deleted, every
        network attempt, syscall counts, resources, and the digests that make it
        tamper-evident. Only this client's receipts can be read."""
        client = await resolve(ctx)
        receipt = await anyio.to_thread.run_sync(lambda: _own_receipt(hub, client, receipt_id))
        return _result(ReceiptResult(receipt_id=receipt_id, receipt=receipt))

    @server.tool(annotations=_READS)
    async def session_summary(ctx: Context) -> Annotated[CallToolResult, SessionSummary]:
        """What the operating system saw across this session so far: files written and
        deleted, network attempts, processes started and policy findings over all steps,
        with each step's receipt id."""
        client = await resolve(ctx)

        def summary(session: Any) -> SessionSummary:
            info = session.info()
            receipts, combined = client.summary_parts()
            return SessionSummary(
                session_id=str(info["id"]),
                backend=str(info["backend"]),
                isolation=str(info["isolation"]),
                state=str(info["state"]),
                steps=int(info["steps"]),
                created=str(info["created"]),
                receipt_ids=receipts,
                previous_sessions=[s.receipt_id for s in client.sealed],
                effects=effects_of(combined),
            )

        return _result(await blocking(client, summary))

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False))
    async def reset_session(ctx: Context) -> Annotated[CallToolResult, ResetResult]:
        """Seal the current session (its session receipt records every step and what the
        OS saw across them) and start a fresh one: empty workspace, new interpreter.
        Returns the sealed session's id, its session receipt id, and the new session id."""
        client = await resolve(ctx)

        def reset() -> ResetResult:
            try:
                sealed, session = client.reset()
            except GlasshouseError as exc:
                raise ToolError(_message(exc)) from exc
            return ResetResult(
                closed_session_id=None if sealed is None else sealed.session_id,
                session_receipt_id=None if sealed is None else sealed.receipt_id,
                new_session_id=str(session.id),
            )

        return _result(await anyio.to_thread.run_sync(reset))

    @server.resource(
        "glasshouse://receipts/{receipt_id}",
        name="receipt",
        description="An execution receipt of this client's runs or sealed sessions (JSON).",
        mime_type="application/json",
    )
    async def receipt_resource(receipt_id: str, ctx: Context) -> str:
        client = await resolve(ctx)
        try:
            receipt = await anyio.to_thread.run_sync(lambda: _own_receipt(hub, client, receipt_id))
        except ToolError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return json.dumps(receipt, ensure_ascii=False)


def _result(model: BaseModel, is_error: bool = False) -> CallToolResult:
    text = model.text()  # type: ignore[attr-defined]
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=model.model_dump(mode="json"),
        is_error=is_error,
    )


def _cap(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")


def _decode(content: str, encoding: str) -> bytes:
    if encoding == "utf-8":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except ValueError as exc:
        raise ToolError(f"content is not valid base64: {exc}") from exc


def _read_capped(session: Any, path: str, cap: int) -> tuple[bytes, int]:
    """(the first ``cap`` bytes, the file's full size). A file over ``cap`` is read whole
    (up to the workspace's own read limit, past which the error says so) and cut."""
    from glasshouse.core.errors import FileTooLarge

    try:
        data = session.files.read(path, max_bytes=cap)
        return data, len(data)
    except FileTooLarge:
        data = session.files.read(path)
        return data[:cap], len(data)


def _as_text(data: bytes, cut: bool) -> tuple[str, str]:
    """(content, encoding): UTF-8 text as is, anything else base64. A cut that fell inside
    a multi-byte character does not make a text file binary (the partial character goes)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8"), "utf-8"
        return base64.b64encode(data).decode("ascii"), "base64"


def _own_receipt(hub: Hub, client: Client, receipt_id: str) -> dict[str, Any]:
    if not client.owns(receipt_id):
        raise ToolError(
            f"{receipt_id} is not a receipt of this client: a client reads only the receipts "
            "of its own runs and sessions"
        )
    receipt = hub.read_receipt(receipt_id)
    if receipt is None:
        raise ToolError(f"receipt {receipt_id} is not in the store")
    return receipt


def _message(exc: GlasshouseError) -> str:
    """A Glasshouse error as a message for a model."""
    name = type(exc).__name__
    hints = {
        "SessionBusy": "another step of this session is still running: wait for its result",
        "SessionGone": "this session is closed",
    }
    text = str(exc) or name
    return f"{hints[name]} ({text})" if name in hints else text
