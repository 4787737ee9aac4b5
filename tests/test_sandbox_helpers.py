"""The sandbox backend's pure helpers, on any host (no root, no bwrap, no runsc): the gVisor
OCI config, the status-pipe JSON reader and the inside/host path mapping. The real sandboxes
that use them are tested in test_sandbox.py (root)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from glasshouse.backends._workspace import Workspace
from glasshouse.backends.sandbox import HOSTNAME, INIT_PATH, INSIDE_WORKSPACE, SandboxRun
from glasshouse.backends.sandbox._layout import _host_view, _inside_cwd
from glasshouse.backends.sandbox._run import _json_docs
from glasshouse.backends.sandbox.gvisor import _oci_config
from glasshouse.core.execution import ExecutionSpec, Limits

_CAPS = ("bounding", "effective", "permitted", "inheritable")


def _config(tmp_path: Path, init: Path | None = None, **spec: Any) -> dict[str, Any]:
    run = SandboxRun(
        workspace=Workspace(tmp_path / "ws", 70001, 70002), host_uid=70001, host_gid=70002
    )
    return _oci_config(
        ExecutionSpec(argv=["python3", "-c", "1"], **spec),
        ["python3", "-c", "1"],
        {"PATH": "/usr/bin", "HOME": INSIDE_WORKSPACE},
        "/workspace/sub",
        run,
        tmp_path / "rootfs",
        init,
        tmp_path / "status",
    )


def _mounts(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in config["mounts"]}


def test_oci_process_runs_unprivileged(tmp_path: Path) -> None:
    process = _config(tmp_path)["process"]
    assert process["user"] == {"uid": 70001, "gid": 70002}
    assert process["args"] == ["python3", "-c", "1"] and process["cwd"] == "/workspace/sub"
    assert process["env"] == ["PATH=/usr/bin", f"HOME={INSIDE_WORKSPACE}"]
    assert process["capabilities"] == {k: [] for k in _CAPS}  # no capability at all
    assert process["noNewPrivileges"] is True and process["terminal"] is False


def test_oci_root_is_read_only_and_hostname_fixed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config["root"] == {"path": str(tmp_path / "rootfs"), "readonly": True}
    assert config["hostname"] == HOSTNAME


@pytest.mark.parametrize("network", [False, None, True])
def test_oci_namespaces_follow_the_network_switch(tmp_path: Path, network: bool | None) -> None:
    kinds = [n["type"] for n in _config(tmp_path, network=network)["linux"]["namespaces"]]
    assert set(kinds) >= {"pid", "ipc", "uts", "mount"} and len(kinds) == len(set(kinds))
    assert ("network" in kinds) is (not network)  # only an explicit network=True shares it


def test_oci_rlimits_from_limits(tmp_path: Path) -> None:
    limits = Limits(cpu_s=2.5, file_size_bytes=1 << 20, pids=16)
    rlimits = {
        r["type"]: (r["soft"], r["hard"])
        for r in _config(tmp_path, limits=limits)["process"]["rlimits"]
    }
    assert rlimits == {
        "RLIMIT_CORE": (0, 0),
        "RLIMIT_CPU": (3, 4),  # rounded up; hard one above soft (SIGXCPU first, then SIGKILL)
        "RLIMIT_FSIZE": (1 << 20, 1 << 20),
        "RLIMIT_NPROC": (16, 16),  # gVisor's own kernel counts the sandbox's processes
    }


def test_oci_no_limits_means_only_no_core_dumps(tmp_path: Path) -> None:
    rlimits = _config(tmp_path)["process"]["rlimits"]
    assert rlimits == [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]


def test_oci_mounts(tmp_path: Path) -> None:
    mounts = _mounts(_config(tmp_path, limits=Limits(memory_bytes=64 << 20)))
    assert set(mounts) == {"/proc", "/dev", "/usr", "/tmp", INSIDE_WORKSPACE}
    assert mounts["/usr"]["source"] == "/usr" and "ro" in mounts["/usr"]["options"]
    assert {"nosuid", "nodev"} <= set(mounts["/usr"]["options"])
    assert mounts["/tmp"]["type"] == "tmpfs" and f"size={64 << 20}" in mounts["/tmp"]["options"]
    workspace = mounts[INSIDE_WORKSPACE]
    assert workspace["source"] == str(tmp_path / "ws") and "rw" in workspace["options"]
    assert {"nosuid", "nodev"} <= set(workspace["options"])


def test_oci_default_tmp_size(tmp_path: Path) -> None:
    options = _mounts(_config(tmp_path))["/tmp"]["options"]
    assert [o for o in options if o.startswith("size=")] == [f"size={256 << 20}"]


def test_oci_init_and_status_mounts(tmp_path: Path) -> None:
    mounts = _mounts(_config(tmp_path, init=tmp_path / "glasshouse-init"))
    init = mounts[INIT_PATH]
    assert init["source"] == str(tmp_path / "glasshouse-init") and "ro" in init["options"]
    (status,) = [
        m
        for d, m in mounts.items()
        if d not in (INIT_PATH, "/proc", "/dev", "/usr", "/tmp", INSIDE_WORKSPACE)
    ]
    assert status["source"] == str(tmp_path / "status")
    assert "rw" in status["options"] and "noexec" in status["options"]


@pytest.mark.parametrize(
    ("data", "docs"),
    [
        (b"", []),
        (b'{"child-pid": 5}', [{"child-pid": 5}]),
        (b'{"a": 1}\n{"b": 2}\n', [{"a": 1}, {"b": 2}]),
        (b'{"a": 1}{"b": 2}', [{"a": 1}, {"b": 2}]),  # concatenated, no separator
        (b'  \n{"a": 1}  \n ', [{"a": 1}]),
        (b'{"a": 1}\n{"b": ', [{"a": 1}]),  # a truncated tail: what came before survives
        (b'{"a": 1} garbage {"b": 2}', [{"a": 1}]),  # stops at the first malformed one
        (b'[1, 2]\n{"a": 1}', [{"a": 1}]),  # non-objects skipped
        (b'{"s": "\xff"}', [{"s": "\ufffd"}]),  # invalid UTF-8 replaced, not fatal
    ],
)
def test_json_docs(data: bytes, docs: list[dict[str, Any]]) -> None:
    assert _json_docs(data) == docs


@pytest.mark.parametrize(
    ("cwd", "inside"),
    [
        (None, INSIDE_WORKSPACE),
        ("", INSIDE_WORKSPACE),
        ("sub/dir", f"{INSIDE_WORKSPACE}/sub/dir"),
        ("sub/../other/", f"{INSIDE_WORKSPACE}/other"),
        ("/tmp/x", "/tmp/x"),
        ("/workspace/./a", f"{INSIDE_WORKSPACE}/a"),
    ],
)
def test_inside_cwd(cwd: str | None, inside: str) -> None:
    assert _inside_cwd(cwd) == inside


@pytest.mark.parametrize(
    ("inside", "host"),
    [
        (INSIDE_WORKSPACE, "WS/"),
        (f"{INSIDE_WORKSPACE}/a/b", "WS/a/b"),
        (f"{INSIDE_WORKSPACE}/a/../b", "WS/b"),
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("/bin/sh", "/usr/bin/sh"),  # the merged-/usr links
        ("/sbin/x", "/usr/sbin/x"),
        ("/lib/x.so", "/usr/lib/x.so"),
        ("/lib64/ld.so", "/usr/lib64/ld.so"),
        ("/etc/passwd", None),  # the sandbox's own /etc, not the host's
        ("/tmp/x", None),
        ("/workspacex/a", None),  # a sibling with the same prefix is not the workspace
        ("/bin", None),  # the link itself, not a path under it
    ],
)
def test_host_view(tmp_path: Path, inside: str, host: str | None) -> None:
    got = _host_view(inside, tmp_path)
    if host is None:
        assert got is None
    elif host.startswith("WS/"):
        assert got == tmp_path / host[3:]
    else:
        assert got == Path(host)
