"""The read-only /etc skeleton (and gVisor's root) a sandbox sees: made once, by content."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from ._layout import (
    _GVISOR_STATUS_DIR,
    _MERGED_USR,
    _OPTIONAL_MERGED_USR,
    HOSTNAME,
    INIT_PATH,
    INSIDE_GID,
    INSIDE_UID,
    INSIDE_WORKSPACE,
)


def _etc_files(network: bool) -> dict[str, bytes | str]:
    """The sandbox's /etc: name -> bytes (a file) or str (a symlink target)."""
    files: dict[str, bytes | str] = {
        "passwd": (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"sandbox:x:{INSIDE_UID}:{INSIDE_GID}:sandbox:{INSIDE_WORKSPACE}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "group": f"root:x:0:\nsandbox:x:{INSIDE_GID}:\nnogroup:x:65534:\n".encode(),
        "hostname": f"{HOSTNAME}\n".encode(),
        "hosts": f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost\n".encode(),
        "nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files dns\nservices: files\n",
    }
    copied = ["ld.so.cache", "services", "protocols", "debian_version", "localtime"]
    copied += ["os-release", "mime.types"]
    if network:
        copied += ["resolv.conf", "gai.conf", "ssl/openssl.cnf", "ssl/certs/ca-certificates.crt"]
    for name in copied:
        _copy_etc_entry(Path("/etc") / name, name, files)
    for tree in ("alternatives", "python3", f"python3.{os.sys.version_info.minor}"):
        root = Path("/etc") / tree
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            _copy_etc_entry(entry, f"{tree}/{entry.name}", files)
    return files


def _copy_etc_entry(src: Path, name: str, files: dict[str, bytes | str]) -> None:
    try:
        st = src.lstat()
        if stat.S_ISLNK(st.st_mode):
            files[name] = os.readlink(src)
        elif stat.S_ISREG(st.st_mode) and st.st_size < (4 << 20):
            files[name] = src.read_bytes()
    except OSError:
        pass


def _materialise(base: Path, prefix: str, files: dict[str, bytes | str]) -> Path:
    """Write ``files`` to ``base/<prefix>-<content hash>`` once (atomic rename), reuse after."""
    digest = hashlib.sha256()
    for name in sorted(files):
        value = files[name]
        digest.update(name.encode() + b"\0")
        digest.update((b"L" + value.encode()) if isinstance(value, str) else (b"F" + value))
        digest.update(b"\0")
    target = base / f"{prefix}-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=base))
    try:
        for name in sorted(files):
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            value = files[name]
            if isinstance(value, str):
                os.symlink(value, path)
            else:
                path.write_bytes(value)
                path.chmod(0o644)
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink())]:
            d.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _etc_skeleton(base: Path, network: bool) -> Path:
    return _materialise(base, "etc-net" if network else "etc", _etc_files(network))


def _gvisor_rootfs(base: Path, etc: Path) -> Path:
    """A read-only root for runsc: mount points, merged-/usr symlinks and the /etc files."""
    files: dict[str, bytes | str] = {}
    for entry in etc.rglob("*"):
        if entry.is_symlink():
            files[f"etc/{entry.relative_to(etc)}"] = os.readlink(entry)
        elif entry.is_file():
            files[f"etc/{entry.relative_to(etc)}"] = entry.read_bytes()
    for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
        if (Path("/") / target).is_dir():
            files[link.lstrip("/")] = target
    for mount_point in ("usr", "workspace", "tmp", "proc", "dev", "sys", _GVISOR_STATUS_DIR[1:]):
        files[f"{mount_point}/.keep"] = b""
    files[INIT_PATH[1:]] = b""
    return _materialise(base, "gvisor-rootfs", files)
