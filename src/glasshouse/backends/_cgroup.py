"""A per-run cgroup: membership, limits, accounting and whole-tree kill.

Works on pure cgroup v2 (``cgroup.kill``, ``memory.max``, ``pids.max``, ``cpu.max``,
``memory.peak``) and on hybrid/v1 hosts, where each controller lives in its own v1 hierarchy
(``memory.limit_in_bytes``, ``pids.max``, ``cpu.cfs_quota_us``, ``cpuacct.usage``,
``freezer.state``). Each controller is taken from v2 when the v2 tree offers it, else from v1.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from glasshouse.backends import _owner

_ROOT = Path(os.environ.get("GLASSHOUSE_CGROUP_ROOT", "/sys/fs/cgroup"))
_PARENT = "glasshouse"
_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")


class CgroupUnavailable(Exception):
    pass


@dataclass(frozen=True)
class _Layout:
    v2: Path | None  # mount point of the v2 hierarchy, if any
    v2_controllers: frozenset[str]
    v1: dict[str, Path]  # controller -> v1 mount point

    def describe(self) -> str:
        parts = []
        if self.v2 is not None:
            ctl = ",".join(sorted(self.v2_controllers)) or "no controllers"
            parts.append(f"v2 at {self.v2} ({ctl})")
        if self.v1:
            parts.append("v1 " + ",".join(sorted(self.v1)))
        return "; ".join(parts) or "none"


@functools.cache
def layout() -> _Layout:
    v2: Path | None = None
    v1: dict[str, Path] = {}
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        mounts = []
    for line in mounts:
        fields = line.split()
        if len(fields) < 4:
            continue
        mnt, fstype, opts = Path(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup2" and (v2 is None or mnt == _ROOT):
            v2 = mnt
        elif fstype == "cgroup":
            for ctl in _CONTROLLERS:
                if ctl in opts:
                    v1.setdefault(ctl, mnt)
    controllers: frozenset[str] = frozenset()
    if v2 is not None:
        with contextlib.suppress(OSError):
            controllers = frozenset((v2 / "cgroup.controllers").read_text().split())
    return _Layout(v2, controllers, v1)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def available() -> tuple[bool, str]:
    """Can this process create per-run cgroups? Returns (ok, description or reason)."""
    lay = layout()
    if os.geteuid() != 0:
        return False, "not root: cannot create cgroups"
    roots = [p for p in [lay.v2, *lay.v1.values()] if p is not None]
    if not roots:
        return False, "no cgroup filesystem mounted"
    if not any(_writable(p) for p in roots):
        return False, "cgroup filesystems are read-only here"
    return True, lay.describe()


@dataclass
class Cgroup:
    """One run's cgroup (possibly one directory per v1 hierarchy)."""

    name: str
    dirs: dict[str, Path] = field(default_factory=dict)  # controller (or "v2") -> directory
    removed: bool = False

    @classmethod
    def create(cls, name: str) -> Cgroup:
        ok, why = available()
        if not ok:
            raise CgroupUnavailable(why)
        lay = layout()
        group = cls(name)
        try:
            if lay.v2 is not None and _writable(lay.v2):
                parent = lay.v2 / _PARENT
                parent.mkdir(exist_ok=True)
                wanted = {"memory", "pids", "cpu"} & lay.v2_controllers
                if wanted:
                    _enable(lay.v2, wanted)
                    _enable(parent, wanted)
                group.dirs["v2"] = _mkdir(parent / name)
            for ctl in _CONTROLLERS:
                if ctl in lay.v2_controllers or ctl not in lay.v1:
                    continue
                root = lay.v1[ctl]
                existing = next(
                    (d for c, d in group.dirs.items() if c != "v2" and d.parent.parent == root),
                    None,
                )
                if existing is not None:
                    group.dirs[ctl] = existing
                    continue
                parent = root / _PARENT
                parent.mkdir(exist_ok=True)
                group.dirs[ctl] = _mkdir(parent / name)
        except OSError as exc:
            group.remove()
            raise CgroupUnavailable(f"cannot create cgroup {name}: {exc}") from exc
        if not group.dirs:
            raise CgroupUnavailable("no usable cgroup hierarchy")
        return group

    def scope(self) -> dict[str, str | int]:
        """``cgroup`` (the v2 path, as in /proc/<pid>/cgroup) and ``cgroup_id`` (its inode,
        what eBPF's bpf_get_current_cgroup_id returns); empty without a v2 group."""
        found = self.dirs.get("v2")
        mount = layout().v2
        if found is None or mount is None:
            return {}
        try:
            ino = os.stat(found).st_ino
        except OSError:
            return {}
        return {"cgroup": "/" + str(found.relative_to(mount)), "cgroup_id": ino}

    def child(self, name: str) -> Cgroup:
        """A sub-group for a part of this group's processes (a session's step): it enables
        no controller, so both levels may hold processes; this group's limits bound both.
        cgroup v2 only (its ``cgroup.kill`` ends the part and all it forked)."""
        v2 = self.dirs.get("v2")
        if v2 is None:
            raise CgroupUnavailable("a sub-group needs cgroup v2")
        try:
            return Cgroup(f"{self.name}/{name}", {"v2": _mkdir(v2 / name)})
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create cgroup {self.name}/{name}: {exc}") from exc

    def memory_current(self) -> int | None:
        d, v2 = self._ctl_dir("memory")
        name = "memory.current" if v2 else "memory.usage_in_bytes"
        if d is not None:
            with contextlib.suppress(OSError, ValueError):
                return int((d / name).read_text())
        return None

    # -- membership ---------------------------------------------------------------------
    def _unique_dirs(self) -> list[Path]:
        seen: list[Path] = []
        for d in self.dirs.values():
            if d not in seen:
                seen.append(d)
        return seen

    def add(self, pid: int) -> None:
        for d in self._unique_dirs():
            (d / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self._unique_dirs():
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(found)

    # -- limits -----------------------------------------------------------------------
    def _ctl_dir(self, ctl: str) -> tuple[Path | None, bool]:
        """Directory holding ``ctl`` and whether it is v2."""
        lay = layout()
        if ctl in lay.v2_controllers and "v2" in self.dirs:
            return self.dirs["v2"], True
        return self.dirs.get(ctl), False

    def set_limits(
        self, memory_bytes: int | None, pids: int | None, cpu_cores: float | None = None
    ) -> list[str]:
        """Apply limits; return the names of limits that were applied."""
        applied: list[str] = []
        if memory_bytes is not None:
            d, v2 = self._ctl_dir("memory")
            if d is not None:
                if v2:
                    (d / "memory.max").write_text(str(memory_bytes))
                    with contextlib.suppress(OSError):
                        (d / "memory.swap.max").write_text("0")
                else:
                    (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    with contextlib.suppress(OSError):
                        (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                    with contextlib.suppress(OSError):
                        (d / "memory.swappiness").write_text("0")
                applied.append("memory")
        if pids is not None:
            d, _ = self._ctl_dir("pids")
            if d is not None:
                (d / "pids.max").write_text(str(pids))
                applied.append("pids")
        if cpu_cores is not None:
            d, v2 = self._ctl_dir("cpu")
            if d is not None:
                period = 100_000
                quota = max(1000, int(cpu_cores * period))
                if v2:
                    (d / "cpu.max").write_text(f"{quota} {period}")
                else:
                    (d / "cpu.cfs_period_us").write_text(str(period))
                    (d / "cpu.cfs_quota_us").write_text(str(quota))
                applied.append("cpu")
        return applied

    # -- accounting -------------------------------------------------------------------
    def cpu_time_ms(self) -> int | None:
        d, v2 = self._ctl_dir("cpu")
        if v2 and d is not None:
            with contextlib.suppress(OSError, ValueError):
                for line in (d / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) // 1000
        if "v2" in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                for line in (self.dirs["v2"] / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) // 1000
        d = self.dirs.get("cpuacct")
        if d is not None:
            with contextlib.suppress(OSError, ValueError):
                return int((d / "cpuacct.usage").read_text()) // 1_000_000
        return None

    def max_rss_kb(self) -> int | None:
        d, v2 = self._ctl_dir("memory")
        if d is None:
            return None
        name = "memory.peak" if v2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((d / name).read_text()) // 1024
        return None

    def oom_killed(self) -> bool:
        d, v2 = self._ctl_dir("memory")
        if d is None:
            return False
        name = "memory.events" if v2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (d / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def oom_kill_count(self) -> int:
        """How many of the group's processes the OOM killer has killed so far."""
        d, v2 = self._ctl_dir("memory")
        if d is None:
            return 0
        name = "memory.events" if v2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (d / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def pids_limit_hit(self) -> bool:
        d, v2 = self._ctl_dir("pids")
        if d is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            if v2:
                for line in (d / "pids.events").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "max" and int(value) > 0:
                        return True
            else:
                text = (d / "pids.events").read_text().split()
                return len(text) >= 2 and int(text[1]) > 0
        return False

    # -- kill / remove ----------------------------------------------------------------
    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group, forks in flight included."""
        v2 = self.dirs.get("v2")
        if v2 is not None and (v2 / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (v2 / "cgroup.kill").write_text("1")
        freezer = self.dirs.get("freezer")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return
            if freezer is not None:
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("FROZEN")
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("THAWED")
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)

    def remove(self, timeout: float = 2.0) -> None:
        if self.removed:
            return
        deadline = time.monotonic() + timeout
        for d in reversed(self._unique_dirs()):
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    self.kill(timeout=0.2)
                    time.sleep(0.01)
        self.removed = True


def owned_name(prefix: str, rest: str) -> str:
    """``<prefix><pid>.<start>-<rest>``: a group name carrying its creator's identity
    (:mod:`._owner`), so :func:`sweep_dead_owners` can tell whose it is."""
    pid, start = _owner.me().split()
    return f"{prefix}{pid}.{start}-{rest}"


def _owner_in(name: str, prefix: str) -> str | None:
    owner, _, rest = name[len(prefix) :].partition("-")
    pid, _, start = owner.partition(".")
    return f"{pid} {start}" if rest and pid.isdigit() and start.isdigit() else None


def _existing(prefix: str) -> dict[str, dict[str, Path]]:
    """Group name -> the parent directory holding it in each hierarchy (``"v2"`` or the v1
    controller)."""
    lay = layout()
    roots = ([("v2", lay.v2)] if lay.v2 is not None else []) + list(lay.v1.items())
    found: dict[str, dict[str, Path]] = {}
    for key, root in roots:
        parent = root / _PARENT
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            if name.startswith(prefix):
                found.setdefault(name, {})[key] = parent
    return found


def sweep_dead_owners(prefix: str, min_age_s: float = 120.0) -> int:
    """Kill what is left in the groups named ``prefix`` + owner (:func:`owned_name`) whose
    owner is gone, then remove them: a Glasshouse process killed outright leaves its runs
    behind (a sandbox runtime, the workload, its daemons). A live owner's groups are never
    touched. A group without an owner in its name (older versions) is removed only when empty
    and ``min_age_s`` old, as :func:`sweep_empty` does. Never raises; returns how many went."""
    removed = 0
    now = time.time()
    for name, parents in _existing(prefix).items():
        owner = _owner_in(name, prefix)
        if owner is not None and _owner.alive(owner):
            continue
        group = Cgroup(name, {key: parent / name for key, parent in parents.items()})
        try:
            if owner is None:  # rmdir only: it refuses a group that still holds a process
                if now - next(iter(group.dirs.values())).stat().st_mtime < min_age_s:
                    continue
                for d in group._unique_dirs():
                    with contextlib.suppress(OSError):
                        d.rmdir()
            else:
                group.kill(timeout=2.0)
                group.remove()
        except OSError:
            continue
        removed += not any(d.exists() for d in group.dirs.values())
    return removed


def sweep_empty(prefix: str, min_age_s: float = 120.0) -> int:
    """Remove the leftover groups named ``prefix*`` (of a Glasshouse process that died
    before its cleanup) that are empty and older than ``min_age_s``: rmdir refuses a group
    that still holds a process, so a live one is never touched. Returns how many went."""
    lay = layout()
    roots = ([lay.v2] if lay.v2 is not None else []) + list(dict.fromkeys(lay.v1.values()))
    removed = 0
    now = time.time()
    for root in roots:
        for path in (root / _PARENT).glob(prefix + "*"):
            try:
                if now - path.stat().st_mtime < min_age_s:
                    continue
                path.rmdir()
                removed += 1
            except OSError:
                continue
    return removed


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _enable(path: Path, controllers: set[str]) -> None:
    ctl_file = path / "cgroup.subtree_control"
    with contextlib.suppress(OSError):
        current = set(ctl_file.read_text().split())
        for ctl in sorted(controllers - current):
            with contextlib.suppress(OSError):
                ctl_file.write_text(f"+{ctl}")
