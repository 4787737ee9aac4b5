"""The warm pool over the real bubblewrap sandbox: slots made ahead, each used once, stale
ones recycled, all released at close; and a backend that cannot prewarm runs cold."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
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


def _until(predicate: Callable[[], bool], limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_pool_fills_hands_out_once_and_releases(sandbox) -> None:
    assert isinstance(sandbox, Prewarmable)
    pool = WarmPool(sandbox, size=2, max_age_s=60)
    pool.start()
    try:
        _until(lambda: pool.ready() == 2)
        slot = pool.take()
        assert slot is not None and not slot.used
        _until(lambda: pool.ready() == 2)  # replaced
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
        _until(lambda: pool.ready() == 1)
        first = pool._ready[0][1]
        _until(lambda: first.closed)  # discarded by the pool once older than max_age_s
        assert pool.stats()["recycled"] >= 1 and not first.used
        assert not first.workspace.path.exists()
        _until(lambda: pool.ready() == 1)  # and replaced
    finally:
        pool.close()


def test_pool_waits_while_the_host_is_saturated(sandbox) -> None:
    # Every run slot taken: a slot made now would only steal CPU from the runs in flight.
    saturated = [True]
    pool = WarmPool(sandbox, size=1, max_age_s=60, busy=lambda: saturated[0])
    pool.start()
    try:
        time.sleep(0.5)
        assert pool.ready() == 0 and pool.stats()["failures"] == 0
        saturated[0] = False
        _until(lambda: pool.ready() == 1)
    finally:
        pool.close()


def test_server_runs_from_the_pool(sandbox, tmp_path: Path) -> None:
    with api(config(tmp_path, "sandbox", pool_size=2)) as client:
        runner = client.runner
        assert runner.pool is not None
        _until(lambda: runner.pool.ready() == 2)
        for i in range(3):
            body = client.post("/run", json={"code": f"print({i})", "files": {"f": "x"}}).json()
            assert body["stdout"] == f"{i}\n", body
        health = client.get("/health").json()
        assert health["capabilities"]["warm_pool"] is True
        assert health["pool"]["hits"] == 3 and health["pool"]["size"] == 2
        assert "glasshouse_pool_ready" in client.get("/metrics").text


def test_backend_without_prewarm_runs_cold(tmp_path: Path) -> None:
    with api(config(tmp_path, "process", pool_size=4)) as client:
        assert client.runner.pool is None
        health = client.get("/health").json()
        assert health["capabilities"]["warm_pool"] is False
        assert "cannot prewarm" in health["pool"]["note"]
        assert client.post("/run", json={"code": "print(1)"}).json()["stdout"] == "1\n"
