"""Training signals: one record per receipt, streamed to JSONL (or Parquet with pyarrow).

A record (schemas/training-record-v1.schema.json) holds the run's ids and hashes, how it
ended, the policy verdict, counts of execs/files/network by category, the behaviours seen for
the first time in this export, and a reward-style label:

=========  ======  =============================================================
label      reward  when (first that applies)
=========  ======  =============================================================
error      null    Glasshouse could not run the command (no exit code, no signal,
                   not a timeout): says nothing about the agent; exclude it.
violation  -1.0    a deny rule of the policy fired
timeout    -0.5    the run hit its wall-clock limit
failure     0.0    non-zero exit or killed by a signal
success     1.0    exit 0
=========  ======  =============================================================

Deterministic: files are read in name order (receipt ids sort by time), JSON is written with
sorted keys, and the output depends only on the receipts (and the policy). Memory does not
grow with the number of receipts beyond the sorted file-name list and the set of distinct
behaviours (capped at :data:`MAX_BEHAVIOURS`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from glasshouse.core.errors import GlasshouseError
from glasshouse.core.version import RECEIPT_VERSION
from glasshouse.policy import parse_endpoint

if TYPE_CHECKING:
    from glasshouse.policy.models import Policy

RECORD_SCHEMA = "glasshouse-training-record/v1"
MAX_BEHAVIOURS = 200_000
REWARDS = {"error": None, "violation": -1.0, "timeout": -0.5, "failure": 0.0, "success": 1.0}

EXEC_CATEGORIES: dict[str, frozenset[str]] = {
    "shell": frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish", "ash", "busybox"}),
    "interpreter": frozenset(
        {"python", "node", "deno", "bun", "ruby", "perl", "php", "java", "lua", "rscript"}
    ),
    "network_tool": frozenset(
        {
            "curl",
            "wget",
            "nc",
            "ncat",
            "netcat",
            "ssh",
            "scp",
            "sftp",
            "rsync",
            "ftp",
            "telnet",
            "socat",
            "dig",
            "nslookup",
            "ping",
            "git",
        }
    ),
    "package_manager": frozenset(
        {
            "pip",
            "npm",
            "npx",
            "yarn",
            "pnpm",
            "apt",
            "apt-get",
            "dpkg",
            "yum",
            "dnf",
            "apk",
            "gem",
            "cargo",
            "go",
            "uv",
            "poetry",
            "conda",
        }
    ),
    "compiler": frozenset(
        {"gcc", "cc", "g++", "c++", "clang", "clang++", "ld", "as", "make", "rustc", "javac"}
    ),
    "privilege": frozenset({"sudo", "su", "doas", "pkexec", "setpriv", "chroot", "nsenter"}),
}
FILE_CATEGORIES = ("workspace", "temp", "config", "system", "home", "proc", "device", "other")
_FILE_PREFIXES = (
    ("temp", ("/tmp", "/var/tmp", "/dev/shm")),
    ("config", ("/etc",)),
    ("system", ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt", "/boot", "/var/lib")),
    ("home", ("/home", "/root")),
    ("proc", ("/proc", "/sys")),
    ("device", ("/dev",)),
)
NET_CATEGORIES = ("loopback", "private", "public", "other")
#: ``counts.files`` keys: successful reads, writes, deletes, and refused attempts.
FILE_OPS = ("read", "write", "delete", "failed")


class ExportError(GlasshouseError):
    """The export cannot run (unreadable directory, unwritable output, no pyarrow)."""


@dataclass
class ExportStats:
    records: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=4096)
def _exec_category_of(name: str) -> str:
    base = name.rstrip("0123456789.")  # python3.11 -> python, pip3 -> pip
    for category, names in EXEC_CATEGORIES.items():
        if name in names or base in names:
            return category
    return "other"


def exec_category(exe: str | None, argv0: str | None = None) -> str:
    return _exec_category_of(_basename(exe or argv0 or "").lower())


_TOP_LEVEL = {p.split("/")[1]: c for c, ps in _FILE_PREFIXES for p in ps if p.count("/") == 1}
_TWO_LEVEL = {p: c for c, ps in _FILE_PREFIXES for p in ps if p.count("/") == 2}


def file_category(path: str, workspace: str | None) -> str:
    if workspace and workspace != "/" and (path == workspace or path.startswith(workspace + "/")):
        return "workspace"
    if not path.startswith("/"):
        return "workspace"
    parts = path.split("/", 3)
    if len(parts) > 2:
        two = _TWO_LEVEL.get(f"/{parts[1]}/{parts[2]}")
        if two is not None:
            return two
    return _TOP_LEVEL.get(parts[1], "other")


@functools.lru_cache(maxsize=16384)
def _endpoint(dst: str) -> tuple[str, int | None]:
    ip, port = parse_endpoint(dst)
    if ip is None:
        category = "other"
    elif ip.is_loopback:
        category = "loopback"
    elif ip.is_private or ip.is_link_local:
        category = "private"
    else:
        category = "public" if ip.is_global else "other"
    return category, port


def net_category(dst: Any) -> str:
    return _endpoint(dst)[0] if isinstance(dst, str) else "other"


class _FirstSeen:
    def __init__(self, cap: int = MAX_BEHAVIOURS) -> None:
        self.seen: set[str] = set()
        self.cap = cap

    def new(self, behaviours: set[str]) -> list[str]:
        fresh = sorted(b for b in behaviours if b not in self.seen)
        room = self.cap - len(self.seen)
        if room > 0:
            self.seen.update(fresh[:room])
        return fresh


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def label_for(outcome: dict[str, Any], policy_passed: bool | None) -> str:
    timed_out = bool(outcome.get("timed_out"))
    code, sig = outcome.get("exit_code"), outcome.get("signal")
    if outcome.get("error") and code is None and sig is None and not timed_out:
        return "error"
    if policy_passed is False:
        return "violation"
    if timed_out:
        return "timeout"
    if sig is not None or code != 0:
        return "failure"
    return "success"


def record_for(
    receipt: dict[str, Any], policy: Policy | None = None, seen: _FirstSeen | None = None
) -> dict[str, Any]:
    """The training record of one receipt (JSON data)."""
    tree = _l(receipt.get("process_tree"))
    fs, net = _d(receipt.get("filesystem")), _d(receipt.get("network"))
    outcome, timing = _d(receipt.get("outcome")), _d(receipt.get("timing"))
    resources, execution = _d(receipt.get("resources")), _d(receipt.get("execution"))
    observation, artifacts = _d(receipt.get("observation")), _d(receipt.get("artifacts"))
    behaviours: set[str] = set()

    execs = dict.fromkeys(["total", *EXEC_CATEGORIES, "other"], 0)
    for node in tree:
        node = _d(node)
        argv = _l(node.get("argv"))
        category = exec_category(
            node.get("exe"), argv[0] if argv and isinstance(argv[0], str) else None
        )
        execs["total"] += 1
        execs[category] += 1
        first = argv[0] if argv and isinstance(argv[0], str) else ""
        name = _basename(node.get("exe") or first) or "?"
        behaviours.add(f"exec:{name}")

    workspace = _d(tree[0]).get("working_dir") if tree else None
    files: dict[str, dict[str, int]] = {}
    for op, key in (("read", "reads"), ("write", "writes"), ("delete", "deletes")):
        counts = dict.fromkeys(FILE_CATEGORIES, 0)
        for path in _l(fs.get(key)):
            if isinstance(path, str):
                category = file_category(path, workspace)
                counts[category] += 1
                behaviours.add(f"file:{op}:{category}")
        files[op] = counts
    failed = dict.fromkeys(FILE_CATEGORIES, 0)  # refused attempts, by the first path's category
    for item in _l(fs.get("failed")):
        path = _d(item).get("path")
        if isinstance(path, str):
            category = file_category(path.split(" -> ")[0], workspace)
            failed[category] += 1
            behaviours.add(f"file:failed:{category}")
    files["failed"] = failed

    network = {"total": 0, **dict.fromkeys(NET_CATEGORIES, 0), "tcp": 0, "udp": 0}
    for attempt in _l(net.get("attempts")):
        attempt = _d(attempt)
        dst = attempt.get("dst")
        category, port = _endpoint(dst) if isinstance(dst, str) else ("other", None)
        proto = str(attempt.get("protocol") or "").lower()
        network["total"] += 1
        network[category] += 1
        if proto in ("tcp", "udp"):
            network[proto] += 1
        behaviours.add(f"net:{category}:{proto or '?'}/{port if port is not None else '?'}")

    counts = _d(_d(receipt.get("syscalls")).get("counts"))
    syscalls_total = sum(v for v in counts.values() if isinstance(v, int))
    behaviours.update(f"syscall:{name}" for name in counts)

    verdict = _policy(receipt, policy)
    label = label_for(outcome, verdict["passed"])
    return {
        "schema": RECORD_SCHEMA,
        "execution_id": receipt.get("execution_id"),
        "timestamp": receipt.get("timestamp"),
        "sequence": receipt.get("sequence"),
        "receipt_digest": receipt.get("digest"),
        "code_hash": receipt.get("code_hash"),
        "command_hash": artifacts.get("command_hash"),
        "backend": execution.get("backend"),
        "isolation": execution.get("isolation"),
        "profile": observation.get("profile"),
        "observed": sorted(x for x in _l(observation.get("collected")) if isinstance(x, str)),
        "events_lost": observation.get("events_lost") or 0,
        "outcome": {
            "exit_code": outcome.get("exit_code"),
            "signal": outcome.get("signal"),
            "timed_out": bool(outcome.get("timed_out")),
            "error": outcome.get("error") is not None,
        },
        "duration_ms": timing.get("duration_ms"),
        "cpu_time_ms": resources.get("cpu_time_ms"),
        "max_rss_kb": resources.get("max_rss_kb"),
        "policy": verdict,
        "counts": {
            "execs": execs,
            "files": files,
            "network": network,
            "syscalls": syscalls_total,
        },
        "first_seen": seen.new(behaviours) if seen is not None else sorted(behaviours),
        "label": label,
        "reward": REWARDS[label],
    }


def _policy(receipt: dict[str, Any], policy: Policy | None) -> dict[str, Any]:
    if policy is not None:
        from glasshouse.policy.evaluate import evaluate

        v = evaluate(policy, receipt)
        return {
            "evaluated": True,
            "name": v.policy,
            "passed": v.passed,
            "violations": v.violations,
            "warnings": v.warnings,
        }
    block = receipt.get("policy")
    if isinstance(block, dict):
        return {
            "evaluated": True,
            "name": block.get("policy"),
            "passed": bool(block.get("passed")),
            "violations": [str(x) for x in _l(block.get("violations"))],
            "warnings": [str(x) for x in _l(block.get("warnings"))],
        }
    return {"evaluated": False, "name": None, "passed": None, "violations": [], "warnings": []}


def receipt_files(directory: str | os.PathLike[str]) -> list[str]:
    """Receipt file names in ``directory``, sorted (envelopes and temp files excluded)."""
    try:
        with os.scandir(directory) as it:
            names = [
                e.name
                for e in it
                if e.name.endswith(".json")
                and not e.name.startswith(".")
                and not e.name.endswith(".dsse.json")
                and e.is_file()
            ]
    except OSError as exc:
        raise ExportError(f"cannot read {directory}: {exc.strerror or exc}") from exc
    names.sort()
    return names


def iter_records(
    directory: str | os.PathLike[str],
    policy: Policy | None = None,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream records for every receipt in ``directory`` (unreadable files are skipped)."""
    stats = stats if stats is not None else ExportStats()
    seen = _FirstSeen()
    root = os.fspath(directory)
    for name in receipt_files(root):
        try:
            # os.path, not pathlib: pathlib interns every path part, so 100k distinct file
            # names would stay in memory for the life of the process.
            with open(os.path.join(root, name), "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            stats.skipped += 1
            stats.problems.append(f"{name}: {exc}")
            continue
        if (
            not isinstance(data, dict)
            or data.get("version") != RECEIPT_VERSION
            or not isinstance(data.get("execution_id"), str)
            or not isinstance(data.get("outcome"), dict)
        ):
            stats.skipped += 1
            stats.problems.append(f"{name}: not a {RECEIPT_VERSION} receipt")
            continue
        stats.records += 1
        yield record_for(data, policy, seen)


def export(
    receipts_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | IO[str],
    *,
    fmt: str = "jsonl",
    policy: Policy | None = None,
) -> ExportStats:
    """Write one record per receipt of ``receipts_dir`` to ``out`` (a path or a text stream)."""
    stats = ExportStats()
    records = iter_records(receipts_dir, policy, stats)
    if fmt == "parquet":
        from glasshouse.training._parquet import write_parquet

        if not isinstance(out, str | os.PathLike):
            raise ExportError("parquet output needs a file path")
        write_parquet(records, out)
        return stats
    if fmt != "jsonl":
        raise ExportError(f"unknown format {fmt!r} (jsonl or parquet)")
    if isinstance(out, str | os.PathLike):
        tmp = Path(f"{os.fspath(out)}.partial")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                _write_jsonl(records, fh)
            os.replace(tmp, out)
        except OSError as exc:
            raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from exc
    else:
        _write_jsonl(records, out)
    return stats


def _write_jsonl(records: Iterator[dict[str, Any]], fh: IO[str]) -> None:
    for record in records:
        fh.write(json.dumps(record, sort_keys=True, separators=(",", ":")))
        fh.write("\n")
