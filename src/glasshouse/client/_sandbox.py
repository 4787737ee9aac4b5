"""``Sandbox``: a session on a glasshouse-server, from Python (sync; httpx).

    from glasshouse.client import Sandbox

    with Sandbox("http://127.0.0.1:8080", token) as sb:
        sb.run_code("x = 41")
        print(sb.run_code("print(x + 1)").stdout)                # "42\\n"
        sb.files.write("data.csv", b"a,b\\n1,2\\n")
        sb.commands.run("wc -l data.csv", on_stdout=print)     # streamed as it happens
        sb.verify()                                            # the last step's signed receipt
    # leaving the block closes the session: sb.receipt() is then the session receipt

The nouns follow the E2B SDK's (``run_code``, ``commands.run``, ``files.write/read/list``,
``on_stdout``/``on_stderr``); the server's errors raise :class:`ServerError` (``.code``:
``session_busy``, ``file_not_found``...).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

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

#: An output callback: gets each chunk of text as the step writes it.
OutputCallback = Callable[[str], Any]


def file_url(session_id: str, path: str) -> str:
    """The URL path of a workspace file: each segment quoted, '.' and '..' too, so the
    server judges the path given (a client never resolves '..' itself)."""
    segments = [_segment(part) for part in path.split("/")]
    return f"/sessions/{session_id}/files/" + "/".join(segments)


def _segment(part: str) -> str:
    quoted = quote(part, safe="")
    return quoted.replace(".", "%2E") if part in (".", "..") else quoted


class Commands:
    """``sandbox.commands``: programs run as new processes in the session's sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def run(
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
        return self._sandbox._step(body, timeout, on_stdout, on_stderr)


