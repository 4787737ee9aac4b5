#!/usr/bin/python3 -IS
"""Glasshouse guest init: PID 1 of every microVM (seed 001).

Runs inside the guest with only the standard library. It mounts the pseudo filesystems and
a RAM workspace, imports what user code commonly needs, announces ``GH-READY`` on the
console and waits for exactly one request (vsock port 52, or the serial console when the VM
has no vsock device). A warm snapshot is taken while it waits, so every restored VM starts
here with Python already running.

For the request it: mixes the host's fresh entropy into the kernel pool and reseeds the
CRNG and Python's ``random`` (clones of one snapshot must not share random state), sets the
clock, writes the files into /work, runs the command with its limits, streams its output
while it runs (vsock), and answers with one result frame (exit status, capped stdout/stderr
with their full size and sha256, rusage, requested output files). Then it powers the VM
off. ``python3 -c CODE`` runs in this warm
interpreter (no fork/exec: those run in the emulated guest kernel on kvm_pvm hosts and cost
seconds); anything else is executed as a child process.

The host trusts none of this: it parses the result strictly (glasshouse.guest.transport).

This file is the init's entry point (``/init``); its parts ship beside the wire format
(``gh_transport``) in ``/usr/lib/glasshouse``: ``gh_system`` (mounts, console, what was
opened before the snapshot), ``gh_channels`` (vsock and serial console), ``gh_reseed``
(entropy and clock), ``gh_workspace`` (the request's fields, files in, streams and outputs
out), ``gh_runners`` (in-process and exec'd commands), ``gh_limits`` (the run's limits),
``gh_stream`` (output streamed while the command runs), ``gh_audit`` (guest events) and
``gh_warm`` (the snapshot boot's warm-up).
"""

from __future__ import annotations

# Only built-in modules at start-up: on kvm_pvm every page fault and file read runs in the
# emulated guest kernel, so loading e.g. hashlib's libcrypto costs seconds of boot. The
# init's own modules (beside gh_transport in /usr/lib/glasshouse) keep to that too.
import os
import sys
import time

sys.path.insert(0, "/usr/lib/glasshouse")
import gh_transport as T
from gh_audit import GuestEvents
from gh_channels import Serial, Vsock, wait_wake
from gh_limits import NOBODY, limit_workspace, oom_kills, open_kmsg, workspace_full
from gh_reseed import prime, reseed
from gh_runners import open_io, run_exec, run_inprocess, runs_inprocess
from gh_stream import OutputPump
from gh_system import PRE, cmdline, console, power_off, setup, uptime
from gh_warm import import_common, measure_room, prefault, preopen, reexec_with_malloc
from gh_workspace import capture, error_result, parse_request, read_outputs, write_files


def _handle(req: dict, transport: object = None) -> dict:
    request = parse_request(req)
    marks = [("start", time.monotonic())]
    guest: dict = {"kernel": PRE.get("release") or os.uname().release, "steps_ms": {}}
    guest.update(reseed(req))
    marks.append(("reseed", time.monotonic()))
    limits = request["limits"]
    disk = limit_workspace(limits.get("disk_bytes"))
    if disk is not None:
        guest["workspace_bytes"] = disk
    owner = (NOBODY, NOBODY) if limits.get("pids") else None
    write_files(req.get("files"), owner=owner)
    req["files"] = None  # their memory back to the heap the run may use
    argv, env, cwd = request["argv"], request["env"], request["cwd"]
    fds = PRE.get("fds") or open_io()
    stdin = request["stdin"]
    if stdin:
        os.write(fds[0], stdin)
        os.lseek(fds[0], 0, os.SEEK_SET)
    marks.append(("files", time.monotonic()))
    # The exit status of the in-process run is not an OS exit status, so the result says
    # which way the command ran.
    events = None
    if request["events_cap"] is not None:
        events = GuestEvents(transport, request["events_cap"])
    cap = request["output_bytes"]
    pump = _pump(transport, fds)
    inprocess = runs_inprocess(argv)
    if pump is not None:
        pump.start(transport.send, cap, poll=not inprocess)
    if inprocess:
        flush = pump.flush if pump is not None else None
        outcome = run_inprocess(limits, argv[2], argv[3:], env, cwd, fds, events, flush)
        outcome["mode"] = "inprocess"
        pid, exe = os.getpid(), sys.executable
    else:
        kmsg = PRE.get("kmsg") or _open_kmsg()
        outcome = run_exec(limits, argv, env, cwd, fds)
        outcome["mode"] = "exec"
        pid, exe = outcome.pop("pid", 0), argv[0]
        missing = outcome.pop("not_found", None)
        if missing is not None:
            os.write(fds[2], f"{missing}: command not found\n".encode())
        _oom_killed(outcome, kmsg)
    sent = pump.stop() if pump is not None else [0, 0]
    if events is not None:
        code, sig = outcome.get("exit_code"), outcome.get("signal")
        events.events.append(["process", pid, exe, list(argv), code, sig])  # never capped
        outcome["events"] = {"events": events.events, "count": events.count, "lost": events.lost}
    marks.append(("run", time.monotonic()))
    outcome["stdout"] = capture(fds[1], cap, sent[0])
    outcome["stderr"] = capture(fds[2], cap, sent[1])
    outcome["outputs"] = read_outputs(request["outputs"], request["outputs_bytes"])
    if limits.get("disk_bytes"):
        guest["workspace_full"] = workspace_full()
    marks.append(("collect", time.monotonic()))
    for i in range(1, len(marks)):
        (_, t0), (label, t1) = marks[i - 1], marks[i]
        guest["steps_ms"][label] = round((t1 - t0) * 1000, 1)
    outcome["guest"] = guest
    outcome["v"] = 1
    outcome.setdefault("error", None)
    return outcome


