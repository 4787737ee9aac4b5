"""Rich rendering of a receipt for ``glasshouse receipt show``."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree


def _outcome(rec: Any) -> str:
    o = rec.outcome
    if o.timed_out:
        return f"[red]timed out[/] ({o.error})"
    if o.signal is not None:
        return f"[red]killed by signal {o.signal}[/]" + (f" ({o.error})" if o.error else "")
    if o.exit_code is None:
        return f"[red]error[/]: {o.error}"
    color = "green" if o.exit_code == 0 else "yellow"
    return f"[{color}]exit {o.exit_code}[/]" + (f" ({o.error})" if o.error else "")


def _more(items: list[Any], limit: int) -> tuple[list[Any], str]:
    extra = len(items) - limit
    return items[:limit], (f"  … and {extra} more" if extra > 0 else "")


def render(rec: Any, *, digest_ok: bool, limit: int = 15, console: Console | None = None) -> None:
    con = console or Console()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    digest = rec.digest or "(none)"
    mark = "[green]✓ matches content[/]" if digest_ok else "[red]✗ does not match content[/]"
    if rec.digest is None:
        mark = "[yellow]unsealed[/]"
    head.add_row("receipt", f"{rec.execution_id}  ({rec.version})")
    head.add_row("digest", f"{digest}  {mark}")
    head.add_row("outcome", _outcome(rec))
    t = rec.timing
    head.add_row("timing", f"{t.duration_ms} ms wall, {t.cpu_time_ms} ms cpu, at {rec.timestamp}")
    ex = rec.execution
    details = ", ".join(f"{k}={v}" for k, v in ex.details.items())
    head.add_row(
        "execution",
        f"{ex.backend} / isolation {ex.isolation}" + (f"  [dim]{details}[/]" if details else ""),
    )
    env = rec.environment
    head.add_row(
        "environment", f"{env.os}/{env.arch} kernel {env.kernel}, network {env.sandbox.network}"
    )
    r = rec.resources
    head.add_row("resources", f"max RSS {r.max_rss_kb} KiB, cpu {r.cpu_time_ms} ms")
    a = rec.artifacts
    head.add_row(
        "stdout",
        f"{a.stdout_bytes} B sha256:{a.stdout_hash[:16]}…"
        + (" [yellow](truncated)[/]" if a.stdout_truncated else ""),
    )
    head.add_row(
        "stderr",
        f"{a.stderr_bytes} B sha256:{a.stderr_hash[:16]}…"
        + (" [yellow](truncated)[/]" if a.stderr_truncated else ""),
    )
    for row in _files(a, limit):
        head.add_row(*row)
    obs = rec.observation
    observers = (
        "; ".join(
            f"{o.name} ({o.provenance}): {o.events} events, {o.events_lost} lost"
            if o.available
            else f"{o.name}: [yellow]unavailable[/] — {o.reason}"
            for o in obs.observers
        )
        or "none"
    )
    head.add_row("observation", f"profile {obs.profile}, provenance {rec.provenance}: {observers}")
    if obs.harness is not None and (obs.harness.processes or obs.harness.counts.syscalls):
        head.add_row("", f"[dim]{escape(_harness_line(obs.harness))}[/]")
    if obs.events_lost or obs.truncations:
        head.add_row("", f"[red]{obs.events_lost} events lost, {obs.truncations} truncated[/]")
    if obs.omitted:
        left_out = ", ".join(f"{name} left out {n}" for name, n in obs.omitted.items())
        head.add_row("", f"[red]lists capped at {obs.list_cap} entries: {escape(left_out)}[/]")
    if obs.note:
        head.add_row("", f"[dim]{obs.note}[/]")
    for section, why in obs.missing.items():
        head.add_row("", f"[dim]{section}: not collected — {why}[/]")
    for i, line in enumerate(_coverage_lines(obs.coverage)):
        head.add_row("coverage" if i == 0 else "", line)
    if rec.policy is not None:
        pol = rec.policy
        verdict = "[green]pass[/]" if pol.passed else "[red]violation[/]"
        if pol.passed and pol.unobserved:
            verdict += f" [yellow](partial: {', '.join(pol.unobserved)} not observed)[/]"
        head.add_row("policy", f"{escape(pol.policy)}: {verdict}")
        for fired in pol.fired[:limit]:
            color = "red" if fired.action == "deny" else "yellow"
            head.add_row(
                "",
                f"[{color}]{fired.action}[/] {escape(fired.rule)}"
                f" ({fired.evidence_total} match(es))",
            )
    if rec.redaction is not None and rec.redaction.applied:
        applied = ", ".join(f"{a.rule} x{a.count}" for a in rec.redaction.applied)
        head.add_row("redaction", escape(applied))
    con.print(head)

    omitted = obs.omitted
    if rec.process_tree:
        con.print(_tree(rec.process_tree, limit, omitted.get("process_tree", 0)))
    fs = rec.filesystem
    for label, items in (
        ("reads", fs.reads),
        ("writes", fs.writes),
        ("deletes", fs.deletes),
        ("mkdirs", fs.mkdirs),
    ):
        if items:
            shown, more = _more(items, limit)
            con.print(
                f"[bold]files {label}[/] ({len(items)}{_left_out(omitted, 'filesystem.' + label)})"
            )
            for item in shown:
                con.print(f"  {item}", markup=False)
            if more:
                con.print(more)
    for ren in fs.renames[:limit]:
        con.print(f"[bold]rename[/] {ren.src} → {ren.dst}")
    if fs.failed:
        con.print(f"[bold]failed file operations[/] ({len(fs.failed)})")
        for f in fs.failed[:limit]:
            con.print(f"  {f.op} {f.path}: {f.errno}", markup=False)
    if fs.policy_violations:
        con.print("[bold red]policy violations[/]")
        for v in fs.policy_violations:
            con.print(f"  {v}", markup=False)
    net = rec.network
    if net.attempts or net.binds or net.sends:
        con.print(f"[bold]network[/] ({net.bytes_sent} B sent, {net.bytes_received} B received)")
        for att in [a for a in net.attempts if a.result != "sent"][:limit]:  # datagrams: sends
            con.print(f"  connect {att.protocol} {att.dst} → {att.result}", markup=False)
        for b in net.binds[:limit]:
            con.print(
                f"  bind {b.protocol} {b.addr}" + (" (listening)" if b.listening else ""),
                markup=False,
            )
        for s in net.sends[:limit]:
            con.print(f"  send {s.protocol} {s.dst} {s.bytes} B", markup=False)
    if rec.syscalls.counts:
        top = sorted(rec.syscalls.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        total = sum(rec.syscalls.counts.values())
        con.print(
            f"[bold]syscalls[/] ({total} total): " + ", ".join(f"{name} {n}" for name, n in top)
        )
    ring = rec.syscalls.io_uring
    if ring is not None:
        ops = ", ".join(f"{name} {n}" for name, n in ring.ops.items()) or "none"
        unseen = [] if ring.observed else ["its operations not observed on this kernel"]
        unseen += [f"not decoded: {', '.join(ring.not_decoded)}"] if ring.not_decoded else []
        unseen += [f"{ring.unfinished} unfinished"] if ring.unfinished else []
        con.print("[bold]io_uring[/] ops: " + escape(ops + "".join(f"; {u}" for u in unseen)))


_STATUS_STYLE = {"complete": "green", "incomplete": "yellow", "none": "red"}


def _coverage_lines(coverage: Any) -> list[str]:
    """The coverage status with its reason codes, then each reason's message."""
    if coverage is None:
        return ["[yellow]unknown[/] [dim](the receipt predates coverage statements)[/]"]
    style = _STATUS_STYLE.get(coverage.status, "yellow")
    codes = ", ".join(
        r.code + (f" ({r.count})" if r.count is not None else "") for r in coverage.reasons
    )
    lines = [f"[{style}]{coverage.status}[/]" + (f": {escape(codes)}" if codes else "")]
    for r in coverage.reasons:
        who = f"{r.observer}: " if r.observer else ""
        lines.append(f"[dim]{escape(r.code)} — {escape(who + r.message)}[/]")
    return lines


