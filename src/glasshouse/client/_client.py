"""A small typed client for glasshouse-server's one-shot runs (httpx).

    >>> from glasshouse.client import Client
    >>> with Client("http://127.0.0.1:8080") as gh:
    ...     result = gh.run("print(2+2)")
    ...     result.stdout, result.receipt_id

Errors the server reports come back as :class:`ServerError` with its ``status``, ``code``
and ``message``; a full queue (429) is retried after ``Retry-After`` up to ``retries`` times.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from glasshouse.client._wire import RunResult as RunResult
from glasshouse.client._wire import ServerError, retry_wait
from glasshouse.client._wire import error_of as _error

#: Extra seconds the HTTP timeout allows beyond the run's own timeout (setup, receipt).
_SLACK_S = 30.0


@dataclass(frozen=True)
class ReceiptSummary:
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


@dataclass(frozen=True)
class ReceiptPage:
    receipts: list[ReceiptSummary]
    next_cursor: str | None


class Client:
    """Talks to one glasshouse-server. Thread-safe (one pooled httpx client); close it."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "glasshouse-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=_SLACK_S, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def run(
        self,
        code: str,
        *,
        timeout: float = 60,
        stdin: str | None = None,
        files: Mapping[str, str] | None = None,
        memory: int | None = None,
        pids: int | None = None,
        output: int | None = None,
        network: bool = False,
    ) -> RunResult:
        """Run ``code`` (``python3 -c``) in a fresh sandbox and wait for the answer."""
        body: dict[str, Any] = {"code": code, "timeout": timeout, "network": network}
        if stdin is not None:
            body["stdin"] = stdin
        if files:
            body["files"] = dict(files)
        limits = {
            k: v
            for k, v in (("memory", memory), ("pids", pids), ("output", output))
            if v is not None
        }
        if limits:
            body["limits"] = limits
        data = self._request("POST", "/run", json=body, timeout=timeout + _SLACK_S)
        return RunResult.from_json(data)

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def receipt(self, receipt_id: str) -> Any:
        """The stored receipt as a validated :class:`glasshouse.receipt.model.Receipt`."""
        from glasshouse.receipt.model import Receipt

        return Receipt.model_validate(self._request("GET", f"/receipts/{receipt_id}"))

    def receipts(self, limit: int = 50, cursor: str | None = None) -> ReceiptPage:
        """One page of receipts, newest first; pass ``next_cursor`` on for the next."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        data = self._request("GET", "/receipts", params=params)
        return ReceiptPage(
            [ReceiptSummary(**item) for item in data["receipts"]], data.get("next_cursor")
        )

    def sessions(self) -> list[dict[str, Any]]:
        """The open sessions this token sees (GET /sessions)."""
        sessions: list[dict[str, Any]] = self._request("GET", "/sessions")["sessions"]
        return sessions

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        if response.status_code != 200:
            raise _error(response)
        return response.text

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ServerError(0, "unreachable", f"{self.url}{path}: {exc}") from exc
            if response.status_code == 429 and attempt < self.retries:
                attempt += 1
                error = _error(response)
                time.sleep(retry_wait(error))
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response.json()


__all__ = ["Client", "ReceiptPage", "ReceiptSummary", "RunResult", "ServerError"]
