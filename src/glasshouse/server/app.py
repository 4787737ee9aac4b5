"""The HTTP layer: FastAPI routes over :class:`~glasshouse.server._runner.Runner`.

Every error, whatever raised it (routing, validation, our own checks), leaves as a JSON body
``{"error": {"code": ..., "message": ...}}``. The ``/run`` body is read and parsed here,
not by FastAPI, so each way a body can be wrong (too large, not UTF-8, not JSON, not the
schema) gets its own status and code; the OpenAPI document still describes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from glasshouse.core.version import RECEIPT_VERSION, __version__
from glasshouse.receipt.log import RECEIPT_ID
from glasshouse.server._events import STREAM_CONTENT, stream_answer, stream_mode
from glasshouse.server._limits import AboveCeiling, check_request, limits_for
from glasshouse.server._metrics import CONTENT_TYPE
from glasshouse.server._requests import (
    ApiError,
    BearerAuth,
    error_body,
    error_response,
    parse_request,
    read_body,
    run_error,
    tenant_of,
    validation_message,
)
from glasshouse.server._runner import ReceiptWriteError, Rejected, Runner
from glasshouse.server._session_routes import add_session_routes
from glasshouse.server._stream import json_stream
from glasshouse.server._tenancy import TokenTable
from glasshouse.server.models import (
    ErrorResponse,
    Health,
    PublicKey,
    ReceiptPage,
    ReceiptSummary,
    RunRequest,
    RunResponse,
    SessionRequest,
    StepRequest,
)

#: The ``{receipt_id}`` path parameter of the receipt routes (checked by _check_receipt_id).
ReceiptId = Annotated[
    str,
    FastAPIPath(
        description="A receipt id, exec-<unix ms>-<20 hex digits>.",
        json_schema_extra={"pattern": RECEIPT_ID.pattern},
    ),
]

_CURSOR = re.compile(r"^-?[0-9]{1,18}$")  # fits SQLite's 64-bit integers
_ERRORS = {
    400: {"model": ErrorResponse, "description": "Malformed request"},
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token"},
    405: {"model": ErrorResponse, "description": "Method not allowed"},
    422: {"model": ErrorResponse, "description": "Well-formed but invalid request"},
}


_STREAMING_DOC = (
    "With `Accept: text/event-stream` the answer is Server-Sent Events: `stdout` and "
    "`stderr` (data: a JSON string of the chunk, as it happens), then one `result` (data: "
    "exactly the JSON answer, sent after the receipt is stored) or one `error` (data: the "
    "error body) for a failure after the 200. With `Accept: application/x-ndjson`, the same "
    'as one JSON object per line: `{"type": "stdout", "data": "..."}`.'
)


def parse_run_request(body: bytes, content_type: str | None) -> RunRequest:
    """Bytes -> RunRequest, or the ApiError saying exactly what is wrong."""
    return parse_request(body, content_type, RunRequest, program=True)


def create_app(runner: Runner, *, manage_runner: bool = True) -> FastAPI:
    """The ASGI app serving ``runner``. With ``manage_runner`` the app's lifespan starts the
    runner and closes it at shutdown; without, the caller does (a harness that enters the
    lifespan once per request)."""
    config = runner.config

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not manage_runner:
            yield
            return
        runner.start()
        try:
            async with mcp_running():  # the MCP connections (closing seals their sessions)
                yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, runner.close)

    app = FastAPI(
        title="Glasshouse server",
        version=__version__,
        description=(
            "Run untrusted Python in a fresh sandbox per request, or in a session that lives "
            "across steps; every run and step leaves a tamper-evident execution receipt "
            f"({RECEIPT_VERSION})."
        ),
        lifespan=lifespan,
    )
    app.state.runner = runner

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            headers["Allow"] = ", ".join(_allowed(app, request))
        return error_response(exc.status_code, code, message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.post(
        "/run",
        response_model=RunResponse,
        summary="Run Python code, a command or a shell script in a fresh sandbox",
        description=_STREAMING_DOC,
        responses={
            **_ERRORS,
            200: {"description": "The run's answer, or its events", "content": STREAM_CONTENT},
            413: {"model": ErrorResponse, "description": "Body over the limit"},
            415: {"model": ErrorResponse, "description": "Not application/json"},
            429: {"model": ErrorResponse, "description": "Queue full; see Retry-After"},
            500: {"model": ErrorResponse, "description": "The receipt could not be stored"},
            503: {
                "model": ErrorResponse,
                "description": "Shutting down, or the receipt store cannot write",
            },
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/RunRequest"}}
                },
            }
        },
    )
    async def run(request: Request) -> Response:
        body = await read_body(request, config.body_limit)
        run_request = parse_run_request(body, request.headers.get("content-type"))
        try:
            check_request(run_request, config)
        except AboveCeiling as exc:
            raise ApiError(422, "above_ceiling", str(exc)) from exc
        mode = stream_mode(request.headers.get("accept"))
        owner = tenant_of(request).name
        try:
            if mode is not None:
                return await stream_answer(
                    mode,
                    limits_for(run_request, config).output_bytes,
                    lambda channel: runner.submit(run_request, channel, owner),
                    lambda exc: error_body(run_error(exc, runner)),
                )
            result = await asyncio.wrap_future(runner.submit(run_request, None, owner))
        except (Rejected, ReceiptWriteError) as exc:
            raise run_error(exc, runner) from exc
        return json_stream(result)  # encoded in pieces, off the event loop

    @app.get("/health", response_model=Health, summary="Status, backend and capabilities")
    async def health() -> dict[str, Any]:
        # async and lock-light: answers at once even with every worker busy.
        return runner.health()

    @app.get(
        "/receipts/{receipt_id}",
        summary=f"A stored receipt ({RECEIPT_VERSION} or older; code_hash, sequence, digest)",
        responses={
            **_ERRORS,
            200: {"description": "The receipt, as stored (canonical JSON)"},
            404: {"model": ErrorResponse, "description": "No such receipt"},
        },
    )
    def receipt(receipt_id: ReceiptId, request: Request) -> Response:
        _check_receipt_id(receipt_id)
        _check_visible(receipt_id, request, runner)
        data = runner.receipt_bytes(receipt_id)
        if data is None:
            raise ApiError(404, "not_found", f"no receipt {receipt_id}")
        return Response(data, media_type="application/json")

    @app.get(
        "/receipts/{receipt_id}/envelope",
        summary="A stored receipt's signed DSSE envelope (servers with --signing-key)",
        responses={
            **_ERRORS,
            200: {"description": "The DSSE envelope, as stored"},
            404: {"model": ErrorResponse, "description": "Not signing, or no such envelope"},
        },
    )
    def envelope(receipt_id: ReceiptId, request: Request) -> Response:
        _check_receipt_id(receipt_id)
        if runner.config.signing_key is None:
            raise ApiError(404, "not_signing", "this server does not sign receipts")
        _check_visible(receipt_id, request, runner)
        data = runner.envelope_bytes(receipt_id)
        if data is None:
            raise ApiError(404, "not_found", f"no envelope for {receipt_id}")
        return Response(data, media_type="application/json")

    @app.get(
        "/keys",
        response_model=PublicKey,
        summary="The public key that verifies this server's receipt envelopes",
        responses={
            **_ERRORS,
            404: {"model": ErrorResponse, "description": "This server does not sign"},
        },
    )
    def keys() -> dict[str, str]:
        key = runner.public_key()
        if key is None:
            raise ApiError(404, "not_signing", "this server does not sign receipts")
        return key

    @app.get(
        "/receipts",
        response_model=ReceiptPage,
        summary="Stored receipts, newest first (a tenant's own; every tenant's for admin)",
        responses={**_ERRORS},
    )
    def receipts(
        request: Request,
        limit: int = Query(50, ge=1, le=1000, description="Page size (1..1000)."),
        cursor: str | None = Query(
            None,
            max_length=19,
            description="next_cursor of a page.",
            json_schema_extra={"pattern": _CURSOR.pattern},
        ),
    ) -> dict[str, Any]:
        before = None
        if cursor is not None:
            if not _CURSOR.match(cursor):
                raise ApiError(400, "invalid_cursor", "cursor must be a next_cursor value")
            before = int(cursor)
        tenant = tenant_of(request)
        rows, nxt = runner.index.page(limit, before, tenant.name, everyone=tenant.admin)
        return {
            "receipts": [ReceiptSummary(**row).model_dump() for row in rows],
            "next_cursor": None if nxt is None else str(nxt),
        }

    @app.get(
        "/metrics",
        summary="Prometheus metrics (every tenant's: admin only)",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {CONTENT_TYPE.split(";")[0]: {}}},
            401: _ERRORS[401],
            403: {"model": ErrorResponse, "description": "Not an admin token"},
        },
    )
    def metrics(request: Request) -> Response:
        if not tenant_of(request).admin:
            raise ApiError(403, "forbidden", "the metrics count every tenant's runs: admin only")
        return Response(runner.metrics.render(runner.gauges()), media_type=CONTENT_TYPE)

    add_session_routes(app, runner)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (RunRequest, SessionRequest, StepRequest):  # bodies read by hand
                request_schema = model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
                components.update(request_schema.pop("$defs", {}))
                components[model.__name__] = request_schema
            if config.tokens:
                schema["components"]["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    mcp_running = _mount_mcp(app, runner)
    if config.tokens:
        app.add_middleware(BearerAuth, tokens=TokenTable(config.tokens))
    return app


def _mount_mcp(app: FastAPI, runner: Runner) -> Any:
    """The MCP tools at /mcp (behind the bearer-token check like every data route); the
    returned context manager runs their connections inside the app's lifespan."""
    from glasshouse.mcp.http import mount

    return mount(app, runner)


def _allowed(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette names only the first route
    matching the path, and /sessions has two: GET and POST)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _check_visible(receipt_id: str, request: Request, runner: Runner) -> None:
    """404 for a receipt of another tenant (as for one that does not exist)."""
    tenant = tenant_of(request)
    if tenant.admin:
        return
    known, owner = runner.receipt_owner(receipt_id)
    if not known or not tenant.may_see(owner):
        raise ApiError(404, "not_found", f"no receipt {receipt_id}")


def _check_receipt_id(receipt_id: str) -> None:
    if not RECEIPT_ID.fullmatch(receipt_id):
        raise ApiError(
            400, "invalid_receipt_id", "receipt ids look like exec-<13 digits>-<20 hex digits>"
        )
