"""The ``/sessions`` routes: a thin HTTP layer over
:class:`~glasshouse.server._sessions.SessionManager`.

Bodies are read and parsed as ``/run``'s are (``glasshouse.server._requests``); blocking work
(opening a sandbox, a step, a transfer, closing) runs on the manager's threads. Each error
of the library and the manager has its status and stable code (:func:`session_error`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import JSONResponse, Response

from glasshouse.core.errors import (
    BackendError,
    FileTooLarge,
    NotAFile,
    PathNotFound,
    PathOutside,
    PathRefused,
    SessionBusy,
    SessionGone,
    SessionPaused,
    SpecError,
)
from glasshouse.server._events import STREAM_CONTENT, stream_answer, stream_mode
from glasshouse.server._limits import AboveCeiling, check_request, check_session
from glasshouse.server._requests import (
    ApiError,
    error_body,
    error_response,
    parse_request,
    read_body,
    run_error,
    tenant_of,
)
from glasshouse.server._runner import ReceiptWriteError, Rejected, Runner
from glasshouse.server._sessions import (
    SESSION_ID,
    Entry,
    NoSuchSession,
    SealFailed,
    SessionManager,
    SessionsUnavailable,
    SessionWasClosed,
    TooManySessions,
)
from glasshouse.server._stream import json_stream
from glasshouse.server.models import (
    ErrorResponse,
    FileEntry,
    FileList,
    SessionClosedResponse,
    SessionCreated,
    SessionInfo,
    SessionPage,
    SessionRequest,
    StepRequest,
    StepResponse,
)
from glasshouse.server.models import (
    SessionPaused as PausedAnswer,
)

SessionId = Annotated[
    str,
    FastAPIPath(
        description="A session id, sess-<unix ms>-<20 hex digits>.",
        json_schema_extra={"pattern": SESSION_ID.pattern},
    ),
]
FilePath = Annotated[str, FastAPIPath(description="A path relative to the session's workspace.")]
_T = TypeVar("_T")


_Responses = dict[int | str, dict[str, Any]]


def _e(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


_COMMON: _Responses = {
    400: _e("Malformed request or session id"),
    401: _e("Missing or wrong bearer token"),
    404: _e("No such session (or another tenant's)"),
    410: _e("The session was closed or expired (the message says why and its receipt)"),
    422: _e("Well-formed but invalid request"),
}
_BODY: _Responses = {413: _e("Body over the limit"), 415: _e("Not application/json")}
_STORE: _Responses = {
    500: _e("The receipt could not be stored"),
    503: _e("Shutting down, or the receipt store cannot write"),
}
_FILE: _Responses = {
    400: _e("Bad path (absolute, '..', NUL) or not a file"),
    403: _e("The path leads out of the workspace (a symlink)"),
    404: _e("No such session, or no such file"),
}
#: (exception type, status, code); first match wins.
_ERRORS: list[tuple[type[BaseException], int, str]] = [
    (NoSuchSession, 404, "not_found"),
    (SessionWasClosed, 410, "session_gone"),
    (SessionGone, 410, "session_gone"),
    (SessionBusy, 409, "session_busy"),
    (SessionPaused, 409, "session_paused"),
    (TooManySessions, 429, "too_many_sessions"),
    (SessionsUnavailable, 501, "sessions_unavailable"),
    (SealFailed, 500, "receipt_write_failed"),
    (PathRefused, 400, "invalid_path"),
    (NotAFile, 400, "not_a_file"),
    (PathOutside, 403, "path_outside"),
    (PathNotFound, 404, "file_not_found"),
    (FileTooLarge, 413, "file_too_large"),
    (AboveCeiling, 422, "above_ceiling"),
    (SpecError, 422, "invalid_request"),
    (BackendError, 500, "session_failed"),
]


def session_error(exc: BaseException, runner: Runner) -> ApiError:
    """The error answer for what a session operation raised."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Rejected | ReceiptWriteError):
        return run_error(exc, runner)
    for kind, status, code in _ERRORS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}")


