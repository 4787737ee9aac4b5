"""The step agent: runs *inside* a session's sandbox and starts each step there.

Standard library only, never imported by the host: the host passes this file's source to
``python3 -c`` as the sandbox's command. Two roles, by ``argv[1]``:

``agent CTL_FD``
    The session's long-lived process (started, like the interpreter, by a bootstrap that
    reads this source from its socket as the first message). On the SOCK_SEQPACKET socket
    ``CTL_FD`` it takes JSON requests with fds attached (SCM_RIGHTS) and answers with JSON:

    - ``{"op": "spawn", "id", "argv", "env", "cwd"}`` + fds (stdin, stdout, stderr): fork a
      child that waits at a gate with those fds as 0-2; answer ``{"op": "spawned", "id",
      "pid"}`` (the pid inside the sandbox). ``{"op": "go", "id"}`` opens the gate and the
      child execs ``argv``; when it ends: ``{"op": "exit", "id", "status", "exec_errno"}``.
    - ``{"op": "interp", "id", "argv"}`` + fds (a socket): start the persistent interpreter
      (the ``interp`` role below, ``argv`` from the host) with that socket as fd 3; answered
      and ended like ``spawn``, without a gate.

``interp FD`` (FD is 3: the agent puts the socket there)
    The session's persistent Python interpreter (a fresh ``python3``, so ``site`` and the
    system's packages are there). The host starts it with a short bootstrap that reads this
    source from the socket; once loaded it says ``{"op": "ready"}``. Then each
    ``{"op": "run", "id", "env", "cwd"}`` + fds (stdin, stdout, stderr, code) runs the code
    read from the last fd in one namespace kept across steps, and answers ``{"op": "done",
    "id", "exit_code", "threads"}``.

The agent is the sandbox's PID 1 (bwrap ``--as-pid-1``): nothing inside can kill it (the
kernel drops signals from inside the namespace that its init has no handler for), so a step
that runs ``kill -9 -1`` ends the interpreter and itself, not the session. It reaps orphans.

Everything here shares the workload's trust domain: the host trusts none of it for the
receipt's observation (that is the host's eBPF), only as the channel that starts steps.
"""

import array
import fcntl
import json
import os
import selectors
import signal
import socket
import sys

_MAX_MSG = 1 << 16
_MAX_FDS = 8


