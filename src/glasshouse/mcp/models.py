"""The tools' results: one pydantic model each (its JSON Schema is the tool's output schema,
its data the ``structuredContent``) and a readable text rendering (``text()``) for the
result's ``content``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from glasshouse.mcp.effects import Effects


class RunResult(BaseModel):
    """The result of run_python or run_command."""

    exit_code: int = Field(
        description="The program's exit code; 124 timed out, 128+N killed by signal N, "
        "125 Glasshouse could not run it."
    )
    stdout: str = Field(description="Standard output (UTF-8, undecodable bytes replaced).")
    stderr: str = Field(description="Standard error (UTF-8, undecodable bytes replaced).")
    stdout_truncated: bool = Field(False, description="stdout was cut to the output cap.")
    stderr_truncated: bool = Field(False, description="stderr was cut to the output cap.")
    duration_ms: int = Field(description="Wall-clock time of the step.")
    timed_out: bool = False
    timeout_s: float = Field(description="The timeout the run had (seconds).")
    interpreter_restarted: bool = Field(
        False, description="The Python interpreter was restarted: its variables are gone."
    )
    error: str | None = Field(None, description="Why Glasshouse could not run it, if so.")
    step: int = Field(description="This step's number in the session (from 1).")
    session_id: str
    receipt_id: str = Field(description="The step's receipt (get_receipt, or the resource).")
    effects: Effects = Field(description="What the OS saw the step do, from its receipt.")

    def text(self) -> str:
        status = f"exit {self.exit_code}"
        if self.timed_out:
            status = f"TIMED OUT after {self.timeout_s:g}s, killed (exit {self.exit_code})"
        lines = [f"{status} in {self.duration_ms} ms · step {self.step} · {self.receipt_id}"]
        if self.interpreter_restarted:
            lines.append("the Python interpreter was restarted: earlier variables are gone")
        if self.error:
            lines.append(f"error: {self.error}")
        for name, data, cut in (
            ("stdout", self.stdout, self.stdout_truncated),
            ("stderr", self.stderr, self.stderr_truncated),
        ):
            if data:
                lines.append(f"--- {name}{' (truncated)' if cut else ''}\n{data.rstrip()}")
        lines.append("--- observed effects")
        lines += self.effects.lines()
        return "\n".join(lines)


class WriteResult(BaseModel):
    path: str
    size: int = Field(description="Bytes written.")
    sha256: str

    def text(self) -> str:
        return f"wrote {self.size} bytes to {self.path} (sha256 {self.sha256[:16]}…)"


class FileContent(BaseModel):
    path: str
    encoding: Literal["utf-8", "base64"] = Field(
        description="utf-8: content is the text; base64: the file is not UTF-8 text and "
        "content is its bytes, base64-encoded."
    )
    content: str
    size: int = Field(description="The file's size in bytes.")
    truncated: bool = Field(description="Only the first cap_bytes bytes are in content.")
    cap_bytes: int = Field(description="Most bytes read_file returns.")

    def text(self) -> str:
        head = f"{self.path}: {self.size} bytes"
        if self.truncated:
            head += f", the first {self.cap_bytes} shown (cap)"
        if self.encoding == "base64":
            head += ", binary: base64"
        return f"{head}\n{self.content}"


class FileEntry(BaseModel):
    name: str
    path: str = Field(description="Relative to the workspace.")
    type: str = Field(description="file, dir, symlink or other.")
    size: int
    mtime: float = Field(description="Modification time, seconds since the epoch.")
    sha256: str | None = Field(None, description="Regular files only.")


class FileList(BaseModel):
    path: str
    entries: list[FileEntry]

    def text(self) -> str:
        if not self.entries:
            return f"{self.path}: empty"
        rows = [
            f"{e.type[0]} {e.size:>10} {e.path}{'/' if e.type == 'dir' else ''}"
            for e in self.entries
        ]
        return f"{self.path}: {len(self.entries)} entries\n" + "\n".join(rows)


class ReceiptResult(BaseModel):
    receipt_id: str
    receipt: dict[str, Any] = Field(description="The full stored receipt (canonical JSON).")

    def text(self) -> str:
        import json

        return json.dumps(self.receipt, indent=1, ensure_ascii=False)


class SessionSummary(BaseModel):
    session_id: str
    backend: str
    isolation: str
    state: str
    steps: int
    created: str
    receipt_ids: list[str] = Field(description="Every step's receipt, in order.")
    previous_sessions: list[str] = Field(
        default_factory=list,
        description="Session receipts of sessions this client sealed with reset_session.",
    )
    effects: Effects = Field(description="What the OS saw across all steps so far.")

    def text(self) -> str:
        lines = [
            f"session {self.session_id} ({self.backend}, {self.isolation}): {self.state}, "
            f"{self.steps} step(s) since {self.created}",
        ]
        if self.receipt_ids:
            lines.append("step receipts: " + ", ".join(self.receipt_ids))
        lines.append("--- observed effects across the session")
        lines += self.effects.lines()
        return "\n".join(lines)


class ResetResult(BaseModel):
    closed_session_id: str | None = Field(description="The session sealed (None: none was open).")
    session_receipt_id: str | None = Field(description="Its session receipt.")
    new_session_id: str

    def text(self) -> str:
        if self.closed_session_id is None:
            return f"new session {self.new_session_id}"
        return (
            f"sealed session {self.closed_session_id} (session receipt "
            f"{self.session_receipt_id}); new session {self.new_session_id}"
        )
