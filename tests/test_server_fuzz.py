"""Fuzz the server's OpenAPI schema with schemathesis: valid and invalid requests generated
from the schema; no input may cause a 5xx, and answers must match the documented schema.

Runs go to the most real backend this host has: the bubblewrap sandbox when its probe passes,
else the process backend (with ``allow_unsandboxed``, as a server must be told), and the fake
backend only when neither can run. ``test_fuzz_backend`` says which (printed, recorded as the
``fuzz_backend`` property, and an xfail with the reasons under ``-ra`` when it is the fake).
Bounded by ``max_examples`` per operation so the whole fuzz takes seconds. The number of cases
is printed at the end (``pytest -s``) and asserted to be non-trivial.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402
from server_helpers import config  # noqa: E402

from glasshouse.backends import create  # noqa: E402
from glasshouse.server import Runner, create_app  # noqa: E402

MAX_EXAMPLES = 60
CASES: dict[str, int] = {}


def _pick_backend() -> tuple[str, str]:
    """The most real backend this host can run the fuzzed requests on, and why that one."""
    try:
        from glasshouse.backends.sandbox import probe

        ok, why = probe()
    except Exception as exc:
        ok, why = False, f"probe failed: {exc}"
    if ok:
        return "sandbox", f"the bubblewrap sandbox probe passed ({why})"
    try:
        create("process").prepare()
    except Exception as exc:
        return "fake", f"sandbox: {why}; process: {exc}"
    return "process", f"the process backend, unsandboxed (sandbox: {why})"


BACKEND, WHY = _pick_backend()


# Built at import: schemathesis parametrizes from a loaded schema (its fixture loader does
# not work with this pytest); the runner is closed by the module fixture below.
_TMP = Path(tempfile.mkdtemp(prefix="glasshouse-fuzz-"))
atexit.register(shutil.rmtree, _TMP, True)  # also when collected but deselected
_RUNNER = Runner(config(_TMP, BACKEND, max_concurrency=2, queue=64))
_APP = create_app(_RUNNER, manage_runner=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _runner_lifecycle() -> Iterator[None]:
    _RUNNER.start()
    yield
    _RUNNER.close()
    shutil.rmtree(_TMP, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: object) -> None:
    key = f"{case.method} {case.path}"  # type: ignore[attr-defined]
    CASES[key] = CASES.get(key, 0) + 1
    # Every check but positive_data_acceptance: the generator does not honour
    # ``propertyNames`` (it sends "" as a file name, which the schema forbids and we reject).
    response = case.call()  # type: ignore[attr-defined]
    if response.status_code == 501:  # by design: sessions on a backend that has none
        assert response.json()["error"]["code"] == "sessions_unavailable", response.text
        assert BACKEND != "sandbox", "the sandbox backend has sessions"
        return
    case.validate_response(response, excluded_checks=[positive_data_acceptance])  # type: ignore[attr-defined]


def test_fuzz_backend(record_property: Callable[[str, object], None]) -> None:
    record_property("fuzz_backend", BACKEND)
    print(f"\nschemathesis fuzzed the {BACKEND} backend: {WHY}")
    assert _RUNNER.backend_name == BACKEND  # the server really used it (no silent fallback)
    if BACKEND == "fake":
        pytest.xfail(f"fuzzed against the fake backend only: {WHY}")


def test_fuzz_count() -> None:
    total = sum(CASES.values())
    cases = ", ".join(f"{k}: {v}" for k, v in CASES.items())
    print(f"\nschemathesis cases on the {BACKEND} backend: {total} ({cases})")
    assert "POST /run" in CASES and total >= 50