def _recv(sock):
    """One request: (message dict, fds) or (None, []) at EOF."""
    fds = array.array("i")
    data, anc, _flags, _addr = sock.recvmsg(_MAX_MSG, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def _send(sock, message):
    sock.sendmsg([json.dumps(message).encode()])


# -- the agent ----------------------------------------------------------------------------
class _Agent:
    def __init__(self, ctl_fd):
        self.ctl = socket.socket(fileno=ctl_fd)
        os.set_inheritable(ctl_fd, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake = wake_r
        self.sel.register(wake_r, selectors.EVENT_READ, "chld")
        self.gates = {}  # id -> gate write end
        self.children = {}  # pid -> (id, errpipe read end)

    def serve(self):
        while True:
            for key, _ in self.sel.select():
                if key.data == "ctl":
                    message, fds = _recv(self.ctl)
                    if message is None:
                        return  # the host is gone: the sandbox ends with us
                    self._handle(message, fds)
                else:
                    try:
                        while len(os.read(self.wake, 512)) == 512:
                            pass
                    except BlockingIOError:
                        pass
                    self._reap()

    def _handle(self, message, fds):
        op, ident = message.get("op"), message.get("id")
        if op == "go":
            gate = self.gates.pop(ident, None)
            if gate is not None:
                os.write(gate, b"1")
                os.close(gate)
            return
        if op == "spawn" and len(fds) == 3:
            self._fork(ident, fds, message["argv"], message.get("env") or {}, message.get("cwd"))
            return
        if op == "interp" and len(fds) == 1:  # argv from the host: it has this source
            null = os.open(os.devnull, os.O_RDWR)
            fds = [null, os.dup(null), os.dup(null), fds[0]]
            self._fork(ident, fds, message["argv"], dict(os.environ), None, gated=False)
            return
        for fd in fds:
            os.close(fd)
        _send(self.ctl, {"op": "error", "id": ident, "error": f"bad request {op!r}"})

    def _fork(self, ident, fds, argv, env, cwd, gated=True):
        gate_r, gate_w = os.pipe() if gated else (-1, -1)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the step's process: fds in place, wait at the gate, exec
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _child_fds(fds, err_w, gate_r)
                if cwd:
                    os.chdir(cwd)
                if gated and os.read(_GATE_FD, 1) != b"1":
                    os._exit(125)  # the host never said go
                if gated:
                    os.close(_GATE_FD)
                os.execvpe(argv[0], argv, env)
            except OSError as exc:
                os.write(_ERR_FD, str(exc.errno or 0).encode())
            os._exit(127)
        for fd in fds:
            os.close(fd)
        os.close(err_w)
        if gated:
            os.close(gate_r)
            self.gates[ident] = gate_w
        self.children[pid] = (ident, err_r)
        _send(self.ctl, {"op": "spawned", "id": ident, "pid": pid})

    def _reap(self):
        """Reap every ended child: a step's or the interpreter's is reported; anything else
        is an orphan the agent, as PID 1, inherited."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            ident, err_r = entry
            raw = os.read(err_r, 32)
            os.close(err_r)
            gate = self.gates.pop(ident, None)
            if gate is not None:
                os.close(gate)
            errno = int(raw) if raw.isdigit() else None
            _send(self.ctl, {"op": "exit", "id": ident, "status": status, "exec_errno": errno})


#: Where a step's process keeps the exec-error pipe and the gate until it execs.
_ERR_FD, _GATE_FD = 1000, 1001


def _child_fds(fds, err_w, gate_r):
    """In the forked child: ``fds`` become 0, 1, 2, 3...; the error pipe and the gate move
    to :data:`_ERR_FD`/:data:`_GATE_FD` (close-on-exec); every other fd is closed."""
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    os.dup2(err_w, _ERR_FD, inheritable=False)
    if gate_r >= 0:
        os.dup2(gate_r, _GATE_FD, inheritable=False)
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    os.closerange(len(moved), _ERR_FD)
    os.closerange(_GATE_FD + 1 if gate_r >= 0 else _ERR_FD + 1, 1 << 20)


# -- the persistent interpreter ---------------------------------------------------------
def _interp(fd):
    import threading
    import traceback

    sock = socket.socket(fileno=fd)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    null = os.open(os.devnull, os.O_RDWR)
    home = os.getcwd()
    sys.argv[:] = ["-c"]  # as ``python3 -c CODE`` sees itself
    sys.path.insert(0, "")  # and imports from its working directory (the workspace)
    # Started: everything the interpreter itself needs is loaded, so a step's observation
    # (which begins at the hand-over) holds only what the step's code does.
    _send(sock, {"op": "ready", "id": 0})
    while True:
        message, fds = _recv(sock)
        if message is None:
            return
        if message.get("op") != "run" or len(fds) != 4:
            for x in fds:
                os.close(x)
            _send(sock, {"op": "error", "id": message.get("id"), "error": "bad request"})
            continue
        stdin, stdout, stderr, code_fd = fds
        with os.fdopen(code_fd, "rb") as f:
            code = f.read().decode("utf-8", "surrogateescape")
        for target, src in enumerate((stdin, stdout, stderr)):
            os.dup2(src, target)
            os.close(src)
        saved_env = dict(os.environ)
        os.environ.update(message.get("env") or {})
        exit_code = 0
        try:
            if message.get("cwd"):
                os.chdir(message["cwd"])
            exec(compile(code, f"<step {message.get('id')}>", "exec"), namespace)
        except SystemExit as exc:
            if exc.code is None:
                exit_code = 0
            elif isinstance(exc.code, int):
                exit_code = exc.code & 0xFF
            else:
                print(exc.code, file=sys.stderr)
                exit_code = 1
        except BaseException:
            traceback.print_exc()
            exit_code = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.environ.clear()
        os.environ.update(saved_env)
        try:
            os.chdir(home)
        except OSError:
            pass
        for target in (0, 1, 2):
            os.dup2(null, target)
        threads = threading.active_count() - 1
        _send(
            sock,
            {"op": "done", "id": message.get("id"), "exit_code": exit_code, "threads": threads},
        )


def main():
    role, fd = sys.argv[1], int(sys.argv[2])
    if role == "agent":
        _Agent(fd).serve()
    elif role == "interp":
        _interp(fd)
    else:
        sys.exit(f"step_agent: unknown role {role!r}")


if __name__ == "__main__":
    main()
