"""``--output`` files reach the host and the receipt: saved under the output directory at
their workspace path (atomically, never through a symlink, never outside it), each listed in
``artifacts.outputs`` with size and sha256, or with the reason it was not copied or saved;
``--file`` inputs are listed in ``artifacts.inputs``. End to end for every backend that
takes outputs (sandbox, gvisor, microvm), each skipped with the probed reason."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glasshouse.receipt.model import Receipt
from glasshouse.receipt.sign import subjects


def gh(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "glasshouse.cli", *args], cwd=cwd, capture_output=True, timeout=600
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_outputs(outputs: dict[str, bytes], directory: Path) -> dict[str, str | None]:
    from glasshouse.core.outputs import save_outputs  # imported late: this file also runs
    # (and fails) against the code from before outputs were saved

    return save_outputs(outputs, directory)


def mark_unsaved(data: dict, reasons: dict[str, str | None]) -> dict:
    from glasshouse.core.outputs import mark_unsaved

    return mark_unsaved(data, reasons)


# -- saving on the host -----------------------------------------------------------------


def test_saves_files_at_their_relative_path(tmp_path: Path) -> None:
    done = save_outputs({"a.txt": b"A", "deep/er/b.bin": b"\0" * 5}, tmp_path / "out")
    assert done == {"a.txt": None, "deep/er/b.bin": None}
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "out" / "deep" / "er" / "b.bin").read_bytes() == b"\0" * 5
    assert sorted(os.listdir(tmp_path / "out")) == ["a.txt", "deep"]  # no temp file left


def test_replaces_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old")
    assert save_outputs({"a.txt": b"new"}, tmp_path) == {"a.txt": None}
    assert (tmp_path / "a.txt").read_bytes() == b"new"


def test_never_follows_a_symlink_on_the_way(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sub").symlink_to(outside)
    done = save_outputs({"sub/x.txt": b"escape"}, target)
    assert "not a directory (a symlink is never followed)" in (done["sub/x.txt"] or "")
    assert list(outside.iterdir()) == []


def test_never_replaces_a_symlink_or_a_directory(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "target"
    target.mkdir()
    (target / "link.txt").symlink_to(victim)
    (target / "dir.txt").mkdir()
    done = save_outputs({"link.txt": b"x", "dir.txt": b"y"}, target)
    assert "is a symlink (not replaced)" in (done["link.txt"] or "")
    assert "not a regular file (not replaced)" in (done["dir.txt"] or "")
    assert victim.read_text() == "keep" and (target / "link.txt").is_symlink()


@pytest.mark.parametrize("name", ["../up.txt", "/abs.txt", "a//b", "./a", ""])
def test_refuses_names_that_leave_the_directory(tmp_path: Path, name: str) -> None:
    target = tmp_path / "target"
    done = save_outputs({name: b"x"}, target)
    assert "not a relative path" in (done[name] or "")
    assert not (tmp_path / "up.txt").exists()


def test_unsaved_outputs_are_marked_failed_in_the_receipt() -> None:
    data = {"artifacts": {"outputs": [
        {"path": "a", "status": "copied", "size": 1, "sha256": sha(b"a"), "reason": None},
        {"path": "b", "status": "skipped", "size": None, "sha256": None, "reason": "missing"},
    ]}}  # fmt: skip
    mark_unsaved(data, {"a": "the destination exists and is a symlink (not replaced)", "b": None})
    a, b = data["artifacts"]["outputs"]
    assert a["status"] == "failed" and a["sha256"] == sha(b"a")
    assert a["reason"] == "not saved: the destination exists and is a symlink (not replaced)"
    assert b["status"] == "skipped" and b["reason"] == "missing"


# -- end to end, per backend -----------------------------------------------------------

BACKENDS = [
    pytest.param("sandbox", "glasshouse.backends.sandbox", marks=pytest.mark.root, id="sandbox"),
    pytest.param(
        "gvisor", "glasshouse.backends.sandbox.gvisor", marks=pytest.mark.root, id="gvisor"
    ),
    pytest.param(
        "microvm", "glasshouse.backends.microvm", marks=[pytest.mark.vm, pytest.mark.slow],
        id="microvm",
    ),
]  # fmt: skip

SCRIPT = "echo hello > out.txt; mkdir -p sub; cat in.txt > sub/copy.txt"
#: a symlink to a host file: the sandboxes refuse it (in a VM, it would name the guest's file,
#: and the guest has no ``ln``: there "link" is simply missing)
LINK = "; ln -s /etc/hostname link"


@pytest.mark.parametrize(("backend", "probe"), BACKENDS)
def test_cli_output_reaches_the_host_and_the_receipt(
    backend: str, probe: str, tmp_path: Path
) -> None:
    ok, why = importlib.import_module(probe).probe()
    if not ok:
        pytest.skip(f"{backend}: {why}")
    (tmp_path / "in.txt").write_bytes(b"input bytes\n")
    p = gh(
        "run", "--backend", backend, "--profile", "disabled", "--file", "in.txt",
        "--output", "out.txt", "--output", "sub/copy.txt", "--output", "missing.txt",
        "--output", "link", "--", "sh", "-c", SCRIPT + ("" if backend == "microvm" else LINK),
        cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr.decode()
    assert (tmp_path / "out.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "sub" / "copy.txt").read_bytes() == b"input bytes\n"
    assert not (tmp_path / "missing.txt").exists() and not (tmp_path / "link").exists()
    data = json.loads((tmp_path / "receipt.json").read_text())
    Receipt.model_validate(data)
    art = data["artifacts"]
    assert art["inputs"] == [{"path": "in.txt", "size": 12, "sha256": sha(b"input bytes\n")}]
    out = {o["path"]: o for o in art["outputs"]}
    assert list(out) == ["out.txt", "sub/copy.txt", "missing.txt", "link"]
    assert out["out.txt"] == {
        "path": "out.txt", "status": "copied", "size": 6, "sha256": sha(b"hello\n"),
        "reason": None,
    }  # fmt: skip
    assert out["sub/copy.txt"]["sha256"] == sha(b"input bytes\n")
    for name in ("missing.txt", "link"):
        assert out[name]["status"] == "skipped" and out[name]["sha256"] is None
        assert out[name]["reason"]
    if backend != "microvm":  # the sandbox says exactly why (the guest gives no reason)
        assert out["missing.txt"]["reason"] == "missing"
        assert out["link"]["reason"] == "a symlink (not followed)"
    # each saved output is a subject of a signed statement
    names = {s["name"]: s["digest"]["sha256"] for s in subjects(data)}
    assert names["output:out.txt"] == sha(b"hello\n") and "output:link" not in names
    err = p.stderr.decode()
    assert "output out.txt -> out.txt (6 bytes)" in err
    assert "output missing.txt not saved: missing" in err or backend == "microvm"


@pytest.mark.root
def test_cli_output_dir_and_a_refused_destination(tmp_path: Path) -> None:
    from glasshouse.backends import sandbox

    ok, why = sandbox.probe()
    if not ok:
        pytest.skip(why)
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (dest / "b.txt").symlink_to(victim)
    p = gh(
        "run", "--backend", "sandbox", "--profile", "disabled", "--output-dir", "dest",
        "--output", "a.txt", "--output", "b.txt",
        "--", "sh", "-c", "echo a > a.txt; echo b > b.txt",
        cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr.decode()
    assert (dest / "a.txt").read_text() == "a\n" and not (tmp_path / "a.txt").exists()
    assert victim.read_text() == "keep"
    out = {o["path"]: o for o in json.loads((tmp_path / "receipt.json").read_text())[
        "artifacts"]["outputs"]}  # fmt: skip
    assert out["a.txt"]["status"] == "copied"
    assert out["b.txt"]["status"] == "failed" and out["b.txt"]["sha256"] == sha(b"b\n")
    assert "symlink (not replaced)" in out["b.txt"]["reason"]
    assert b"output b.txt not saved" in p.stderr


def test_process_backend_lists_requested_outputs_with_the_reason(tmp_path: Path) -> None:
    p = gh("run", "--profile", "disabled", "--output", "x.txt", "--", "true", cwd=tmp_path)
    assert p.returncode == 125
    (entry,) = json.loads((tmp_path / "receipt.json").read_text())["artifacts"]["outputs"]
    assert entry["path"] == "x.txt" and entry["status"] == "skipped"
    assert "no private workspace" in entry["reason"]