def _json_body(model: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_session_routes(app: FastAPI, runner: Runner) -> None:
    """Add the ``/sessions`` routes over ``runner.sessions`` to ``app``, and the error
    answers for what they raise."""
    manager: SessionManager = runner.sessions
    config = runner.config

    async def answer_error(request: Request, exc: Exception) -> JSONResponse:
        error = session_error(exc, runner)
        return error_response(error.status, error.code, error.message, error.headers)

    for kind in {Rejected, ReceiptWriteError, *(kind for kind, _, _ in _ERRORS)}:
        app.add_exception_handler(kind, answer_error)

    async def blocking(fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(manager.executor, fn, *args)
        except RuntimeError as exc:  # the executor is shut down
            if "shutdown" in str(exc):
                raise runner.draining_error() from exc
            raise

    def find(request: Request, sid: str) -> Entry:
        if not SESSION_ID.fullmatch(sid):
            raise ApiError(
                400, "invalid_session_id", "session ids look like sess-<13 digits>-<20 hex digits>"
            )
        return manager.get(sid, tenant_of(request))

    @app.post(
        "/sessions",
        status_code=201,
        response_model=SessionCreated,
        summary="Open a session: a sandbox that lives across steps",
        responses={
            **_COMMON,
            **_BODY,
            **_STORE,
            429: _e("--max-sessions are open"),
            501: _e("This server's backend has no sessions"),
        },
        openapi_extra=_json_body("SessionRequest"),
    )
    async def open_session(request: Request) -> JSONResponse:
        body = await read_body(request, config.body_limit)
        wanted = parse_request(body, request.headers.get("content-type"), SessionRequest)
        check_session(wanted, config)
        entry = await blocking(manager.open, tenant_of(request).name, wanted)
        info = manager.info(entry)
        created = SessionCreated(**info.model_dump(include=set(SessionCreated.model_fields)))
        location = {"Location": f"/sessions/{entry.id}"}
        return JSONResponse(created.model_dump(mode="json"), status_code=201, headers=location)

    @app.get(
        "/sessions",
        response_model=SessionPage,
        summary="The open sessions (a tenant's own; every tenant's for admin)",
        responses={401: _COMMON[401]},
    )
    async def list_sessions(request: Request) -> SessionPage:
        entries = manager.visible(tenant_of(request))
        return SessionPage(sessions=await blocking(lambda: [manager.info(e) for e in entries]))

    @app.get(
        "/sessions/{session_id}",
        response_model=SessionInfo,
        summary="A session's state, steps, resources used and expiry",
        responses=_COMMON,
    )
    async def session_info(request: Request, session_id: SessionId) -> SessionInfo:
        entry = find(request, session_id)
        return await blocking(manager.info, entry)

    @app.delete(
        "/sessions/{session_id}",
        response_model=SessionClosedResponse,
        summary="Close a session and seal its session receipt",
        description="Waits for a step in flight to end (at most its timeout).",
        responses={**_COMMON, 500: _STORE[500]},
    )
    async def close_session(request: Request, session_id: SessionId) -> SessionClosedResponse:
        entry = find(request, session_id)
        receipt_id = await blocking(manager.close, entry, "closed")
        return SessionClosedResponse(receipt_id=receipt_id)

    @app.post(
        "/sessions/{session_id}/run",
        response_model=StepResponse,
        summary="Run a step: code in the session's interpreter, a command or a shell script",
        description="Streams as POST /run does with `Accept: text/event-stream` or "
        "`application/x-ndjson`.",
        responses={
            **_COMMON,
            **_BODY,
            **_STORE,
            200: {"description": "The step's answer, or its events", "content": STREAM_CONTENT},
            409: _e("A step is already running, or the session is paused"),
        },
        openapi_extra=_json_body("StepRequest"),
    )
    async def run_step(request: Request, session_id: SessionId) -> Response:
        entry = find(request, session_id)
        body = await read_body(request, config.body_limit)
        step = parse_request(body, request.headers.get("content-type"), StepRequest, program=True)
        check_request(step, config)
        mode = stream_mode(request.headers.get("accept"))
        if mode is not None:
            return await stream_answer(
                mode,
                config.output_limit,
                lambda channel: manager.submit_step(entry, step, channel),
                lambda exc: error_body(session_error(exc, runner)),
            )
        result = await asyncio.wrap_future(manager.submit_step(entry, step))
        return json_stream(result)

    @app.post(
        "/sessions/{session_id}/pause",
        response_model=PausedAnswer,
        summary="Free the session's CPU and memory, keep its state",
        description="The sandbox backend keeps the workspace; the interpreter's state and "
        "any process are lost (`kept` says so). Idempotent.",
        responses={**_COMMON, 409: _e("A step is running")},
    )
    async def pause_session(request: Request, session_id: SessionId) -> PausedAnswer:
        entry = find(request, session_id)
        kept = await blocking(manager.pause, entry)
        return PausedAnswer(state="paused", kept=kept)

    @app.post(
        "/sessions/{session_id}/resume",
        response_model=SessionInfo,
        summary="Resume a paused session (idempotent)",
        responses={**_COMMON, 409: _e("A step is running")},
    )
    async def resume_session(request: Request, session_id: SessionId) -> SessionInfo:
        entry = find(request, session_id)
        await blocking(manager.resume, entry)
        return await blocking(manager.info, entry)

    @app.put(
        "/sessions/{session_id}/files/{path:path}",
        response_model=FileEntry,
        summary="Upload a file into the workspace (the body's raw bytes)",
        responses={**_COMMON, **_FILE, 413: _e("Over --max-file-size, or the disk quota")},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            }
        },
    )
    async def put_file(request: Request, session_id: SessionId, path: FilePath) -> FileEntry:
        entry = find(request, session_id)
        data = await read_body(request, config.max_file_bytes, code="file_too_large")
        return await blocking(manager.write_file, entry, path, data)

    @app.get(
        "/sessions/{session_id}/files/{path:path}",
        summary="Download a workspace file (raw bytes)",
        response_class=Response,
        responses={
            **_COMMON,
            **_FILE,
            200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
            413: _e("Over --max-file-size"),
        },
    )
    async def get_file(request: Request, session_id: SessionId, path: FilePath) -> Response:
        entry = find(request, session_id)
        data = await blocking(manager.read_file, entry, path)
        return Response(data, media_type="application/octet-stream")

    @app.get(
        "/sessions/{session_id}/files",
        response_model=FileList,
        summary="List a workspace directory",
        responses={**_COMMON, **_FILE},
    )
    async def list_files(
        request: Request,
        session_id: SessionId,
        path: str = Query(".", max_length=4096, description="A directory of the workspace."),
    ) -> FileList:
        entry = find(request, session_id)
        entries = await blocking(manager.list_files, entry, path)
        return FileList(path=path, entries=entries)

    @app.delete(
        "/sessions/{session_id}/files/{path:path}",
        status_code=204,
        response_class=Response,
        summary="Delete a workspace file",
        responses={**_COMMON, **_FILE},
    )
    async def delete_file(request: Request, session_id: SessionId, path: FilePath) -> Response:
        entry = find(request, session_id)
        await blocking(manager.delete_file, entry, path)
        return Response(status_code=204)
