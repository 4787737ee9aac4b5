"""``AsyncSandbox``: :class:`~glasshouse.client.Sandbox` for asyncio (httpx.AsyncClient).

    async with AsyncSandbox("http://127.0.0.1:8080", token) as sb:
        await sb.run_code("x = 41")
        result = await sb.commands.run(["python3", "-c", "print(2)"], on_stdout=print)
        await sb.files.write("a.txt", "hi")

The same methods as the sync Sandbox, awaited; output callbacks may be plain functions or
coroutine functions. The session opens on ``async with`` (or ``await AsyncSandbox.create(...)``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from glasshouse.client._sandbox import OutputCallback, file_url, verify_offline
from glasshouse.client._wire import (
    SLACK_S,
    SSE,
    EventReader,
    FileEntry,
    ServerError,
    StepResult,
    command_program,
    error_from_body,
    error_of,
    http_timeout,
    retry_wait,
    session_body,
    step_body,
)


class AsyncCommands:
    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def run(
        self,
        cmd: str | Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> StepResult:
        """Run ``cmd``: a string is a shell script (``sh -c``), a list an argv."""
        body = step_body(command_program(cmd), stdin=stdin, env=env, cwd=cwd, timeout=timeout)
        return await self._sandbox._step(body, timeout, on_stdout, on_stderr)


class AsyncFiles:
    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def write(self, path: str, data: bytes | str) -> FileEntry:
        content = data.encode("utf-8") if isinstance(data, str) else data
        sb = self._sandbox
        return FileEntry.from_json(await sb._call("PUT", file_url(sb._id(), path), content=content))

    async def read(self, path: str) -> bytes:
        sb = self._sandbox
        return (await sb._send("GET", file_url(sb._id(), path))).content

    async def list(self, path: str = ".") -> list[FileEntry]:
        sb = self._sandbox
        answer = await sb._call("GET", f"/sessions/{sb._id()}/files", params={"path": path})
        return [FileEntry.from_json(entry) for entry in answer["entries"]]

    async def delete(self, path: str) -> None:
        sb = self._sandbox
        await sb._send("DELETE", file_url(sb._id(), path))

    remove = delete


class AsyncSandbox:
    """A session on a glasshouse-server, for asyncio. The options are the sync Sandbox's;
    the session opens on ``async with`` or :meth:`open` (``session_id``: attach to an open
    one instead)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        network: bool = False,
        memory: int | None = None,
        pids: int | None = None,
        disk: int | None = None,
        ttl_s: float | None = None,
        idle_timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        session_id: str | None = None,
    ) -> None:
        headers = {"User-Agent": "glasshouse-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.retries = retries
        self._options: dict[str, Any] = {
            "base_url": self.url,
            "headers": headers,
            "timeout": SLACK_S,
            "transport": transport,
        }
        self._http = httpx.AsyncClient(**self._options)
        self._body = session_body(
            network=network,
            memory=memory,
            pids=pids,
            disk=disk,
            ttl_s=ttl_s,
            idle_timeout_s=idle_timeout_s,
            env=env,
            files=files,
        )
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)
        self.id: str | None = session_id
        self.receipt_id: str | None = None
        self._last_step: str | None = None

    @classmethod
    async def create(cls, url: str, token: str | None = None, **options: Any) -> AsyncSandbox:
        """A new session, open."""
        sandbox = cls(url, token, **options)
        await sandbox.open()
        return sandbox

    async def open(self) -> AsyncSandbox:
        """Open the session (nothing to do when attached to one)."""
        if self.id is None:
            try:
                self.id = str((await self._call("POST", "/sessions", json=self._body))["id"])
            except BaseException:
                await self._http.aclose()
                raise
        return self

    async def __aenter__(self) -> AsyncSandbox:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- steps ----------------------------------------------------------------------------
    async def run_code(
        self,
        code: str,
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> StepResult:
        """Run Python ``code`` in the session's persistent interpreter."""
        body = step_body({"code": code}, stdin=stdin, env=env, cwd=cwd, timeout=timeout)
        return await self._step(body, timeout, on_stdout, on_stderr)

    async def _step(
        self,
        body: dict[str, Any],
        timeout: float | None,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
    ) -> StepResult:
        path = f"/sessions/{self._id()}/run"
        if on_stdout is None and on_stderr is None:
            answer = await self._call("POST", path, json=body, timeout=http_timeout(timeout))
        else:
            callbacks = {"stdout": on_stdout, "stderr": on_stderr}
            answer = await self._streamed(path, body, http_timeout(timeout), callbacks)
        result = StepResult.from_json(answer)
        self._last_step = result.receipt_id
        return result

    async def _streamed(
        self,
        path: str,
        body: dict[str, Any],
        timeout: float,
        callbacks: Mapping[str, OutputCallback | None],
    ) -> dict[str, Any]:
        try:
            async with self._http.stream(
                "POST", path, json=body, headers={"Accept": SSE}, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_of(response)
                async for kind, data in _events(response.aiter_lines()):
                    if kind == "result":
                        return dict(data)
                    if kind == "error":
                        raise error_from_body(data)
                    callback = callbacks.get(kind)
                    if callback is not None:
                        outcome = callback(data)
                        if inspect.isawaitable(outcome):
                            await outcome
        except httpx.HTTPError as exc:
            raise ServerError(0, "unreachable", f"{self.url}{path}: {exc}") from exc
        raise ServerError(0, "incomplete_answer", "the answer ended before its result event")

    # -- the session ----------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        return dict(await self._call("GET", f"/sessions/{self._id()}"))

    async def pause(self) -> str:
        return str((await self._call("POST", f"/sessions/{self._id()}/pause"))["kept"])

    async def resume(self) -> dict[str, Any]:
        return dict(await self._call("POST", f"/sessions/{self._id()}/resume"))

    async def close(self) -> str | None:
        """Close the session and the connection; the session receipt's id. Idempotent."""
        if self.id is not None and self.receipt_id is None and not self._http.is_closed:
            try:
                answer = await self._call("DELETE", f"/sessions/{self.id}")
                self.receipt_id = str(answer["receipt_id"])
            except ServerError as exc:
                if exc.code != "session_gone":
                    raise
        await self._http.aclose()
        return self.receipt_id

    async def disconnect(self) -> None:
        """Close the connection, leave the session open."""
        await self._http.aclose()

    # -- receipts -------------------------------------------------------------------------
    async def receipt(self, receipt_id: str | None = None) -> dict[str, Any]:
        return dict(await self._call("GET", f"/receipts/{self._receipt_id(receipt_id)}"))

    async def verify(self, receipt_id: str | None = None, *, key: Any = None) -> Any:
        """As :meth:`glasshouse.client.Sandbox.verify`."""
        rid = self._receipt_id(receipt_id)
        envelope = await self._call("GET", f"/receipts/{rid}/envelope")
        receipt = await self._call("GET", f"/receipts/{rid}")
        keys = await self._call("GET", "/keys") if key is None else None
        return verify_offline(envelope, receipt, key, lambda: keys)

    def _receipt_id(self, receipt_id: str | None) -> str:
        rid = receipt_id or self.receipt_id or self._last_step
        if rid is None:
            raise ValueError("no receipt yet: run a step or close the session first")
        return rid

    def _id(self) -> str:
        if self.id is None:
            raise RuntimeError("the session is not open: use 'async with' or await open()")
        return self.id

    # -- HTTP -----------------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                if self._http.is_closed:  # closed: a receipt read after the session ended
                    async with httpx.AsyncClient(**self._options) as http:
                        response = await http.request(method, path, **kwargs)
                else:
                    response = await self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ServerError(0, "unreachable", f"{self.url}{path}: {exc}") from exc
            if response.status_code == 429 and attempt < self.retries:
                error = error_of(response)
                if error.retry_after is not None:
                    attempt += 1
                    await asyncio.sleep(retry_wait(error))
                    continue
            if response.status_code >= 400:
                raise error_of(response)
            return response

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._send(method, path, **kwargs)).json()


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    reader = EventReader()
    async for line in lines:
        event = reader.feed(line)
        if event is not None:
            yield event
