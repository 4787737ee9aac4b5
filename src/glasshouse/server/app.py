"""The HTTP layer: FastAPI routes over :class:`~glasshouse.server._runner.Runner`.

Every error, whatever raised it (routing, validation, our own checks), leaves as a JSON body
``{"error": {"code": ..., "message": ...}}``. The ``/run`` body is read and parsed here,
not by FastAPI, so each way a body can be wrong (too large, not UTF-8, not JSON, not the
schema) gets its own status and code; the OpenAPI document still describes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from glasshouse.core.version import RECEIPT_VERSION, __version__
from glasshouse.receipt.log import RECEIPT_ID
from glasshouse.server._events import STREAM_CONTENT, stream_answer, stream_mode
from glasshouse.server._limits import AboveCeiling, check_request, limits_for
from glasshouse.server._metrics import CONTENT_TYPE
from glasshouse.server._runner import STORE_UNAVAILABLE, ReceiptWriteError, Rejected, Runner
from glasshouse.server._stream import json_stream
from glasshouse.server._tenancy import ANONYMOUS, SCOPE_KEY, Tenant, TokenTable
from glasshouse.server.models import (
    PROGRAM_FIELDS,
    ErrorResponse,
    Health,
    PublicKey,
    ReceiptPage,
    ReceiptSummary,
    RunRequest,
    RunResponse,
    program_fields_message,
)

#: The ``{receipt_id}`` path parameter of the receipt routes (checked by _check_receipt_id).
ReceiptId = Annotated[
    str,
    FastAPIPath(
        description="A receipt id, exec-<unix ms>-<20 hex digits>.",
        json_schema_extra={"pattern": RECEIPT_ID.pattern},
    ),
]

#: Paths served without a token: liveness probes and the API description hold no data.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Every error's answer (a streamed answer's ``error`` event carries the same body)."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


class _BearerAuth:
    """Require ``Authorization: Bearer <token>`` (constant-time compare) on non-public paths
    and put the token's :class:`Tenant` in the scope.

    Pure ASGI, ahead of routing, so an unauthenticated request never reaches a handler and
    its body is never read."""

    def __init__(self, app: ASGIApp, tokens: TokenTable) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = rest.strip()
                break
        tenant = self.tokens.lookup(given)
        if tenant is None:
            response = error_response(
                401,
                "unauthorized",
                "a valid bearer token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": 'Bearer realm="glasshouse"'},
            )
            await response(scope, receive, send)
            return
        scope[SCOPE_KEY] = tenant
        await self.app(scope, receive, send)


def tenant_of(request: Request) -> Tenant:
    """Who sent ``request`` (the anonymous admin on a server without tokens)."""
    tenant = request.scope.get(SCOPE_KEY)
    return tenant if isinstance(tenant, Tenant) else ANONYMOUS


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body over the limit of {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(
                    413, "body_too_large", f"request body over the limit of {limit} bytes"
                )
    except ClientDisconnect as exc:  # gone, or dropped at the body deadline: nobody to answer
        raise ApiError(408, "client_disconnected", "the body did not arrive in time") from exc
    return bytes(body)


def parse_run_request(body: bytes, content_type: str | None) -> RunRequest:
    """Bytes -> RunRequest, or the ApiError saying exactly what is wrong."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        # A JSON-only API also stops a web page from POSTing code here cross-site: a
        # browser sends application/json only after a CORS preflight, which we never grant.
        raise ApiError(
            415, "unsupported_media_type", "send the request as Content-Type: application/json"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"request body is not valid UTF-8: {exc}") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the request body must be a JSON object")
    given = [name for name in PROGRAM_FIELDS if name in data]
    if not given:
        raise ApiError(422, "missing_code", program_fields_message(given))
    if len(given) > 1:
        raise ApiError(422, "conflicting_fields", program_fields_message(given))
    try:
        return RunRequest.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", _validation_message(exc)) from exc


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
            "Run untrusted Python in a fresh sandbox per request; every run leaves a "
            f"tamper-evident execution receipt ({RECEIPT_VERSION})."
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
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

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
        body = await _read_body(request, config.body_limit)
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
                    lambda exc: _error_body(_run_error(exc, runner)),
                )
            result = await asyncio.wrap_future(runner.submit(run_request, None, owner))
        except (Rejected, ReceiptWriteError) as exc:
            raise _run_error(exc, runner) from exc
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

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            request_schema = RunRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(request_schema.pop("$defs", {}))
            components["RunRequest"] = request_schema
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
        app.add_middleware(_BearerAuth, tokens=TokenTable(config.tokens))
    return app


def _mount_mcp(app: FastAPI, runner: Runner) -> Any:
    """The MCP tools at /mcp (behind the bearer-token check like every data route); the
    returned context manager runs their connections inside the app's lifespan."""
    from glasshouse.mcp.http import mount

    return mount(app, runner)


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


def _run_error(exc: BaseException, runner: Runner) -> ApiError:
    """The error answer to a run that was refused or failed."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Rejected):
        return _refused(exc, runner)
    if isinstance(exc, ReceiptWriteError):
        return ApiError(500, "receipt_write_failed", str(exc))
    return ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}")


def _error_body(error: ApiError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}}


def _refused(exc: Rejected, runner: Runner) -> ApiError:
    """The answer to a run refused before it started."""
    if exc.reason == STORE_UNAVAILABLE:
        return ApiError(503, STORE_UNAVAILABLE, str(exc), {"Retry-After": "10"})
    if exc.reason == "draining":
        return ApiError(503, "shutting_down", str(exc))
    return ApiError(429, "queue_full", str(exc), {"Retry-After": str(_retry_after(runner))})


def _retry_after(runner: Runner) -> int:
    """Seconds until a place is likely free: the mean run time times the queue's turns."""
    mean = runner.metrics.mean_seconds()
    turns = 1 + runner.queued / max(1, runner.config.max_concurrency)
    return max(1, min(60, math.ceil(mean * turns)))
