"""The leaf conditions: each matches one receipt section (``exec``, ``file``, ``network``,
``syscall``, ``resources``, ``outcome``, ``coverage``) and parses itself from its YAML node."""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Any

from glasshouse.policy._cond_base import (
    Condition,
    any_glob,
    as_dict,
    as_list,
    choices,
    globs,
    ptr,
)
from glasshouse.policy._net import parse_endpoint
from glasshouse.policy._yaml import Node
from glasshouse.policy.models import Evidence
from glasshouse.receipt.coverage import STATUSES, UNKNOWN, coverage_of

FILE_OPS = ("read", "write", "delete", "rename", "link", "mkdir", "failed")
NET_KINDS = ("connect", "send", "bind")
COVERAGE_STATUSES = (*STATUSES, UNKNOWN)
#: ``network.attempts[].result`` of a datagram sent without a connect (also in ``sends``)
DATAGRAM = "sent"
RESOURCE_FIELDS = {
    "max_rss_kb": ("resources", "max_rss_kb"),
    "cpu_time_ms": ("resources", "cpu_time_ms"),
    "duration_ms": ("timing", "duration_ms"),
    "bytes_sent": ("network", "bytes_sent"),
    "bytes_received": ("network", "bytes_received"),
}


@dataclass(frozen=True)
class ExecMatch(Condition):
    """A process whose executable, command line or one argument matches."""

    paths: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    args: tuple[str, ...] = ()

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        found = []
        nodes = as_list(receipt.get("process_tree"))
        section = "process_tree"
        if not nodes:  # seed-shaped receipts may only have the legacy list
            nodes, section = as_list(receipt.get("processes")), "processes"
        for i, node in enumerate(nodes):
            node = as_dict(node)
            argv = node.get("argv")
            if not isinstance(argv, list):
                try:
                    argv = shlex.split(node.get("cmd") or "")
                except ValueError:
                    argv = str(node.get("cmd") or "").split()
            argv = [a for a in argv if isinstance(a, str)]
            # The file the kernel ran (symlinks resolved: /bin/sh is /usr/bin/dash) and the
            # path the caller named: a rule on either matches.
            names = [node.get("exe") or (argv[0] if argv else None)]
            if argv and argv[0].startswith("/") and argv[0] not in names:
                names.append(argv[0])
            if self.paths and not any(any_glob(self.paths, n, True) for n in names):
                continue
            if self.argv and not any_glob(self.argv, shlex.join(argv), False):
                continue
            if self.args and not any(any_glob(self.args, a, False) for a in argv):
                continue
            found.append(Evidence(ptr(section, i), node))
        return found or None

    def sections(self) -> set[str]:
        return {"process_tree"}

    def canonical(self) -> Any:
        return {"exec": {"path": list(self.paths), "argv": list(self.argv), "arg": list(self.args)}}

    @classmethod
    def parse(cls, node: Node) -> ExecMatch:
        fields = node.mapping({"path", "argv", "arg"})
        if not fields:
            raise node.error("exec needs at least one of: path, argv, arg")
        return cls(
            paths=globs(fields["path"], True) if "path" in fields else (),
            argv=globs(fields["argv"], False) if "argv" in fields else (),
            args=globs(fields["arg"], False) if "arg" in fields else (),
        )


