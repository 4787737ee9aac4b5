"""Folding helpers shared by the observers (eBPF, strace) and the guest events: bounded
lists without repeats, per-key sums, normalized paths and connect results by name.

Every list a receipt holds is built through these, so each is capped (memory stays bounded
whatever a run does) and a cap is never silent: what was left out is counted.
"""

from __future__ import annotations

import errno as _errno
import posixpath

from glasshouse.core.execution import DEFAULT_LIST_CAP

#: connect(2)'s result by errno (0: connected), as the receipt names it.
CONNECT_RESULTS = {
    0: "connected",
    _errno.EINPROGRESS: "in_progress",
    _errno.EALREADY: "in_progress",
    _errno.ECONNREFUSED: "refused",
    _errno.ENETUNREACH: "unreachable",
    _errno.EHOSTUNREACH: "unreachable",
    _errno.ETIMEDOUT: "timeout",
    _errno.EACCES: "denied",
    _errno.EPERM: "denied",
    _errno.ENOENT: "not_found",
    _errno.EADDRNOTAVAIL: "address_unavailable",
}


#: Namespace syscalls by the kind :func:`changed_paths` takes (a rename is an ``exchange``
#: when renameat2's flags say RENAME_EXCHANGE; unlinkat with AT_REMOVEDIR is an ``rmdir``).
NAMESPACE_CALLS = {
    "mkdir": "mkdir",
    "mkdirat": "mkdir",
    "mknod": "mknod",
    "mknodat": "mknod",
    "unlink": "unlink",
    "unlinkat": "unlink",
    "rmdir": "rmdir",
    "link": "link",
    "linkat": "link",
    "symlink": "symlink",
    "symlinkat": "symlink",
    "rename": "rename",
    "renameat": "rename",
    "renameat2": "rename",
}


def changed_paths(kind: str, src: str, dst: str = "") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(written, deleted)``: what one successful namespace operation adds to the seed's
    ``filesystem.writes`` (every path whose content or existence the run changed) and
    ``filesystem.deletes`` (every path removed). ``kind``: ``mkdir``, ``mknod`` (a device,
    FIFO or socket node), ``unlink``, ``rmdir`` (``src`` the path); ``link``, ``symlink``
    (``dst`` the new name); ``rename`` (``src`` is gone, ``dst`` replaced or made);
    ``exchange`` (renameat2 RENAME_EXCHANGE: both names now hold the other's file)."""
    if kind in ("mkdir", "mknod"):
        return (src,), ()
    if kind in ("unlink", "rmdir"):
        return (), (src,)
    if kind in ("link", "symlink"):
        return (dst,), ()
    if kind == "rename":
        return (dst,), (src,)
    if kind == "exchange":
        return (src, dst), ()
    raise ValueError(f"not a namespace operation: {kind!r}")


def normalize(path: str, base: str | None) -> str:
    """An absolute normalized path: ``path`` as given, joined to ``base`` when relative."""
    if path[:1] == "/" and "//" not in path and "/." not in path and path[-1:] != "/":
        return path  # already normalized (the common case): skip normpath
    if not path.startswith("/"):
        path = posixpath.join(base or "/", path) if path else (base or "/")
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return path


class Dedup:
    """A list without repeats that keeps at most ``cap`` entries: memory stays bounded
    whatever the run does. A new entry past the cap is not kept but counted in ``omitted``
    (each time it occurs: remembering what was left out would be the unbounded memory the
    cap avoids); a repeat of a kept entry is still folded into it."""

    __slots__ = ("_seen", "cap", "items", "omitted")

    def __init__(self, cap: int = DEFAULT_LIST_CAP) -> None:
        self.items: list = []
        self._seen: set = set()
        self.cap = cap
        self.omitted = 0

    def add(self, key: object, item: object) -> bool:
        """Keep ``item`` unless ``key`` was kept already or the list is full; True if kept."""
        if key in self._seen:
            return False
        if len(self.items) >= self.cap:
            self.omitted += 1
            return False
        self._seen.add(key)
        self.items.append(item)
        return True


class CappedSums:
    """Per-key byte sums (network sends) for at most ``cap`` keys; a new key past it is
    counted in ``omitted``, once per occurrence."""

    __slots__ = ("cap", "omitted", "sums")

    def __init__(self, cap: int = DEFAULT_LIST_CAP) -> None:
        self.sums: dict[tuple[str, str], int] = {}
        self.cap = cap
        self.omitted = 0

    def add(self, key: tuple[str, str], n: int) -> None:
        if key in self.sums:
            self.sums[key] += n
        elif len(self.sums) < self.cap:
            self.sums[key] = n
        else:
            self.omitted += 1


def omitted_counts(lists: dict[str, Dedup | CappedSums]) -> dict[str, int]:
    """``{"filesystem.reads": n, ...}`` for the lists that left entries out."""
    return {name: d.omitted for name, d in lists.items() if d.omitted}


#: The receipt lists an observer folds, and the attribute of the folder that holds each.
FOLDED_LISTS = {
    "filesystem.reads": "reads",
    "filesystem.writes": "writes",
    "filesystem.deletes": "deletes",
    "filesystem.mkdirs": "mkdirs",
    "filesystem.renames": "renames",
    "filesystem.links": "links",
    "filesystem.failed": "failed",
    "network.attempts": "attempts",
    "network.binds": "binds",
    "network.sends": "sends",
}


def folded_omissions(folder: object) -> dict[str, int]:
    """What each of a folder's capped lists left out (:data:`FOLDED_LISTS`, plus processes
    past the cap in ``procs_omitted``): ``{"filesystem.reads": n, ...}``, only non-zero."""
    out = omitted_counts({name: getattr(folder, attr) for name, attr in FOLDED_LISTS.items()})
    procs = getattr(folder, "procs_omitted", 0)
    if procs:
        out["process_tree"] = procs
    return out
