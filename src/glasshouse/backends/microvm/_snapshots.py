"""The warm snapshot store: generations ``snapshot-<key>-<unix time>/`` under the guest
cache, each built once (one cold boot by the VMM driver), serialised across processes by a
file lock, the previous generation kept (runs may be loading it), older ones dropped."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from . import images as _images
from ._vm import remove_run_dir


def generations(key: str) -> list[_images.Snapshot]:
    """Complete snapshots of ``key``, newest first (``snapshot-<key>-<unix time>``)."""
    found = []
    for path in _images.GUEST_DIR.glob(f"snapshot-{key}-*"):
        stamp = path.name.rsplit("-", 1)[1]
        if stamp.isdigit() and _images.Snapshot(path).exists():
            found.append((int(stamp), _images.Snapshot(path)))
    return [snap for _, snap in sorted(found, key=lambda t: t[0], reverse=True)]


def age_s(snap: _images.Snapshot) -> float:
    return time.time() - int(snap.dir.name.rsplit("-", 1)[1])


def ensure(
    images: _images.GuestImages,
    key: str,
    build: Callable[[_images.Snapshot], None],
    *,
    newer_than: float = 0.0,
) -> _images.Snapshot:
    """The newest snapshot of ``key`` made after ``newer_than`` (unix time), made with
    ``build`` (which writes a snapshot's files) if there is none. Builds are serialised
    across processes by a file lock."""
    found = [g for g in generations(key) if age_s(g) < time.time() - newer_than]
    if found:
        return found[0]
    with _images.FileLock(_images.GUEST_DIR / ".snapshot.lock"):
        found = [g for g in generations(key) if age_s(g) < time.time() - newer_than]
        if found:
            return found[0]
        for stale in _images.GUEST_DIR.glob("snapshot-*.tmp*"):  # builders that died
            pid = stale.name.rsplit(".tmp", 1)[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                remove_run_dir(stale)
        stamp = int(time.time())
        snap = _images.Snapshot(_images.GUEST_DIR / f"snapshot-{key}-{stamp}")
        tmp = _images.Snapshot(_images.GUEST_DIR / f"snapshot-{key}-{stamp}.tmp{os.getpid()}")
        remove_run_dir(tmp.dir)
        tmp.dir.mkdir(parents=True)
        try:
            build(tmp)
            # Jailed VMMs (unprivileged uids) read these through hard links.
            for path in (tmp.state, tmp.memory):
                path.chmod(0o644)
            meta = {
                "key": key,
                "kernel_digest": images.kernel_digest,
                "rootfs_digest": images.rootfs_digest,
            }
            (tmp.dir / "meta.json").write_text(json.dumps(meta))
        except BaseException:
            remove_run_dir(tmp.dir)
            raise
        os.replace(tmp.dir, snap.dir)
        # Keep the previous generation (runs may be loading it right now), drop older ones.
        for old in generations(key)[2:]:
            remove_run_dir(old.dir)
        return snap