@dataclass(frozen=True)
class FileMatch(Condition):
    """A file read, written, deleted, renamed, linked or created whose path matches."""

    paths: tuple[str, ...]
    ops: frozenset[str] = frozenset(FILE_OPS)

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        fs = as_dict(receipt.get("filesystem"))
        found = []
        simple = (
            ("read", "reads"),
            ("write", "writes"),
            ("delete", "deletes"),
            ("mkdir", "mkdirs"),
        )
        for op, key in simple:
            if op in self.ops:
                for i, path in enumerate(as_list(fs.get(key))):
                    if any_glob(self.paths, path, True):
                        found.append(Evidence(ptr("filesystem", key, i), path))
        if "rename" in self.ops:
            for i, item in enumerate(as_list(fs.get("renames"))):
                item = as_dict(item)
                if any_glob(self.paths, item.get("src"), True) or any_glob(
                    self.paths, item.get("dst"), True
                ):
                    found.append(Evidence(ptr("filesystem", "renames", i), item))
        if "link" in self.ops:
            for i, item in enumerate(as_list(fs.get("links"))):
                item = as_dict(item)
                if any_glob(self.paths, item.get("path"), True):
                    found.append(Evidence(ptr("filesystem", "links", i), item))
        if "failed" in self.ops:  # refused attempts; two-path ops are shown "a -> b"
            for i, item in enumerate(as_list(fs.get("failed"))):
                item = as_dict(item)
                path = item.get("path")
                sides = path.split(" -> ") if isinstance(path, str) else []
                if any(any_glob(self.paths, side, True) for side in sides):
                    found.append(Evidence(ptr("filesystem", "failed", i), item))
        return found or None

    def sections(self) -> set[str]:
        return {"filesystem"}

    def canonical(self) -> Any:
        return {"file": {"path": list(self.paths), "op": sorted(self.ops)}}

    @classmethod
    def parse(cls, node: Node) -> FileMatch:
        fields = node.mapping({"path", "op"})
        if "path" not in fields:
            raise node.error("file needs 'path' (a glob or a list of globs)")
        ops = frozenset(FILE_OPS)
        if "op" in fields:
            ops = choices(fields["op"], (*FILE_OPS, "any"))
            if "any" in ops:
                ops = frozenset(FILE_OPS)
        return cls(paths=globs(fields["path"], True), ops=ops)


