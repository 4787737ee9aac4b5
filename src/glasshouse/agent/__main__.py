"""``glasshouse-agent``: long-running host observation (seed 002's daemon mode).

    glasshouse-agent --receipts-dir DIR --comm python3 [--comm NAME...] [--cgroup PATH...]
                     [--count N] [--duration S] [--quiet]

Loads the eBPF observer once, in agent mode: every exec on the host whose process name
(comm) or cgroup (v2) matches a filter becomes the root of a new observed tree, *in the
kernel* (so nothing it does is missed while the agent catches up), and when that root
exits the agent writes its receipt to ``DIR/<execution_id>.json``. Descendants still
running when their root exits are no longer observed (the receipt names them).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glasshouse.core.errors import GlasshouseError
from glasshouse.core.execution import ExecutionResult, ExecutionSpec, new_execution_id
from glasshouse.core.profiling import Attachment, Observation, ObserverUnavailable
from glasshouse.receipt.pipeline import ReceiptPipeline
from glasshouse.runner import pipeline_for

if TYPE_CHECKING:
    from glasshouse.observe.ebpf import EbpfSession


class _Watched:
    """The receipt's ``execution`` block for a process the agent observed (not started)."""

    name = "agent"
    isolation = "none"


def _parse_ts(value: str | None) -> _dt.datetime | None:
    if not value:
        return None
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def receipt_for(obs: Observation, filters: str, execution_id: str | None = None) -> dict[str, Any]:
    """The receipt data (unsealed) of one observed root, from its Observation."""
    from glasshouse.receipt.aggregate import build_receipt

    root = obs.process_tree[0] if obs.process_tree else None
    if obs.attached is None:
        why = "the observer made the root in the kernel at its exec (sched_process_exec)"
        obs.attached = Attachment(True, "kernel_exec", why)
    now = _dt.datetime.now(_dt.UTC)
    result = ExecutionResult(
        exit_code=root.exit_code if root else None,
        signal=root.signal if root else None,
        started_at=_parse_ts(root.started_at if root else None) or now,
        ended_at=_parse_ts(root.ended_at if root else None) or now,
        root_pid=root.pid if root else None,
        cpu_time_ms=obs.resources.cpu_time_ms if obs.resources else None,
        max_rss_kb=obs.resources.max_rss_kb if obs.resources else None,
        details={"observed_by": "glasshouse-agent", "filter": filters},
    )
    argv = (root.argv or [root.exe or "?"]) if root else ["?"]
    return build_receipt(
        execution_id=execution_id or new_execution_id(),
        spec=ExecutionSpec(argv=argv),
        result=result,
        observations=[obs],
        profile="host",
        backend=_Watched(),  # type: ignore[arg-type]
    )


class Agent:
    """The daemon's core, usable from Python: ``run()`` until stopped, count or duration."""

    def __init__(
        self,
        receipts_dir: str | os.PathLike[str],
        comms: list[str],
        cgroups: list[str],
        *,
        log: Callable[[str], None] = print,
        pipeline: ReceiptPipeline | None = None,
    ) -> None:
        """``pipeline``: how each receipt is finished (redaction, policy, signature), as
        for ``glasshouse run`` and the server; default: sealed and written."""
        from glasshouse.observe.ebpf import EbpfObserver, Watch

        self.pipeline = pipeline if pipeline is not None else ReceiptPipeline()
        self.receipts_dir = Path(receipts_dir)
        self.receipts_dir.mkdir(parents=True, exist_ok=True)
        cgroup_ids = [_cgroup_id(p) for p in cgroups]
        self.filters = ", ".join([f"comm={c}" for c in comms] + [f"cgroup={p}" for p in cgroups])
        self._done: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._log = log
        self.written: list[Path] = []
        self.skipped = 0
        self.observer = EbpfObserver(
            watch=Watch(comms, cgroup_ids, on_root=self._on_root, on_exit=self._done.put)
        )

    def _on_root(self, session: EbpfSession) -> None:  # on the reader thread: log only
        self._log(f"observing pid {session.root_pid}")

    def stop(self) -> None:
        self._stop.set()

    def run(self, count: int | None = None, duration: float | None = None) -> list[Path]:
        deadline = time.monotonic() + duration if duration else None
        try:
            while not self._stop.is_set():
                if count is not None and len(self.written) >= count:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                try:
                    session = self._done.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._finish(session)
        finally:
            self.skipped = self.observer.skipped_roots()
            if self.skipped:
                self._log(f"{self.skipped} watched exec(s) not observed: all session slots busy")
            self.observer.close()
        return self.written

    def _finish(self, session: EbpfSession) -> None:
        obs = session.stop(linger=0)
        data = receipt_for(obs, self.filters)
        path = self.receipts_dir / f"{data['execution_id']}.json"
        sealed = self.pipeline.finish(data, path=path).data
        self.written.append(path)
        self._log(
            f"pid {session.root_pid} exited ({sealed['outcome']['exit_code']}): "
            f"{len(sealed['process_tree'])} processes, {obs.events} events, "
            f"{obs.events_lost} lost -> {path}"
        )


def _cgroup_id(path: str) -> int:
    """A cgroup v2 directory's id is its inode number (what bpf_get_current_cgroup_id says)."""
    p = Path(path)
    if not p.is_absolute():
        for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            if (Path(root) / path).is_dir():
                p = Path(root) / path
                break
    try:
        return os.stat(p).st_ino
    except OSError as exc:
        raise SystemExit(f"glasshouse-agent: cgroup {path}: {exc.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="glasshouse-agent",
        description="Observe matching processes with eBPF; write a receipt per root exit.",
    )
    ap.add_argument("--receipts-dir", required=True, help="where receipts are written")
    ap.add_argument("--comm", action="append", default=[], help="process name to observe")
    ap.add_argument("--cgroup", action="append", default=[], help="cgroup v2 path to observe")
    ap.add_argument("--count", type=int, help="exit after this many receipts")
    ap.add_argument("--duration", type=float, help="exit after this many seconds")
    ap.add_argument("--signing-key", help="Ed25519 private key: sign every receipt (DSSE)")
    ap.add_argument("--redact", action="store_true", help="replace secrets in receipts")
    ap.add_argument("--policy", help="YAML policy whose verdict each receipt records")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if not args.comm and not args.cgroup:
        ap.error("give at least one --comm or --cgroup filter")
    for name in args.comm:
        if len(name.encode()) > 15:
            ap.error(f"--comm {name!r}: process names are at most 15 bytes (TASK_COMM_LEN)")

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"glasshouse-agent: {msg}", file=sys.stderr, flush=True)

    try:
        pipeline = pipeline_for(
            redact=args.redact, policy=args.policy, signing_key=args.signing_key
        )
    except GlasshouseError as exc:  # a bad key or policy file: say which, before watching
        print(f"glasshouse-agent: {exc.diagnostic()}", file=sys.stderr)
        return 2
    try:
        agent = Agent(args.receipts_dir, args.comm, args.cgroup, log=log, pipeline=pipeline)
    except ObserverUnavailable as exc:
        print(f"glasshouse-agent: host observation unavailable: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.stop())
    log(f"watching {agent.filters}; receipts in {agent.receipts_dir}")
    written = agent.run(count=args.count, duration=args.duration)
    log(f"stopped after {len(written)} receipt(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
