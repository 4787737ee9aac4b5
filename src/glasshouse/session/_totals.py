"""The union of a session's step receipts: what the OS saw across all of its steps.

Folded step by step (the session keeps this, not every step's receipt): lists are
deduplicated and capped at the list cap (what a cap leaves out is counted in
``observation.omitted``, never dropped silently), counters summed, peaks kept. Generic over
the sections' shapes, so a field an observer adds is carried without change here.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from glasshouse.receipt import coverage

_SECTIONS = ("filesystem", "network", "syscalls")


class SessionTotals:
    def __init__(self, list_cap: int) -> None:
        self.cap = list_cap
        self.process_tree: list[Any] = []
        self.sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        self.omitted: dict[str, int] = {}
        self.collected: list[str] = []
        self.events_lost = 0
        self.truncations = 0
        self.cpu_time_ms = 0
        self.max_rss_kb: int | None = None
        self._seen: dict[str, set[str]] = {}
        self.statuses: list[str] = []
        self.reasons: dict[tuple[str, str], dict[str, Any]] = {}
        self.threads_left = 0

    def add(self, receipt: dict[str, Any]) -> None:
        """Fold one step's sealed receipt in."""
        self._extend("process_tree", self.process_tree, receipt.get("process_tree") or [])
        for name in _SECTIONS:
            part = receipt.get(name) or {}
            total = self.sections[name]
            for key, value in part.items():
                if isinstance(value, list):
                    self._extend(f"{name}.{key}", total.setdefault(key, []), value)
                elif isinstance(value, bool):
                    total[key] = bool(total.get(key)) or value
                elif isinstance(value, int):
                    total[key] = int(total.get(key) or 0) + value
                elif isinstance(value, dict):
                    into = total.setdefault(key, {})
                    for k, v in value.items():
                        if isinstance(v, int):
                            into[k] = into.get(k, 0) + v
        observation = receipt.get("observation") or {}
        for section in observation.get("collected") or []:
            if section not in self.collected:
                self.collected.append(section)
        for key, n in (observation.get("omitted") or {}).items():
            self.omitted[key] = self.omitted.get(key, 0) + int(n)
        self.events_lost += int(observation.get("events_lost") or 0)
        self.truncations += int(observation.get("truncations") or 0)
        self._coverage(receipt)
        resources = receipt.get("resources") or {}
        self.cpu_time_ms += int(resources.get("cpu_time_ms") or 0)
        rss = resources.get("max_rss_kb")
        if isinstance(rss, int):
            self.max_rss_kb = max(self.max_rss_kb or 0, rss)

    def _coverage(self, receipt: dict[str, Any]) -> None:
        stated = coverage.coverage_of(receipt)
        self.statuses.append(stated["status"])
        for r in stated.get("reasons") or []:
            key = (str(r.get("code")), str(r.get("observer")))
            kept = self.reasons.get(key)
            if kept is None:
                self.reasons[key] = dict(r)
            elif isinstance(r.get("count"), int):
                kept["count"] = int(kept.get("count") or 0) + r["count"]
        details = (receipt.get("execution") or {}).get("details") or {}
        threads = details.get("threads_left_running")
        if isinstance(threads, int) and threads > 0:
            self.threads_left += 1

    def _statement(self) -> dict[str, Any]:
        if not self.statuses:
            why = coverage.reason("not_run", "the session ran no step: nothing was observed")
            return coverage.statement("none", [why])
        if all(status == "none" for status in self.statuses):
            return coverage.statement("none", list(self.reasons.values()))
        reasons = list(self.reasons.values())
        if self.threads_left:
            reasons.append(
                coverage.reason(
                    "between_steps",
                    f"{self.threads_left} code step(s) left threads running in the "
                    "interpreter: what they did between steps is in no receipt",
                    count=self.threads_left,
                )
            )
        unknown = sum(1 for status in self.statuses if status == coverage.UNKNOWN)
        if unknown:
            reasons.append(
                coverage.reason(
                    "not_collected", f"{unknown} step(s) state no coverage", count=unknown
                )
            )
        reasons.sort(key=lambda r: (r["code"], r["observer"] or "", r["message"]))
        return coverage.statement("incomplete" if reasons else "complete", reasons)

    def _extend(self, name: str, into: list[Any], items: list[Any]) -> None:
        seen = self._seen.setdefault(name, set())
        for item in items:
            key = json.dumps(item, sort_keys=True, default=str)
            if key in seen:
                continue
            if len(into) >= self.cap:
                self.omitted[name] = self.omitted.get(name, 0) + 1
                continue
            seen.add(key)
            into.append(item)

    def apply(self, data: dict[str, Any], steps: int) -> None:
        """Write the union into a session receipt's data (built with no observations)."""
        data["process_tree"] = self.process_tree
        data["processes"] = [
            {
                "pid": n.get("pid"),
                "ppid": n.get("ppid"),
                "cmd": shlex.join(n.get("argv") or []) or n.get("exe") or "",
            }
            for n in self.process_tree
        ]
        for name in _SECTIONS:
            section = dict(data.get(name) or {})
            section.update(self.sections[name])
            if name == "syscalls" and "counts" in section:
                section["counts"] = dict(sorted(section["counts"].items()))
            data[name] = section
        data["resources"] = {"max_rss_kb": self.max_rss_kb, "cpu_time_ms": self.cpu_time_ms}
        data["timing"]["cpu_time_ms"] = self.cpu_time_ms
        block = data["observation"]
        block["collected"] = list(self.collected)
        why = "not collected in any step" if steps else "the session ran no step"
        block["missing"] = {
            s: why
            for s in ("process_tree", "filesystem", "network", "syscalls", "resources")
            if s not in self.collected
        }
        block["omitted"] = dict(sorted(self.omitted.items()))
        block["events_lost"] = self.events_lost
        block["truncations"] = self.truncations
        block["coverage"] = self._statement()
        block["note"] = (
            f"the union of what the OS saw in the session's {steps} step(s), each observed "
            "from its start to its end (session.steps lists their receipts); nothing between "
            "steps is observed"
        )