@dataclass(frozen=True)
class NetworkMatch(Condition):
    """A connection attempt, send or bind whose destination/protocol/result all match."""

    cidrs: tuple[str, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()
    protocols: frozenset[str] = frozenset()
    results: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset({"connect", "send"})
    dsts: tuple[str, ...] = ()

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        net = as_dict(receipt.get("network"))
        nets = [ipaddress.ip_network(c) for c in self.cidrs]
        found = []
        sources = (
            ("connect", "attempts", "dst"),
            ("send", "sends", "dst"),
            ("bind", "binds", "addr"),
        )
        for kind, key, field in sources:
            if kind not in self.kinds:
                continue
            for i, item in enumerate(as_list(net.get(key))):
                item = as_dict(item)
                if kind == "connect" and item.get("result") == DATAGRAM:
                    continue  # a datagram's attempt: matched as the send it also is
                dst = item.get(field)
                if self.dsts and not any_glob(self.dsts, dst, False):
                    continue
                ip, port = parse_endpoint(dst)
                if nets and (
                    ip is None or not any(ip in n for n in nets if n.version == ip.version)
                ):
                    continue
                if self.ports and (port is None or not any(a <= port <= b for a, b in self.ports)):
                    continue
                proto = str(item.get("protocol") or "").lower()
                if self.protocols and proto not in self.protocols:
                    continue
                if self.results and str(item.get("result") or "").lower() not in self.results:
                    continue
                found.append(Evidence(ptr("network", key, i), item))
        return found or None

    def sections(self) -> set[str]:
        return {"network"}

    def canonical(self) -> Any:
        return {
            "network": {
                "cidr": list(self.cidrs),
                "port": [list(p) for p in self.ports],
                "protocol": sorted(self.protocols),
                "result": sorted(self.results),
                "kind": sorted(self.kinds),
                "dst": list(self.dsts),
            }
        }

    @classmethod
    def parse(cls, node: Node) -> NetworkMatch:
        fields = node.mapping({"cidr", "port", "protocol", "result", "kind", "dst"})
        if not set(fields) - {"kind"}:
            raise node.error("network needs at least one of: cidr, port, protocol, result, dst")
        cidrs: list[str] = []
        for item in fields["cidr"].one_or_many() if "cidr" in fields else []:
            try:
                cidrs.append(str(ipaddress.ip_network(item.string(), strict=False)))
            except ValueError as exc:
                raise item.error(f"not a CIDR block: {exc}") from exc
        ports: list[tuple[int, int]] = []
        for item in fields["port"].one_or_many() if "port" in fields else []:
            ports.append(_port_range(item))
        return cls(
            cidrs=tuple(sorted(set(cidrs))),
            ports=tuple(sorted(set(ports))),
            protocols=choices(fields["protocol"]) if "protocol" in fields else frozenset(),
            results=choices(fields["result"]) if "result" in fields else frozenset(),
            kinds=choices(fields["kind"], NET_KINDS) if "kind" in fields else cls.kinds,
            dsts=globs(fields["dst"], False) if "dst" in fields else (),
        )


def _port_range(item: Node) -> tuple[int, int]:
    value = item.scalar_value()
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 65535:
            return value, value
    elif isinstance(value, str):
        lo, sep, hi = value.partition("-")
        if sep and lo.strip().isdigit() and hi.strip().isdigit():
            a, b = int(lo), int(hi)
            if 0 <= a <= b <= 65535:
                return a, b
    raise item.error(f"{value!r} is not a port (0-65535) or a range like '8000-8999'")


@dataclass(frozen=True)
class SyscallMatch(Condition):
    """Syscalls whose name matches and whose count is over a threshold (each, or with
    ``total: true`` all matching names together), or that were denied."""

    names: tuple[str, ...] = ("*",)
    over: int = 0
    denied: bool = False
    total: bool = False

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        sc = as_dict(receipt.get("syscalls"))
        found = []
        if self.denied:
            for i, name in enumerate(as_list(sc.get("denied"))):
                if any_glob(self.names, name, False):
                    found.append(Evidence(ptr("syscalls", "denied", i), name))
        else:
            counts = as_dict(sc.get("counts"))
            matching = [
                (name, counts[name])
                for name in sorted(counts)
                if isinstance(counts[name], int)
                and not isinstance(counts[name], bool)
                and any_glob(self.names, name, False)
            ]
            if self.total:
                if sum(c for _, c in matching) <= self.over:
                    return None
                matching = [(n, c) for n, c in matching if c > 0]
            else:
                matching = [(n, c) for n, c in matching if c > self.over]
            found = [Evidence(ptr("syscalls", "counts", n), c) for n, c in matching]
        return found or None

    def sections(self) -> set[str]:
        return {"syscalls"}

    def canonical(self) -> Any:
        return {
            "syscall": {
                "name": list(self.names),
                "over": self.over,
                "denied": self.denied,
                "total": self.total,
            }
        }

    @classmethod
    def parse(cls, node: Node) -> SyscallMatch:
        fields = node.mapping({"name", "over", "denied", "total"})
        if not fields:
            raise node.error("syscall needs at least one of: name, over, denied")
        denied = fields["denied"].boolean() if "denied" in fields else False
        total = fields["total"].boolean() if "total" in fields else False
        for key in ("over", "total"):
            if denied and key in fields:
                raise fields[key].error(f"'{key}' counts calls; it cannot be used with denied")
        return cls(
            names=globs(fields["name"], False) if "name" in fields else ("*",),
            over=fields["over"].integer(minimum=0) if "over" in fields else 0,
            denied=denied,
            total=total,
        )


@dataclass(frozen=True)
class ResourceMatch(Condition):
    """A resource figure over (or under) a limit. Unknown figures never match."""

    limits: tuple[tuple[str, int | None, int | None], ...]

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        found = []
        for name, over, under in self.limits:
            section, key = RESOURCE_FIELDS[name]
            value = as_dict(receipt.get(section)).get(key)
            if not isinstance(value, int | float) or isinstance(value, bool):
                return None
            if (over is not None and not value > over) or (under is not None and not value < under):
                return None
            found.append(Evidence(ptr(section, key), value))
        return found

    def sections(self) -> set[str]:
        return {"resources"}

    def canonical(self) -> Any:
        return {"resources": {n: {"over": o, "under": u} for n, o, u in self.limits}}

    @classmethod
    def parse(cls, node: Node) -> ResourceMatch:
        fields = node.mapping(set(RESOURCE_FIELDS))
        if not fields:
            raise node.error(f"resources needs one of: {', '.join(sorted(RESOURCE_FIELDS))}")
        limits = []
        for name in sorted(fields):
            bounds = fields[name].mapping({"over", "under"})
            if not bounds:
                raise fields[name].error("give 'over' and/or 'under'")
            over = bounds["over"].integer(minimum=0) if "over" in bounds else None
            under = bounds["under"].integer(minimum=0) if "under" in bounds else None
            limits.append((name, over, under))
        return cls(tuple(limits))


@dataclass(frozen=True)
class OutcomeMatch(Condition):
    """How the run ended: exit codes, signals, timeout, Glasshouse error, any failure."""

    exit_codes: frozenset[int] | None = None
    signals: frozenset[int] | None = None
    timed_out: bool | None = None
    error: bool | None = None
    failed: bool | None = None

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        out = as_dict(receipt.get("outcome"))
        code, sig = out.get("exit_code"), out.get("signal")
        timed, err = bool(out.get("timed_out")), out.get("error") is not None
        failed = timed or err or sig is not None or code != 0
        checks = [
            (self.exit_codes, lambda v: code in v, "exit_code"),
            (self.signals, lambda v: sig in v, "signal"),
            (self.timed_out, lambda v: timed is v, "timed_out"),
            (self.error, lambda v: err is v, "error"),
            (self.failed, lambda v: failed is v, None),
        ]
        found = []
        for wanted, test, key in checks:
            if wanted is None:
                continue
            if not test(wanted):
                return None
            if key is None:  # 'failed': point at what made the run fail (or succeed)
                key = (
                    "timed_out"
                    if timed
                    else "signal"
                    if sig is not None
                    else "error"
                    if err
                    else "exit_code"
                )
            found.append(Evidence(ptr("outcome", key), out.get(key)))
        return found

    def canonical(self) -> Any:
        return {
            "outcome": {
                "exit_code": sorted(self.exit_codes) if self.exit_codes is not None else None,
                "signal": sorted(self.signals) if self.signals is not None else None,
                "timed_out": self.timed_out,
                "error": self.error,
                "failed": self.failed,
            }
        }

    @classmethod
    def parse(cls, node: Node) -> OutcomeMatch:
        fields = node.mapping({"exit_code", "signal", "timed_out", "error", "failed"})
        if not fields:
            raise node.error("outcome needs one of: exit_code, signal, timed_out, error, failed")

        def ints(n: Node, hi: int) -> frozenset[int]:
            return frozenset(i.integer(0, hi) for i in n.one_or_many())

        return cls(
            exit_codes=ints(fields["exit_code"], 255) if "exit_code" in fields else None,
            signals=ints(fields["signal"], 64) if "signal" in fields else None,
            timed_out=fields["timed_out"].boolean() if "timed_out" in fields else None,
            error=fields["error"].boolean() if "error" in fields else None,
            failed=fields["failed"].boolean() if "failed" in fields else None,
        )


@dataclass(frozen=True)
class CoverageMatch(Condition):
    """How complete the receipt's observation was (``observation.coverage``). ``complete:
    false`` holds when the receipt cannot prove an absence: coverage incomplete, none, or
    unknown (a receipt written before coverage was stated). ``reason`` (globs on the codes)
    holds when a reason matches. The evidence is the matching reasons (or the status)."""

    complete: bool | None = None
    statuses: frozenset[str] = frozenset()
    reasons: tuple[str, ...] = ()

    def evaluate(self, receipt: dict[str, Any]) -> list[Evidence] | None:
        coverage = coverage_of(receipt)
        status = coverage["status"]
        if self.complete is not None and (status == "complete") is not self.complete:
            return None
        if self.statuses and status not in self.statuses:
            return None
        found = [
            Evidence(ptr("observation", "coverage", "reasons", i), item)
            for i, item in enumerate(as_list(coverage.get("reasons")))
            if not self.reasons or any_glob(self.reasons, as_dict(item).get("code"), False)
        ]
        if self.reasons:
            return found or None
        if found:
            return found
        if status == UNKNOWN:
            return [Evidence("", {"absent": "observation.coverage (coverage unknown)"})]
        return [Evidence(ptr("observation", "coverage", "status"), status)]

    def canonical(self) -> Any:
        return {
            "coverage": {
                "complete": self.complete,
                "status": sorted(self.statuses),
                "reason": list(self.reasons),
            }
        }

    @classmethod
    def parse(cls, node: Node) -> CoverageMatch:
        fields = node.mapping({"complete", "status", "reason"})
        if not fields:
            raise node.error("coverage needs one of: complete, status, reason")
        return cls(
            complete=fields["complete"].boolean() if "complete" in fields else None,
            statuses=(
                choices(fields["status"], COVERAGE_STATUSES) if "status" in fields else frozenset()
            ),
            reasons=globs(fields["reason"], False) if "reason" in fields else (),
        )


LEAF_TYPES: dict[str, Any] = {
    "exec": ExecMatch,
    "file": FileMatch,
    "network": NetworkMatch,
    "syscall": SyscallMatch,
    "resources": ResourceMatch,
    "outcome": OutcomeMatch,
    "coverage": CoverageMatch,
}
