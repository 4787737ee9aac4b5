"""The warm pool over the real bubblewrap sandbox: slots made ahead, each used once, stale
ones recycled, all released at close; and a backend that cannot prewarm runs cold."""

from __future__ import annotations

from pathlib import Path

import pytest
from _support import until
from server_helpers import api, config, require_backend

from glasshouse.backends import create
from glasshouse.core.execution import Prewarmable
from glasshouse.server._pool import WarmPool


@pytest.fixture(scope="module")
def sandbox():
    require_backend("sandbox", "glasshouse.backends.sandbox")
    backend = create("sandbox")
    backend.prepare()
    return backend


def test_pool_fills_hands_out_once_and_releases(sandbox) -> None:
    assert isinstance(sandbox, Prewarmable)
    pool = WarmPool(sandbox, size=2, max_age_s=60)
    pool.start()
    try:
        until(lambda: pool.ready() == 2, what="two slots ready")
        slot = pool.take()
        assert slot is not None and not slot.used
        until(lambda: pool.ready() == 2, what="the taken slot replaced")
        assert pool.stats()["hits"] == 1
        workspaces = [s.workspace.path for _, s in list(pool._ready)]
        assert all(p.is_dir() for p in workspaces)
        sandbox.discard(slot)
        assert not slot.workspace.path.exists()
    finally:
        pool.close()
    assert all(not p.exists() for p in workspaces)  # ready slots released at close
    assert pool.ready() == 0


def test_stale_slots_are_recycled(sandbox) -> None:
    pool = WarmPool(sandbox, size=1, max_age_s=0.2)
    pool.start()
    try:
        until(lambda: pool.ready() == 1, what="one slot ready")
        first = pool._ready[0][1]
        until(lambda: first.closed, what="the slot discarded once older than max_age_s")
        assert pool.stats()["recycled"] >= 1 and not first.used
        assert not first.workspace.path.exists()
        until(lambda: pool.ready() == 1, what="the stale slot replaced")
    finally:
        pool.close()


def test_pool_waits_while_the_host_is_saturated(sandbox) -> None:
    # Every run slot taken: a slot made now would only steal CPU from the runs in flight.
    # Evidence the pool decided, not just that time passed: it asked `busy` again and again,
    # and each time (it could have filled in between) nothing had been made.
    saturated, seen = [True], []

    def busy() -> bool:
        seen.append(pool.ready())
        return saturated[0]

    pool = WarmPool(sandbox, size=1, max_age_s=60, busy=busy)
    pool.start()
    try:
        until(lambda: len(seen) >= 5, timeout=10, what="the pool to check the host's load 5x")
        assert set(seen) == {0} and pool.ready() == 0 and pool.stats()["failures"] == 0
        saturated[0] = False
        until(lambda: pool.ready() == 1, what="a slot once the host has room")
    finally:
        pool.close()


def test_server_runs_from_the_pool(sandbox, tmp_path: Path) -> None:
    with api(config(tmp_path, "sandbox", pool_size=2)) as client:
        runner = client.runner
        assert runner.pool is not None
        for i in range(3):
            until(lambda: runner.pool.ready() == 2, what="the server's pool filled")
            body = client.post("/run", json={"code": f"print({i})", "files": {"f": "x"}}).json()
            assert body["stdout"] == f"{i}\n", body
        health = client.get("/health").json()
        assert health["capabilities"]["warm_pool"] is True
        assert health["pool"]["hits"] == 3 and health["pool"]["size"] == 2
        assert "glasshouse_pool_ready" in client.get("/metrics").text


def test_a_live_slot_runs_code_in_its_waiting_interpreter(sandbox, tmp_path: Path) -> None:
    """The default for sandbox: a slot is a live sandbox with python3 up; a code run is
    handed to it, a command is forked in it, a run that does not fit starts cold."""
    with api(config(tmp_path, "sandbox", pool_size=1)) as client:
        runner = client.runner
        kinds = []
        for body in (
            {
                "code": "import sys; print(sys.argv, open('f').read())",
                "files": {"f": "x"},
                "outputs": ["f"],
            },
            {"command": ["sh", "-c", "echo $HOME"]},
            {"code": "print(1)", "network": True},
        ):
            until(lambda: runner.pool.ready() == 1, what="a live slot ready")
            answer = client.post("/run", json=body).json()
            receipt = client.get(f"/receipts/{answer['receipt_id']}").json()
            kinds.append("warm" in receipt["environment"]["sandbox"]["details"])
            assert answer["exit_code"] == 0, answer
            if "files" in body:  # as python3 -c sees itself; outputs come back
                assert answer["stdout"] == "['-c'] x\n" and answer["outputs"], answer
        assert kinds == [True, True, False]


def test_backend_without_prewarm_runs_cold(tmp_path: Path) -> None:
    with api(config(tmp_path, "process", pool_size=4)) as client:
        assert client.runner.pool is None
        health = client.get("/health").json()
        assert health["capabilities"]["warm_pool"] is False
        assert "cannot prewarm" in health["pool"]["note"]
        assert client.post("/run", json={"code": "print(1)"}).json()["stdout"] == "1\n"
