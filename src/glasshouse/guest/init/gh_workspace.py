"""The request's fields, checked, and the workspace both ways: the host's files into
/work before the run, the captured streams and the requested output files into the
result after it.

The request comes from the host and is trusted, but it is still read defensively: a bad
one gets a result that says what is wrong (``ValueError``), never a crashed init. Only
built-in modules at import."""

from __future__ import annotations

import os
from _sha256 import sha256

import gh_transport as T

WORKSPACE = "/work"
DEFAULT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8"}
#: Guest events kept when the request asks for events without a cap.
DEFAULT_EVENTS_CAP = 10000


def parse_request(req: dict) -> dict:
    """The request's fields with their defaults: ``argv``, ``env``, ``cwd`` (absolute),
    ``stdin`` (bytes), ``limits``, ``output_bytes``, ``outputs`` (names),
    ``outputs_bytes``, ``events_cap`` (None: no guest events asked for)."""
    if req.get("v") != 1:
        raise ValueError(f"unsupported request version {req.get('v')!r}")
    argv = req.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    env = req.get("env")
    if env is not None and not isinstance(env, dict):
        raise ValueError("env must be an object or null")
    env = dict(DEFAULT_ENV) if env is None else {str(k): str(v) for k, v in env.items()}
    cwd = req.get("cwd") or WORKSPACE
    if not isinstance(cwd, str):
        raise ValueError("cwd must be a string")
    if not cwd.startswith("/"):
        cwd = os.path.join(WORKSPACE, cwd)
    outputs = req.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(n, str) for n in outputs):
        raise ValueError("outputs must be a list of names")
    limits = req.get("limits") or {}
    if not isinstance(limits, dict):
        raise ValueError("limits must be an object")
    return {
        "argv": argv,
        "env": env,
        "cwd": cwd,
        "stdin": T.unb64(req.get("stdin") or "", "stdin", T.MAX_REQUEST),
        "limits": limits,
        "output_bytes": int(req.get("output_bytes", 1 << 20)),
        "outputs": outputs,
        "outputs_bytes": int(req.get("outputs_bytes", 0)),
        "events_cap": int(req.get("events_cap") or DEFAULT_EVENTS_CAP)
        if req.get("events")
        else None,
    }


def workspace_path(name: object, root: str = WORKSPACE) -> str:
    """``root/name`` for a workspace name that stays inside ``root``: relative, no ``..``
    out of it, no symlink out of it. Anything else is a ``ValueError``."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith("/"):
        raise ValueError(f"bad workspace path {name!r}")
    path = os.path.join(root, name)
    norm = os.path.normpath(path)
    if not norm.startswith(root.rstrip("/") + "/") or os.path.realpath(path) != norm:
        raise ValueError(f"bad workspace path {name!r}")
    return path


def write_files(files: object, root: str = WORKSPACE, owner: tuple[int, int] | None = None) -> None:
    """The request's ``{name: base64}`` files into the workspace, owned by ``owner`` (uid,
    gid) if given (a run as ``nobody`` may then change them, as its own)."""
    if not files:
        return
    if not isinstance(files, dict):
        raise ValueError("files must be an object")
    for name, data in files.items():
        path = workspace_path(name, root)
        parent = os.path.dirname(path)
        made = []
        while not os.path.isdir(parent):
            made.append(parent)
            parent = os.path.dirname(parent)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(T.unb64(data, name, T.MAX_REQUEST))
        if owner is not None:
            for p in [path, *made]:
                os.chown(p, *owner)


def read_outputs(names: list, budget: int, root: str = WORKSPACE) -> dict:
    """The requested output files (base64), skipping missing ones and bad names, and
    stopping at the first that would go over ``budget`` bytes in all."""
    outputs = {}
    for name in names:
        try:
            with open(workspace_path(name, root), "rb") as f:
                data = f.read(budget + 1)
        except (OSError, ValueError):
            continue
        if len(data) > budget:
            break
        budget -= len(data)
        outputs[name] = T.b64(data)
    return outputs


def capture(fd: int, cap: int, sent: int = 0) -> dict:
    """A captured stream (a file the command wrote from offset 0): full size and sha256,
    and its first ``cap`` bytes but the ``sent`` ones the host already has (streamed)."""
    h = sha256()
    kept = bytearray()
    size = 0
    # pread until a short read: one syscall for an empty or small stream (the old
    # fstat+lseek+read+read cost four emulated syscalls on kvm_pvm).
    while True:
        chunk = os.pread(fd, 1 << 20, size)
        h.update(chunk)
        lo, hi = max(sent, size), min(cap, size + len(chunk))
        if lo < hi:
            kept += chunk[lo - size : hi - size]
        size += len(chunk)
        if len(chunk) < 1 << 20:
            break
    stream = {
        "data": T.b64(bytes(kept)),
        "size": size,
        "sha256": h.hexdigest(),
        "truncated": size > cap,
    }
    if sent:
        stream["sent"] = sent
    return stream


def empty_stream() -> dict:
    return {"data": "", "size": 0, "sha256": sha256(b"").hexdigest(), "truncated": False}


def error_result(exc: BaseException) -> dict:
    """The answer to a request the init could not run."""
    return {
        "v": 1,
        "error": f"guest init: {type(exc).__name__}: {exc}"[:4000],
        "stdout": empty_stream(),
        "stderr": empty_stream(),
    }
