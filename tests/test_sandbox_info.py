"""What a bubblewrap sandbox shows of its host (issue 12, item 7), read from inside a real one.

Hidden: the host's boot command line and boot id (empty read-only files over them). Shown, and
documented in docs/threat-model.md: host paths in /proc/self/mountinfo, the run's host uid in
tmpfs options and, with ``network=True``, the host's abstract unix sockets (a run connects
to one; without a network the same probe cannot, nor can gVisor's even with one).
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from glasshouse.backends import gvisor as gvisor_mod
from glasshouse.backends import sandbox as sandbox_mod
from glasshouse.backends.sandbox import GVisorBackend, SandboxBackend
from glasshouse.core.execution import ExecutionSpec
from glasshouse.engine import Engine

pytestmark = pytest.mark.root

_HIDDEN = ("/proc/cmdline", "/proc/sys/kernel/random/boot_id")


@pytest.fixture(scope="module")
def bwrap() -> SandboxBackend:
    ok, why = sandbox_mod.probe()
    if not ok:
        pytest.skip(why)
    backend = SandboxBackend()
    backend.prepare()
    return backend


@pytest.fixture(scope="module")
def gvisor() -> GVisorBackend:
    ok, why = gvisor_mod.probe()
    if not ok:
        pytest.skip(why)
    backend = GVisorBackend()
    backend.prepare()
    return backend


def _inside(backend: SandboxBackend, code: str, **kw: object) -> str:
    spec = ExecutionSpec(argv=["python3", "-c", code], timeout=60, **kw)  # type: ignore[arg-type]
    result = Engine(backend).run(spec).result
    assert result.exit_code == 0, (result.error, result.stderr.data)
    return result.stdout.data.decode()


def test_host_boot_facts_read_empty_inside(bwrap: SandboxBackend) -> None:
    code = (
        "import json, os\n"
        f"paths = {list(_HIDDEN)!r}\n"
        "out = {}\n"
        "for p in paths:\n"
        "    st = os.stat(p)\n"
        "    out[p] = [open(p).read(), oct(st.st_mode & 0o777)]\n"
        "    try:\n"
        "        open(p, 'w')\n"
        "        out[p].append('writable')\n"
        "    except OSError as exc:\n"
        "        out[p].append(exc.errno)\n"
        "print(json.dumps(out))\n"
    )
    seen = json.loads(_inside(bwrap, code))
    for path in _HIDDEN:
        host = Path(path).read_text()
        assert host.strip(), f"the host's {path} is empty: nothing to hide"
        content, mode, write = seen[path]
        assert content == "", f"{path} shows the host's: {content!r}"
        assert mode == "0o444" and write != "writable", seen[path]


@pytest.fixture()
def abstract_listener() -> Iterator[bytes]:
    name = f"\0glasshouse-test-{secrets.token_hex(6)}".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(4)
        yield name


def test_abstract_unix_sockets_follow_the_network_namespace(
    bwrap: SandboxBackend, abstract_listener: bytes
) -> None:
    code = _connect(abstract_listener)
    assert _inside(bwrap, code).startswith("refused")
    # Documented, not hidden: --network shares the host's network namespace, and with it
    # every abstract unix socket bound on the host.
    assert _inside(bwrap, code, network=True).strip() == "connected"


def test_gvisor_keeps_its_own_abstract_sockets_even_with_network(
    gvisor: GVisorBackend, abstract_listener: bytes
) -> None:
    """gVisor's Sentry implements unix sockets itself: the host's stay out of reach."""
    assert _inside(gvisor, _connect(abstract_listener), network=True).startswith("refused")


def _connect(name: bytes) -> str:
    return (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "try:\n"
        f"    s.connect({name!r})\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
