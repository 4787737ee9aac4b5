"""POST /run with ``command``/``shell`` and ``outputs``; GET /receipts/{id}/envelope and
/keys (issue 15's API pieces), in process, on the process backend and the real sandbox."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_helpers import API_BACKENDS, api, config, require_backend

from glasshouse.receipt.aggregate import command_hash
from glasshouse.receipt.dsse import keyid
from glasshouse.receipt.sign import verify_envelope


@pytest.fixture(params=API_BACKENDS, scope="module")
def backend_name(request: pytest.FixtureRequest) -> str:
    name, probe = request.param
    require_backend(name, probe)
    return name


@pytest.fixture(scope="module")
def client(backend_name: str, tmp_path_factory: pytest.TempPathFactory):
    cfg = config(
        tmp_path_factory.mktemp(backend_name),
        backend_name,
        outputs_file_cap=64,
        outputs_total_cap=100,
    )
    with api(cfg) as c:
        yield c


@pytest.fixture(scope="module")
def sandbox_client(tmp_path_factory: pytest.TempPathFactory):
    require_backend("sandbox", "glasshouse.backends.sandbox")
    cfg = config(
        tmp_path_factory.mktemp("sandbox-outputs"),
        "sandbox",
        outputs_file_cap=64,
        outputs_total_cap=100,
    )
    with api(cfg) as c:
        yield c


def _ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


# -- command and shell ----------------------------------------------------------------------
def test_command_runs_an_argv(client) -> None:
    argv = ["python3", "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME"]
    body = _ok(client.post("/run", json={"command": argv}))
    assert body["stdout"] == "['a b', '$HOME']\n" and body["exit_code"] == 0
    receipt = _ok(client.get(f"/receipts/{body['receipt_id']}"))
    assert receipt["code_hash"] is None
    assert receipt["artifacts"]["command_hash"] == command_hash(argv)


def test_shell_runs_under_sh(client) -> None:
    script = "echo one | tr a-z A-Z; exit 3"
    body = _ok(client.post("/run", json={"shell": script, "stdin": "x"}))
    assert body["stdout"] == "ONE\n" and body["exit_code"] == 3
    receipt = _ok(client.get(f"/receipts/{body['receipt_id']}"))
    assert receipt["code_hash"] is None
    assert receipt["artifacts"]["command_hash"] == command_hash(["sh", "-c", script])


def test_code_keeps_its_code_hash(client) -> None:
    body = _ok(client.post("/run", json={"code": "print(1)"}))
    receipt = _ok(client.get(f"/receipts/{body['receipt_id']}"))
    assert receipt["code_hash"] == hashlib.sha256(b"print(1)").hexdigest()


def test_command_sees_its_files(client) -> None:
    body = _ok(client.post("/run", json={"command": ["cat", "in.txt"], "files": {"in.txt": "hi"}}))
    assert body["stdout"] == "hi"


def test_a_missing_program_is_a_failed_run_with_a_receipt(client) -> None:
    body = _ok(client.post("/run", json={"command": ["no-such-program-glasshouse"]}))
    assert body["exit_code"] != 0
    assert _ok(client.get(f"/receipts/{body['receipt_id']}"))["execution_id"]


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({"timeout": 5}, "missing_code", "none of 'code', 'command', 'shell'"),
        ({"code": "1", "shell": "true"}, "conflicting_fields", "'code', 'shell'"),
        ({"command": ["true"], "shell": "true"}, "conflicting_fields", "'command', 'shell'"),
        ({"code": "1", "command": ["t"], "shell": "t"}, "conflicting_fields", "exactly one"),
        ({"command": []}, "invalid_request", "command"),
        ({"command": "ls"}, "invalid_request", "command"),
        ({"command": ["ls", 1]}, "invalid_request", "command"),
        ({"command": ["ls", "a\x00b"]}, "invalid_request", "NUL"),
        ({"shell": "echo \x00"}, "invalid_request", "NUL"),
        ({"shell": None}, "invalid_request", "none of"),
        ({"shell": "é" * 70_000}, "invalid_request", "bytes per argument"),
        ({"code": "1", "outputs": ["../x"]}, "invalid_request", "relative path"),
        ({"code": "1", "outputs": ["/etc/passwd"]}, "invalid_request", "relative path"),
        ({"code": "1", "outputs": [".hidden"]}, "invalid_request", "relative path"),
        ({"code": "1", "outputs": ["a", "a"]}, "invalid_request", "twice"),
        ({"code": "1", "outputs": "a"}, "invalid_request", "outputs"),
    ],
)
def test_bad_program_fields(client, body: dict, code: str, says: str) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode()
    response = client.post("/run", content=raw, headers={"content-type": "application/json"})
    assert says in _error(response, 422, code)


# -- outputs --------------------------------------------------------------------------------
def test_outputs_come_back_base64_capped(sandbox_client) -> None:
    script = (
        "printf 'hello' > a.txt; mkdir -p d; head -c 50 /dev/zero > d/b.bin;"
        " head -c 80 /dev/zero > big.bin; head -c 50 /dev/zero > c.bin; ln -s a.txt link"
    )
    names = ["a.txt", "d/b.bin", "big.bin", "c.bin", "missing.txt", "link"]
    body = _ok(sandbox_client.post("/run", json={"shell": script, "outputs": names}))
    assert body["exit_code"] == 0, body
    out = body["outputs"]
    assert list(out) == names
    assert base64.b64decode(out["a.txt"]["content_b64"]) == b"hello"
    assert out["a.txt"]["size"] == 5 and out["a.txt"]["error"] is None
    assert out["a.txt"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert base64.b64decode(out["d/b.bin"]["content_b64"]) == bytes(50)
    # over the per-file cap (64): size and hash, no content, and why
    assert out["big.bin"]["content_b64"] is None and out["big.bin"]["size"] == 80
    assert out["big.bin"]["sha256"] == hashlib.sha256(bytes(80)).hexdigest()
    assert "per-file cap of 64" in out["big.bin"]["error"]
    # 5 + 50 returned: 50 more is over the total cap (100)
    assert out["c.bin"]["content_b64"] is None and out["c.bin"]["size"] == 50
    assert "100-byte total cap" in out["c.bin"]["error"]
    assert out["missing.txt"] == {
        "content_b64": None,
        "size": None,
        "sha256": None,
        "error": out["missing.txt"]["error"],
    }
    assert out["missing.txt"]["error"] and out["link"]["content_b64"] is None
    assert "symlink" in out["link"]["error"]
    receipt = _ok(sandbox_client.get(f"/receipts/{body['receipt_id']}"))
    listed = {o["path"]: o for o in receipt["artifacts"]["outputs"]}
    assert listed["a.txt"]["sha256"] == out["a.txt"]["sha256"]
    assert listed["big.bin"]["sha256"] == out["big.bin"]["sha256"]


def test_outputs_with_code(sandbox_client) -> None:
    code = "open('r.json', 'w').write('[1]')"
    body = _ok(sandbox_client.post("/run", json={"code": code, "outputs": ["r.json"]}))
    assert base64.b64decode(body["outputs"]["r.json"]["content_b64"]) == b"[1]"


def test_no_outputs_asked_none_returned(client) -> None:
    assert _ok(client.post("/run", json={"shell": "true"}))["outputs"] == {}


def test_outputs_on_the_process_backend_fail_with_a_receipt(tmp_path: Path) -> None:
    with api(config(tmp_path)) as client:
        body = _ok(client.post("/run", json={"shell": "true", "outputs": ["a"]}))
        assert body["exit_code"] == 125 and "no private workspace" in body["error"]
        assert body["outputs"]["a"]["content_b64"] is None
        health = _ok(client.get("/health"))["capabilities"]
    assert health["outputs"] is False and health["command"] is True


def test_health_states_the_output_caps(client, backend_name: str) -> None:
    caps = _ok(client.get("/health"))["capabilities"]
    assert caps["max_output_file_bytes"] == 64 and caps["max_outputs_bytes"] == 100
    assert caps["outputs"] is (backend_name != "process")
    assert caps["shell"] is True


# -- envelope and keys ----------------------------------------------------------------------
def test_envelope_and_key_of_a_signing_server(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with api(config(tmp_path, signing_key=key, token="t" * 20)) as client:
        auth = {"Authorization": "Bearer " + "t" * 20}
        body = _ok(client.post("/run", json={"shell": "echo hi"}, headers=auth))
        rid = body["receipt_id"]
        envelope = client.get(f"/receipts/{rid}/envelope", headers=auth)
        receipt = _ok(client.get(f"/receipts/{rid}", headers=auth))
        published = _ok(client.get("/keys", headers=auth))
        for path in (f"/receipts/{rid}/envelope", "/keys"):
            _error(client.get(path), 401, "unauthorized")
        gone = "exec-1000000000000-00000000000000000000"
        _error(client.get(f"/receipts/{gone}/envelope", headers=auth), 404, "not_found")
        _error(client.get("/receipts/nope/envelope", headers=auth), 400, "invalid_receipt_id")
    assert envelope.status_code == 200
    assert envelope.content == (tmp_path / "receipts" / f"{rid}.dsse.json").read_bytes()
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key(published["public_key"].encode())
    assert published["keyid"] == keyid(key.public_key()) == keyid(public)  # type: ignore[arg-type]
    assert published["algorithm"] == "ed25519"
    verified = verify_envelope(envelope.content, public, receipt=receipt)  # type: ignore[arg-type]
    assert verified.receipt["execution_id"] == rid


def test_no_envelope_or_key_without_signing(tmp_path: Path) -> None:
    with api(config(tmp_path)) as client:
        rid = _ok(client.post("/run", json={"shell": "true"}))["receipt_id"]
        assert "does not sign" in _error(
            client.get(f"/receipts/{rid}/envelope"), 404, "not_signing"
        )
        assert "does not sign" in _error(client.get("/keys"), 404, "not_signing")


def test_outputs_never_block_on_a_fifo_or_read_a_directory(sandbox_client) -> None:
    """An attacker's workspace: a FIFO (opening it for reading would block the server) and a
    directory named as outputs are refused with a reason; the run answers promptly."""
    body = _ok(
        sandbox_client.post(
            "/run",
            json={"shell": "mkfifo fifo; mkdir -p dir/sub", "outputs": ["fifo", "dir"]},
        )
    )
    out = body["outputs"]
    assert out["fifo"]["content_b64"] is None and "not a regular file" in out["fifo"]["error"]
    assert out["dir"]["content_b64"] is None and "not a regular file" in out["dir"]["error"]
