"""The server and its receipt store: no run starts while a receipt could not be stored.

While the receipts directory cannot write (full disk, I/O errors) ``/run`` answers 503
``receipt_store_unavailable`` without running anything and ``/health`` says why; once the
store writes again the next run gets the next sequence number and the log verifies.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from fs_helpers import fill, small_tmpfs
from server_helpers import api, config, server_process

from glasshouse.receipt.verify_log import verify_log

_ARGS = ["--backend", "process", "--allow-unsandboxed", "--profile", "disabled"]


def _marking(marker: Path) -> dict[str, Any]:
    """A run that leaves ``marker`` on the host (process backend: unsandboxed) if it runs."""
    return {"code": f"open({str(marker)!r}, 'w').write('ran')"}


def _rejected(metrics_text: str) -> int:
    for line in metrics_text.splitlines():
        if line.startswith('glasshouse_runs_rejected_total{reason="receipt_store_unavailable"}'):
            return int(line.split()[-1])
    return 0


def _runs(metrics_text: str) -> int:
    return sum(
        int(line.split()[-1])
        for line in metrics_text.splitlines()
        if line.startswith("glasshouse_runs_total{")
    )


def _assert_refused(response: httpx.Response, marker: Path) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "receipt_store_unavailable"
    assert "receipt store" in error["message"]
    assert response.headers.get("retry-after")
    assert not marker.exists(), "a run started although its receipt could not be stored"


def test_io_errors_refuse_runs_until_the_store_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync of the receipts directory's files fails with EIO: the run in flight answers
    500 (its append undone), later runs are refused with 503 and never start; when fsync
    works again the chain resumes at the next sequence."""
    cfg = config(tmp_path)
    receipts = str(cfg.receipts_dir)
    broken = [False]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if broken[0] and os.readlink(f"/proc/self/fd/{fd}").startswith(receipts):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with api(cfg) as client:
        first = client.post("/run", json={"code": "print(1)"})
        assert first.status_code == 200, first.text
        broken[0] = True
        lost = client.post("/run", json={"code": "print(2)"})
        assert lost.status_code == 500
        assert lost.json()["error"]["code"] == "receipt_write_failed"
        health = client.get("/health").json()
        assert health["status"] == "receipt_store_unavailable"
        assert health["receipt_store"]["writable"] is False
        assert "Input/output error" in health["receipt_store"]["error"]
        marker = tmp_path / "ran"
        _assert_refused(client.post("/run", json=_marking(marker)), marker)
        assert _rejected(client.get("/metrics").text) == 1
        broken[0] = False
        again = client.post("/run", json=_marking(marker))
        assert again.status_code == 200, again.text
        assert marker.exists()
        receipt = client.get(f"/receipts/{again.json()['receipt_id']}").json()
        before = client.get(f"/receipts/{first.json()['receipt_id']}").json()
        assert (receipt["sequence"], receipt["previous_digest"]) == (1, before["digest"])
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["receipt_store"]["writable"] is True
    report = verify_log(cfg.receipts_dir)
    assert report.ok, [str(p) for p in report.problems]


def test_a_full_receipt_disk_refuses_runs_then_resumes(tmp_path: Path) -> None:
    """A real server whose receipts directory is a small tmpfs: filled, /run answers 503
    and runs nothing; space freed, the next run succeeds and the log verifies."""
    with (
        small_tmpfs(tmp_path / "receipts", "4m") as receipts,
        server_process(_ARGS, tmp_path) as server,
    ):
        assert server.receipts == receipts
        first = httpx.post(server.url + "/run", json={"code": "print(1)"}, timeout=60)
        assert first.status_code == 200, first.text
        filler = fill(receipts)
        marker = tmp_path / "ran"
        _assert_refused(httpx.post(server.url + "/run", json=_marking(marker), timeout=60), marker)
        health = httpx.get(server.url + "/health", timeout=10).json()
        assert health["status"] == "receipt_store_unavailable"
        assert health["receipt_store"]["free_bytes"] == 0
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert _runs(metrics) == 1 and _rejected(metrics) == 1
        filler.unlink()
        again = httpx.post(server.url + "/run", json=_marking(marker), timeout=60)
        assert again.status_code == 200, again.text
        assert marker.exists()
        stored = httpx.get(server.url + f"/receipts/{again.json()['receipt_id']}", timeout=10)
        assert stored.json()["sequence"] == 1
        assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"
        server.stop()
        report = verify_log(receipts)
        assert report.ok, [str(p) for p in report.problems]


def test_a_receipt_the_index_cannot_take_is_still_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLite index is a cache: its failure after a stored append is no lost receipt
    (200, not 500), and the row is added with the next receipt."""
    with api(config(tmp_path)) as client:
        index = client.runner.index
        real_add = index.add
        calls = [0]

        def add(data: dict[str, Any], owner: str | None = None) -> None:
            calls[0] += 1
            if calls[0] == 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_add(data, owner)

        monkeypatch.setattr(index, "add", add)
        first = client.post("/run", json={"code": "print(1)"})
        assert first.status_code == 200, first.text
        assert client.get(f"/receipts/{first.json()['receipt_id']}").status_code == 200
        second = client.post("/run", json={"code": "print(2)"})
        assert second.status_code == 200, second.text
        listed = [r["id"] for r in client.get("/receipts").json()["receipts"]]
        assert listed == [second.json()["receipt_id"], first.json()["receipt_id"]]
