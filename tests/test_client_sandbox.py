"""glasshouse.client.Sandbox / AsyncSandbox and ``glasshouse session`` against a real server
process (sandbox backend, signing receipts); every session a live sandbox."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_helpers import Gate, require_backend, server_process

from glasshouse.client import AsyncSandbox, FileEntry, Sandbox, ServerError
from glasshouse.client._sandbox import file_url
from glasshouse.client._wire import EventReader
from glasshouse.receipt.sign import VerificationError, generate_keypair


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    require_backend("sandbox", "glasshouse.backends.sandbox")
    tmp = tmp_path_factory.mktemp("client")
    private, public = generate_keypair(tmp, "server")
    args = ["--backend", "sandbox", "--profile", "disabled", "--signing-key", str(private)]
    with server_process(args, tmp) as srv:
        srv.public_key = public  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.close()


def test_sandbox_steps_files_and_receipts(server) -> None:
    with Sandbox(server.url, files={"hello.txt": "hi"}, env={"BASE": "b"}) as sb:
        assert sb.id.startswith("sess-") and sb.created["backend"] == "sandbox"
        first = sb.run_code("x = 41")
        second = sb.run_code("print(x + 1)")
        assert (first.step, second.step, second.stdout, second.ok) == (1, 2, "42\n", True)
        shell = sb.commands.run("cat hello.txt; echo $BASE $MORE", env={"MORE": "m"})
        assert shell.stdout == "hib m\n"
        argv = sb.commands.run(["python3", "-c", "import sys; print(sys.argv[1])", "a b"])
        assert argv.stdout == "a b\n"
        entry = sb.files.write("d/blob.bin", b"\x00\xff")
        assert isinstance(entry, FileEntry) and entry.size == 2 and entry.path == "d/blob.bin"
        sb.files.write("d/text.txt", "é")
        assert sb.files.read("d/blob.bin") == b"\x00\xff"
        assert sb.files.read("d/text.txt") == "é".encode()
        assert sorted(e.name for e in sb.files.list("d")) == ["blob.bin", "text.txt"]
        sb.files.remove("d/text.txt")
        with pytest.raises(ServerError) as missing:
            sb.files.read("d/text.txt")
        assert (missing.value.status, missing.value.code) == (404, "file_not_found")
        # the last step's receipt, verified with the key /keys serves and with a pinned one
        assert sb.receipt()["execution_id"] == argv.receipt_id
        assert sb.verify().execution_id == argv.receipt_id
        assert sb.verify(first.receipt_id, key=server.public_key).execution_id == first.receipt_id
        assert sb.info()["steps"] == 4
    # closed: the session receipt, still readable and verifiable
    assert sb.receipt_id is not None
    sealed = sb.receipt()
    assert sealed["execution_id"] == sb.receipt_id and sealed["session"]["reason"] == "closed"
    assert sb.verify().receipt["session"]["kind"] == "session"
    with pytest.raises(VerificationError):
        sb.verify(key=Ed25519PrivateKey.generate().public_key())
    assert sb.close() == sb.receipt_id  # idempotent


def test_callbacks_stream_as_it_happens(server, gate: Gate) -> None:
    """The callback itself releases the gate the step waits at: the step can only end if
    its first output reached the client while it ran."""
    seen: list[tuple[str, str]] = []

    def on_stdout(text: str) -> None:
        seen.append(("out", text))
        if "".join(t for k, t in seen if k == "out") == "waiting\n":
            gate.release()

    code = "import sys\nprint('waiting', flush=True)\n" + gate.wait_code()
    code += "sys.stderr.write('after')\n"
    with Sandbox(server.url, network=True) as sb:
        result = sb.run_code(code, on_stdout=on_stdout, on_stderr=lambda t: seen.append(("err", t)))
        assert result.ok and result.stdout == "waiting\n" and result.stderr == "after"
        assert "".join(t for k, t in seen if k == "err") == "after"
        shell = sb.commands.run(
            "echo one; echo two >&2", on_stderr=lambda t: seen.append(("e2", t))
        )
        assert shell.stdout == "one\n" and "".join(t for k, t in seen if k == "e2") == "two\n"


def test_server_errors_are_typed(server, gate: Gate) -> None:
    with Sandbox(server.url) as sb:
        with pytest.raises(ServerError) as bad:
            sb.files.read("../etc/passwd")  # sent as is: the server refuses it
        assert (bad.value.status, bad.value.code) == (400, "invalid_path")
        sb.pause()
        with pytest.raises(ServerError) as paused:
            sb.run_code("1", on_stdout=print)  # refused before any event: still typed
        assert paused.value.code == "session_paused"
        assert sb.resume()["state"] == "running"
    with pytest.raises(ServerError) as gone:
        Sandbox.connect(server.url, sb.id).run_code("1")
    assert (gone.value.status, gone.value.code) == (410, "session_gone")
    with pytest.raises(ServerError) as unknown:
        Sandbox(server.url, memory=4 << 40)
    assert unknown.value.code == "invalid_request"
    with pytest.raises(ValueError, match="no receipt yet"), Sandbox(server.url) as fresh:
        fresh.receipt()


def test_connect_and_disconnect(server) -> None:
    first = Sandbox(server.url)
    first.run_code("kept = 'yes'")
    first.disconnect()  # the session stays open
    again = Sandbox.connect(server.url, first.id)
    assert again.run_code("print(kept)").stdout == "yes\n"
    receipt_id = again.close()
    assert receipt_id and again.receipt()["session"]["steps"][0]["step"] == 1


def test_async_sandbox(server, gate: Gate) -> None:
    async def main() -> None:
        chunks: list[str] = []

        async def on_stdout(text: str) -> None:
            chunks.append(text)
            if "".join(chunks) == "go\n":
                await asyncio.get_running_loop().run_in_executor(None, gate.release)

        async with AsyncSandbox(server.url, network=True) as sb:
            assert sb.id is not None
            await sb.run_code("x = 2")
            code = "print('go', flush=True)\n" + gate.wait_code() + "print(x * 21)"
            result = await sb.run_code(code, on_stdout=on_stdout)
            assert result.stdout == "go\n42\n" and result.step == 2
            entry = await sb.files.write("f.txt", "data")
            assert entry.size == 4 and await sb.files.read("f.txt") == b"data"
            assert [e.name for e in await sb.files.list()] == ["f.txt"]
            out = await sb.commands.run(["cat", "f.txt"])
            assert out.stdout == "data"
            assert (await sb.verify()).execution_id == out.receipt_id
            await sb.files.delete("f.txt")
            assert (await sb.info())["steps"] == 3
        assert sb.receipt_id is not None
        assert (await sb.receipt())["session"]["reason"] == "closed"
        created = await AsyncSandbox.create(server.url)
        assert created.id is not None
        assert await created.close() is not None

    asyncio.run(main())


def _cli(url: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", "session", args[0], "--url", url, *args[1:]],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def test_cli_drives_a_session(server, tmp_path: Path) -> None:
    created = _cli(server.url, "create", "--memory", "128M", "--env", "A=1")
    assert created.returncode == 0, created.stderr
    sid = created.stdout.decode().strip()
    assert _cli(server.url, "run", sid, "--code", "x = 41").returncode == 0
    step = _cli(server.url, "run", sid, "--code", "-", stdin=b"import sys\nprint(x + 1)\n")
    assert step.returncode == 0 and step.stdout == b"42\n", step.stderr
    assert b"step 2 \xc2\xb7 exit 0" in step.stderr
    local = tmp_path / "data.bin"
    local.write_bytes(b"\x00\x01\x02")
    put = _cli(server.url, "put", sid, str(local), "in/data.bin")
    assert put.returncode == 0 and put.stdout.startswith(b"in/data.bin\t3\t")
    argv = _cli(server.url, "run", sid, "--", "wc", "-c", "in/data.bin")
    assert argv.stdout == b"3 in/data.bin\n"
    shell = _cli(server.url, "run", sid, "--shell", "echo $A; exit 4")
    assert shell.returncode == 4 and shell.stdout == b"1\n"
    assert _cli(server.url, "get", sid, "in/data.bin").stdout == b"\x00\x01\x02"
    assert b"in/data.bin" in _cli(server.url, "ls", sid, "in").stdout
    assert sid.encode() in _cli(server.url, "list").stdout
    info = json.loads(_cli(server.url, "info", sid).stdout)
    assert info["steps"] == 4 and info["state"] == "running"
    as_json = json.loads(_cli(server.url, "run", sid, "--json", "--code", "print(1)").stdout)
    assert as_json["stdout"] == "1\n" and as_json["step"] == 5
    missing = _cli(server.url, "get", sid, "nope")
    assert missing.returncode == 125 and b"404 file_not_found" in missing.stderr
    assert _cli(server.url, "run", sid, "--code", "1", "--shell", "x").returncode == 2
    assert _cli(server.url, "rm", sid, "in/data.bin").returncode == 0
    closed = _cli(server.url, "close", sid)
    assert closed.returncode == 0 and closed.stdout.startswith(b"exec-")
    again = _cli(server.url, "close", sid)
    assert again.returncode == 125 and b"closed already" in again.stderr


def test_event_reader() -> None:
    reader = EventReader()
    lines = [
        ": a comment",
        "event: stdout",
        'data: "a"',
        "",
        "event:result",
        'data:{"x":',
        "data: 1}",
        "",
    ]
    events = [e for line in lines if (e := reader.feed(line)) is not None]
    assert events == [("stdout", "a"), ("result", {"x": 1})]
    assert reader.feed("") is None  # a blank line with no event


def test_file_urls_keep_dot_segments() -> None:
    assert file_url("s", "a b/c?.txt") == "/sessions/s/files/a%20b/c%3F.txt"
    assert file_url("s", "../x/./y") == "/sessions/s/files/%2E%2E/x/%2E/y"