class Files:
    """``sandbox.files``: the session's workspace (paths relative to it)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def write(self, path: str, data: bytes | str) -> FileEntry:
        """Create or replace ``path`` with ``data`` (a str is UTF-8 encoded)."""
        content = data.encode("utf-8") if isinstance(data, str) else data
        sb = self._sandbox
        answer = sb._call("PUT", file_url(sb.id, path), content=content)
        return FileEntry.from_json(answer)

    def read(self, path: str) -> bytes:
        sb = self._sandbox
        response = sb._send("GET", file_url(sb.id, path))
        return response.content

    def list(self, path: str = ".") -> list[FileEntry]:
        sb = self._sandbox
        answer = sb._call("GET", f"/sessions/{sb.id}/files", params={"path": path})
        return [FileEntry.from_json(entry) for entry in answer["entries"]]

    def delete(self, path: str) -> None:
        sb = self._sandbox
        sb._send("DELETE", file_url(sb.id, path))

    remove = delete  # the E2B SDK's name


class Sandbox:
    """A session on a glasshouse-server: opened by the constructor, closed by :meth:`close`
    (or leaving a ``with`` block). ``network``, ``memory``/``pids``/``disk`` (the whole
    session's limits), ``ttl_s``, ``idle_timeout_s``, ``env`` and ``files`` (path -> text)
    are the session's; :meth:`connect` attaches to one that is open already."""

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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(**self._options)
        self.commands = Commands(self)
        self.files = Files(self)
        #: The session receipt's id, once the session is closed.
        self.receipt_id: str | None = None
        self._last_step: str | None = None
        self.id: str = session_id or ""
        #: The server's answer to the session's creation (empty when attached).
        self.created: dict[str, Any] = {}
        if session_id is not None:
            return
        body = session_body(
            network=network,
            memory=memory,
            pids=pids,
            disk=disk,
            ttl_s=ttl_s,
            idle_timeout_s=idle_timeout_s,
            env=env,
            files=files,
        )
        try:
            created = self._call("POST", "/sessions", json=body)
        except BaseException:
            self._http.close()
            raise
        self.id = str(created["id"])
        self.created = dict(created)

    @classmethod
    def connect(
        cls, url: str, session_id: str, token: str | None = None, **options: Any
    ) -> Sandbox:
        """A Sandbox for the open session ``session_id`` (closing it closes that session)."""
        return cls(url, token, session_id=session_id, **options)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps ----------------------------------------------------------------------------
    def run_code(
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
        """Run Python ``code`` in the session's persistent interpreter (variables, imports
        and open files survive between steps). ``on_stdout``/``on_stderr`` get the output as
        it happens (the step is streamed)."""
        body = step_body({"code": code}, stdin=stdin, env=env, cwd=cwd, timeout=timeout)
        return self._step(body, timeout, on_stdout, on_stderr)

    def _step(
        self,
        body: dict[str, Any],
        timeout: float | None,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
    ) -> StepResult:
        path = f"/sessions/{self.id}/run"
        if on_stdout is None and on_stderr is None:
            answer = self._call("POST", path, json=body, timeout=http_timeout(timeout))
        else:
            callbacks = {"stdout": on_stdout, "stderr": on_stderr}
            answer = self._streamed(path, body, http_timeout(timeout), callbacks)
        result = StepResult.from_json(answer)
        self._last_step = result.receipt_id
        return result

    def _streamed(
        self,
        path: str,
        body: dict[str, Any],
        timeout: float,
        callbacks: Mapping[str, OutputCallback | None],
    ) -> dict[str, Any]:
        try:
            with self._http.stream(
                "POST", path, json=body, headers={"Accept": SSE}, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_of(response)
                for kind, data in _events(response.iter_lines()):
                    if kind == "result":
                        return dict(data)
                    if kind == "error":
                        raise error_from_body(data)
                    callback = callbacks.get(kind)
                    if callback is not None:
                        callback(data)
        except httpx.HTTPError as exc:
            raise ServerError(0, "unreachable", f"{self.url}{path}: {exc}") from exc
        raise ServerError(0, "incomplete_answer", "the answer ended before its result event")

    # -- the session ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """State, steps, resources used and expiry (GET /sessions/{id})."""
        return dict(self._call("GET", f"/sessions/{self.id}"))

    def pause(self) -> str:
        """Free the session's CPU and memory, keep its workspace; returns what is kept."""
        return str(self._call("POST", f"/sessions/{self.id}/pause")["kept"])

    def resume(self) -> dict[str, Any]:
        return dict(self._call("POST", f"/sessions/{self.id}/resume"))

    def close(self) -> str | None:
        """Close the session (its receipt is sealed) and the connection; return the session
        receipt's id. Idempotent; a session the server already closed (410) is no error."""
        if self.receipt_id is None and not self._http.is_closed:
            try:
                self.receipt_id = str(self._call("DELETE", f"/sessions/{self.id}")["receipt_id"])
            except ServerError as exc:
                if exc.code != "session_gone":
                    raise
        self._http.close()
        return self.receipt_id

    def disconnect(self) -> None:
        """Close the connection, leave the session open (``connect`` to it again later)."""
        self._http.close()

    # -- receipts -------------------------------------------------------------------------
    def receipt(self, receipt_id: str | None = None) -> dict[str, Any]:
        """A stored receipt: ``receipt_id``, else the session receipt once closed, else the
        last step's."""
        return dict(self._call("GET", f"/receipts/{self._receipt_id(receipt_id)}"))

    def verify(self, receipt_id: str | None = None, *, key: Any = None) -> Any:
        """Verify a receipt's signed envelope offline (the receipt chosen as :meth:`receipt`
        chooses): returns :class:`glasshouse.receipt.sign.Verified`, raises
        ``VerificationError`` saying why not. ``key``: the server's public key (an Ed25519
        key, or a PEM file); by default the one ``GET /keys`` serves (a convenience: pin the
        key for trust)."""
        rid = self._receipt_id(receipt_id)
        envelope = self._call("GET", f"/receipts/{rid}/envelope")
        receipt = self._call("GET", f"/receipts/{rid}")
        return verify_offline(envelope, receipt, key, lambda: self._call("GET", "/keys"))

    def _receipt_id(self, receipt_id: str | None) -> str:
        rid = receipt_id or self.receipt_id or self._last_step
        if rid is None:
            raise ValueError("no receipt yet: run a step or close the session first")
        return rid

    # -- HTTP -----------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                if self._http.is_closed:  # closed: a receipt read after the session ended
                    with httpx.Client(**self._options) as http:
                        response = http.request(method, path, **kwargs)
                else:
                    response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ServerError(0, "unreachable", f"{self.url}{path}: {exc}") from exc
            if response.status_code == 429 and attempt < self.retries:
                error = error_of(response)
                if error.retry_after is not None:  # (too_many_sessions has none: no retry)
                    attempt += 1
                    time.sleep(retry_wait(error))
                    continue
            if response.status_code >= 400:
                raise error_of(response)
            return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    reader = EventReader()
    for line in lines:
        event = reader.feed(line)
        if event is not None:
            yield event


def verify_offline(
    envelope: dict[str, Any], receipt: dict[str, Any], key: Any, fetch_key: Callable[[], Any]
) -> Any:
    """Check ``envelope`` (and that it carries ``receipt``) with ``key``, or the server's."""
    from glasshouse.receipt.sign import load_public_key, verify_envelope

    if key is None:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(str(fetch_key()["public_key"]).encode())
    elif not hasattr(key, "verify"):
        key = load_public_key(key)
    return verify_envelope(envelope, key, receipt=receipt)
