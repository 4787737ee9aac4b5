"""The library entry point: ``glasshouse.run`` / ``Runner`` and the one receipt pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import glasshouse
from glasshouse.backends.sandbox import probe as sandbox_probe
from glasshouse.core.execution import ExecutionSpec, Handle
from glasshouse.receipt.canonical import check_digest
from glasshouse.receipt.pipeline import ReceiptPipeline
from glasshouse.receipt.store import load_receipt


def test_import_glasshouse_is_cheap() -> None:
    """The public names load lazily: ``import glasshouse`` pulls in no backend or pydantic."""
    code = (
        "import sys, glasshouse; "
        "heavy = [m for m in ('pydantic', 'glasshouse.runner', 'glasshouse.backends') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_names_resolve() -> None:
    for name in glasshouse.__all__:
        assert getattr(glasshouse, name) is not None, name
    with pytest.raises(AttributeError):
        _ = glasshouse.no_such_name  # type: ignore[attr-defined]


def test_run_is_like_subprocess_run() -> None:
    result = glasshouse.run(
        ["sh", "-c", "echo out; echo err >&2; exit 3"], backend="process", profile="disabled"
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert check_digest(result.receipt)
    assert result.receipt["outcome"]["exit_code"] == 3
    assert result.receipt_model().execution_id == result.execution_id
    with pytest.raises(glasshouse.CommandFailed) as info:
        result.check_returncode()
    assert info.value.returncode == 3
    assert isinstance(info.value, glasshouse.GlasshouseError)


def test_timeout_is_data_not_an_exception() -> None:
    result = glasshouse.run(["sleep", "10"], backend="process", profile="disabled", timeout=0.3)
    assert result.returncode == 124 and result.timed_out
    assert result.receipt["outcome"]["timed_out"] is True


def test_command_not_found_is_127_with_a_receipt() -> None:
    result = glasshouse.run(["no-such-command-xyz"], backend="process", profile="disabled")
    assert result.returncode == 127
    assert "not found" in (result.error or "")
    assert check_digest(result.receipt)


def test_invalid_spec_still_gets_a_receipt() -> None:
    result = glasshouse.run([], backend="process", profile="disabled")
    assert result.returncode == 125
    assert "argv is empty" in (result.error or "")


def test_glasshouse_errors_raise() -> None:
    with pytest.raises(glasshouse.BackendUnavailable, match="unknown backend"):
        glasshouse.run(["true"], backend="no-such-backend", profile="disabled")


def test_receipt_path_and_signature(tmp_path: Path) -> None:
    from glasshouse.receipt.sign import generate_keypair, load_public_key, verify_envelope

    key, pub = generate_keypair(tmp_path / "keys")
    receipt_path = tmp_path / "out" / "receipt.json"
    result = glasshouse.run(
        ["echo", "signed"],
        backend="process",
        profile="disabled",
        signing_key=key,
        receipt_path=receipt_path,
    )
    assert result.receipt_path == receipt_path
    assert load_receipt(receipt_path).digest == result.receipt["digest"]
    assert result.envelope_path == tmp_path / "out" / "receipt.dsse.json"
    on_disk = json.loads(result.envelope_path.read_text())
    verified = verify_envelope(on_disk, load_public_key(pub), receipt=result.receipt)
    assert verified is not None


def test_receipts_dir_appends_to_a_verified_log(tmp_path: Path) -> None:
    from glasshouse.receipt.verify_log import verify_log

    pipeline = glasshouse.pipeline_for(log=tmp_path / "log")
    with glasshouse.Runner("process", profile="disabled", pipeline=pipeline) as runner:
        first = runner.run(["true"])
        second = runner.run(["false"])
    assert (first.receipt["sequence"], second.receipt["sequence"]) == (0, 1)
    assert second.receipt["previous_digest"] == first.receipt["digest"]
    assert second.receipt_path == tmp_path / "log" / f"{second.execution_id}.json"
    report = verify_log(tmp_path / "log")
    assert report.ok, report.summary()
    assert report.receipts == 2


def test_hooks_run_in_order_before_sealing() -> None:
    seen: list[str] = []

    def first(data: dict) -> dict:
        seen.append("first")
        return {**data, "code_hash": "a" * 64}

    def second(data: dict) -> dict:
        seen.append("second:" + str(data["code_hash"])[:1])
        return data

    runner = glasshouse.Runner(
        "process", profile="disabled", pipeline=ReceiptPipeline([first, second])
    )
    result = runner.run(["true"])
    assert seen == ["first", "second:a"]
    assert result.receipt["code_hash"] == "a" * 64
    assert check_digest(result.receipt)


def test_policy_and_redaction_through_the_pipeline(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "name: no-secrets-in-argv\nrules:\n  - id: no-echo\n    match: {exec: {path: '**/echo'}}\n"
    )
    result = glasshouse.run(
        ["echo", "--password", "hunter2"],
        backend="process",
        profile="host",
        redact=True,
        policy=policy,
    )
    text = json.dumps(result.receipt)
    assert "hunter2" not in text
    assert result.receipt["redaction"] is not None
    assert result.receipt["policy"]["policy"] == "no-secrets-in-argv"
    assert check_digest(result.receipt)


def test_streaming_callbacks_see_every_chunk() -> None:
    chunks: list[bytes] = []
    result = glasshouse.run(
        ["sh", "-c", "for i in 1 2 3; do echo $i; done"],
        backend="process",
        profile="disabled",
        on_stdout=chunks.append,
    )
    assert b"".join(chunks) == result.stdout == b"1\n2\n3\n"


class _BrokenBackend:
    """A backend whose start raises a non-Glasshouse exception (a bug): still a receipt."""

    name = "broken"
    isolation = "none"

    def prepare(self) -> None:
        pass

    def start(self, spec: ExecutionSpec, stdout=None, stderr=None) -> Handle:
        raise KeyError("bug in the backend")

    def release(self, handle: Handle) -> None: ...
    def wait(self, handle: Handle): ...
    def kill(self, handle: Handle, reason: str = "killed") -> None: ...
    def cleanup(self, handle: Handle) -> None: ...


def test_a_backend_bug_still_leaves_a_receipt() -> None:
    runner = glasshouse.Runner(_BrokenBackend(), profile="disabled")  # type: ignore[arg-type]
    result = runner.run(["true"])
    assert result.returncode == 125
    assert "KeyError" in (result.error or "")
    assert check_digest(result.receipt)
    assert result.receipt["execution"]["backend"] == "broken"


@pytest.mark.skipif(not sandbox_probe()[0], reason=f"sandbox: {sandbox_probe()[1]}")
def test_sandbox_run_with_files_and_outputs() -> None:
    result = glasshouse.run(
        ["sh", "-c", "tr a-z A-Z < in.txt > out.txt"],
        backend="sandbox",
        profile="disabled",
        files={"in.txt": "hello"},
        outputs=["out.txt"],
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.outputs == {"out.txt": b"HELLO"}
    assert result.receipt["execution"]["isolation"] == "namespaces"


def test_every_public_error_is_a_glasshouse_error() -> None:
    from glasshouse.policy import PolicyError
    from glasshouse.receipt.dsse import EnvelopeError
    from glasshouse.receipt.redact import RedactionConfigError
    from glasshouse.receipt.sign import KeyFileError, VerificationError
    from glasshouse.receipt.store import ReceiptError
    from glasshouse.training.export import ExportError

    for error in (
        PolicyError,
        EnvelopeError,
        RedactionConfigError,
        KeyFileError,
        VerificationError,
        ReceiptError,
        ExportError,
        glasshouse.ObserverUnavailable,
        glasshouse.BackendUnavailable,
        glasshouse.SpecError,
    ):
        assert issubclass(error, glasshouse.GlasshouseError), error
    assert ReceiptError is glasshouse.ReceiptError