def _pump(transport: object, fds: tuple[int, int, int]) -> OutputPump | None:
    """The output pump (made before the snapshot when warm) where the channel streams."""
    if not getattr(transport, "streams_output", False):
        return None
    return PRE.get("pump") or OutputPump(fds)


def _open_kmsg() -> int | None:
    try:
        return open_kmsg()
    except OSError:
        return None


def _oom_killed(outcome: dict, kmsg: int | None) -> None:
    """An exec'd command SIGKILLed (or a shell reporting a child's SIGKILL as 137): did the
    guest kernel's OOM killer do it? Its log says."""
    if outcome.get("signal") != 9 and outcome.get("exit_code") != 137:
        return
    if kmsg is None:
        return
    kills = oom_kills(kmsg)
    if kills:
        note = "the guest kernel's OOM killer (guest RAM exhausted): " + "; ".join(kills)
        outcome["oom"] = note[:400]


def main() -> None:
    if os.getpid() == 1:
        setup()
    options = cmdline()
    if options.get("gh.warm") == "1":
        reexec_with_malloc()
    console(f"gh: init up {uptime()}".encode())
    if options.get("gh.warm") == "1":
        # Snapshot boot: the snapshot is taken while we wait for the wake line on the
        # console. Only then listen on vsock: Firecracker resets the vsock transport of a
        # restored VM, which would kill a connection the host opened before the guest
        # kernel processed that reset, but never a listener created after it.
        import_common()
        preopen()
        prefault()
        measure_room()
        console(f"gh: warm {uptime()}".encode())
        wait_wake()
        transport: Vsock | Serial = Vsock()
        # "Listening now": the host connects once instead of polling, and each refused
        # poll would cost the guest kernel an emulated vsock reset.
        console(T.READY_LINE)
    else:
        transport = Serial() if options.get("gh.transport") == "serial" else Vsock()
        console(T.READY_LINE)
    t_listen = time.monotonic()
    try:
        req = transport.receive()
        primed = None
        if req.get("kind") == "prime":  # the host's warm pool: no answer, the request follows
            primed = prime(req)
            req = transport.receive()
        t_request = time.monotonic()
        result = _handle(req, transport)
        if primed is not None:
            result["guest"]["prime"] = primed
        result["guest"]["ms"] = {
            "wake_to_listen": round((t_listen - PRE.get("woken", t_listen)) * 1000, 1),
            "listen_to_request": round((t_request - t_listen) * 1000, 1),
            "handle": round((time.monotonic() - t_request) * 1000, 1),
        }
    except Exception as exc:  # a broken request still gets an answer
        result = error_result(exc)
    transport.send(T.encode_frame(result))
    transport.linger(10.0)
    os.sync()
    if os.getpid() == 1:
        power_off()
    sys.exit(0)


if __name__ == "__main__":
    main()
