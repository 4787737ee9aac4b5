"""The HTTP layer's shared parts: errors, the bearer auth and tenant, reading bodies.

Every error, whatever raised it, leaves as ``{"error": {"code": ..., "message": ...}}``
(:class:`ApiError` -> :func:`error_response`). Request bodies are read and parsed here, not
by FastAPI, so each way a body can be wrong (too large, not UTF-8, not JSON, not the schema)
gets its own status and code.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from glasshouse.server._runner import STORE_UNAVAILABLE, ReceiptWriteError, Rejected, Runner
from glasshouse.server._tenancy import ANONYMOUS, SCOPE_KEY, Tenant, TokenTable
from glasshouse.server.models import PROGRAM_FIELDS, program_fields_message

#: Paths served without a token: liveness probes and the API description hold no data.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
_Model = TypeVar("_Model", bound=BaseModel)


class ApiError(Exception):
    """An error answer: HTTP ``status``, a stable ``code``, a ``message`` saying why."""

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


def error_body(error: ApiError) -> dict[str, Any]:
    """The JSON body of ``error`` (also a streamed answer's ``error`` event)."""
    return {"error": {"code": error.code, "message": error.message}}


class BearerAuth:
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


def validation_message(exc: ValidationError | RequestValidationError) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: Request, limit: int, code: str = "body_too_large") -> bytes:
    """The whole body, or 413 ``code`` as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = ApiError(413, code, f"request body over the limit of {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect as exc:  # gone, or dropped at the body deadline: nobody to answer
        raise ApiError(408, "client_disconnected", "the body did not arrive in time") from exc
    return bytes(body)


def parse_request(
    body: bytes, content_type: str | None, model: type[_Model], *, program: bool = False
) -> _Model:
    """Bytes -> ``model``, or the ApiError saying exactly what is wrong. ``program``: the
    body must have exactly one of ``code``, ``command``, ``shell`` (a run or a step)."""
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
    if program:
        given = [name for name in PROGRAM_FIELDS if name in data]
        if not given:
            raise ApiError(422, "missing_code", program_fields_message(given))
        if len(given) > 1:
            raise ApiError(422, "conflicting_fields", program_fields_message(given))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", validation_message(exc)) from exc


def run_error(exc: BaseException, runner: Runner) -> ApiError:
    """The error answer to a run that was refused or failed."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Rejected):
        return _refused(exc, runner)
    if isinstance(exc, ReceiptWriteError):
        return ApiError(500, "receipt_write_failed", str(exc))
    return ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}")


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
