"""glasshouse-init, the sandbox's PID 1: built once from its C source into the cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path


class InitUnavailable(Exception):
    """glasshouse-init could not be built (no C compiler) and is not in the cache."""


_INIT_SOURCE = Path(__file__).with_name("glasshouse-init.c")


_init_lock = threading.Lock()


def _cache_dir() -> Path:
    env = os.environ.get("GLASSHOUSE_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/glasshouse")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glasshouse"


def build_init(cache: Path | None = None) -> Path:
    """The glasshouse-init binary for this source, compiled once into the cache.

    Keyed by the source's hash; a static binary when libc.a is there (no loader work at each
    sandbox start), else dynamic. Raises InitUnavailable when it can be neither found nor built.
    """
    try:
        source = _INIT_SOURCE.read_bytes()
    except OSError as exc:
        raise InitUnavailable(f"init source missing: {exc}") from exc
    key = hashlib.sha256(source).hexdigest()[:16]
    target = (cache or _cache_dir()) / f"sandbox-init-{key}" / "glasshouse-init"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise InitUnavailable("no C compiler to build glasshouse-init (apt install gcc)")
    with _init_lock:
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        tmp = target.with_name(f".glasshouse-init-{os.getpid()}")
        errors = []
        for flags in (["-static"], []):
            cmd = [cc, "-O2", "-Wall", *flags, "-o", str(tmp), str(_INIT_SOURCE)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
                continue
            if out.returncode == 0:
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
                return target
            errors.append(out.stderr.strip()[-300:])
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InitUnavailable("cannot build glasshouse-init: " + " | ".join(errors))