def _files(a: Any, limit: int) -> list[tuple[str, str]]:
    """Rows for the input and output files (v0.4.0 receipts)."""
    rows = []
    for label, items in (("inputs", a.inputs), ("outputs", a.outputs)):
        shown, more = _more(items, limit)
        for i, f in enumerate(shown):
            line = escape(f.path)
            if f.sha256 is not None:
                line += f"  {f.size} B sha256:{f.sha256[:16]}…"
            status = getattr(f, "status", "copied")
            if status != "copied":
                line += f"  [yellow]{status}: {escape(f.reason or '?')}[/]"
            rows.append((label if i == 0 else "", line))
        if more:
            rows.append(("", more.strip()))
    return rows


def _left_out(omitted: dict[str, int], name: str) -> str:
    n = omitted.get(name, 0)
    return f" [red]+ {n} left out at the list cap[/]" if n else ""


def _tree(nodes: list[Any], limit: int, left_out: int = 0) -> Tree:
    by_pid = {n.pid: n for n in nodes}
    children: dict[int, list[Any]] = {}
    roots = []
    for n in nodes:
        if n.ppid in by_pid and n.ppid != n.pid:
            children.setdefault(n.ppid, []).append(n)
        else:
            roots.append(n)
    capped = f" [red]+ {left_out} left out at the list cap[/]" if left_out else ""
    tree = Tree(f"[bold]processes[/] ({len(nodes)}{capped})")
    shown = 0

    def label(n: Any) -> str:
        argv = " ".join(n.argv) if n.argv else (n.exe or "?")
        if len(argv) > 120:
            argv = argv[:117] + "..."
        end = ""
        if n.signal is not None:
            end = f" [red]signal {n.signal}[/]"
        elif n.exit_code is not None:
            end = f" exit {n.exit_code}"
        ns = f" (ns pid {n.ns_pid})" if n.ns_pid is not None else ""
        return f"[cyan]{n.pid}[/]{ns} {escape(argv)}{end}"

    def add(branch: Tree, n: Any) -> None:
        nonlocal shown
        if shown >= limit * 4:
            return
        shown += 1
        sub = branch.add(label(n))
        for child in children.get(n.pid, []):
            add(sub, child)

    for root in roots:
        add(tree, root)
    if shown < len(nodes):
        tree.add(f"… and {len(nodes) - shown} more")
    return tree


def _harness_line(harness: Any) -> str:
    """What Glasshouse itself ran, kept out of the workload's sections (never silently)."""
    names = [os.path.basename(p.exe) if p.exe else f"pid {p.pid}" for p in harness.processes]
    names = list(dict.fromkeys(names))
    c = harness.counts
    return (
        f"harness (not the workload's): {', '.join(names) or 'no processes'}"
        f" ({len(harness.processes)} processes; {c.syscalls} syscalls, {c.files} file and"
        f" {c.network} network operations kept out)"
    )
