"""The guest's own record of what the user's code asked its runtime to do (the ``guest`` and
``combined`` profiles): PEP 578 audit events, as raw lists ``gh_transport`` validates on the
host. Only built-in modules at import."""

from __future__ import annotations

import os
import sys

import gh_transport as T


class GuestEvents:
    """The guest's own record of what the user's code asked its runtime to do, for the
    ``guest``/``combined`` profiles: PEP 578 audit hooks (file opens, deletes, renames,
    mkdirs, links, process spawns, socket connects and binds) around an in-process run, and
    the command itself for an exec'd one. Raw events go to the host in batches (a frame
    each on vsock, the rest with the result); the host folds them into receipt sections
    and labels them the guest's claims. A hook cannot be removed, so recording stops by a
    flag once the user's code returned; past ``cap`` events are only counted as lost."""

    def __init__(self, transport: object, cap: int) -> None:
        self.events: list[list] = []
        self.count = 0
        self.lost = 0
        self.cap = cap
        self.sent = 0
        self.on = False
        self._transport = transport
        self._batches = getattr(transport, "streams_events", False)

    def start(self) -> None:
        self.on = True
        sys.addaudithook(self._hook)

    def stop(self) -> None:
        self.on = False

    def add(self, event: list) -> None:
        self.count += 1
        if self.sent + len(self.events) >= self.cap:
            self.lost += 1
            return
        self.events.append(event)
        if len(self.events) >= EVENT_BATCH and self._batches:
            batch, self.events = self.events, []
            self.sent += len(batch)
            was, self.on = self.on, False  # the send itself is not the user's doing
            try:
                self._transport.send(T.encode_frame({"v": 1, "kind": "events", "events": batch}))
            finally:
                self.on = was

    def _hook(self, name: str, args: tuple) -> None:
        if not self.on or name not in AUDITED:
            return
        try:
            event = AUDITED[name](args)
        except Exception:  # never break the user's code over a record
            event = None
        if event is not None:
            self.add(event)


def _p(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, int):
        return f"<fd {value}>"
    path = os.fspath(value)
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    return path if path.startswith("/") else os.path.join(os.getcwd(), path)


def _addr(sock: object, address: object) -> tuple[str, str, str]:
    family = getattr(sock, "family", None)
    kind = getattr(sock, "type", None)
    fam = {1: "unix", 2: "inet", 10: "inet6", 40: "vsock"}.get(int(family or 0), str(family))
    proto = {1: "tcp", 2: "udp"}.get(int(kind or 0) & 0xF, str(kind))
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        dst = f"[{host}]:{address[1]}" if fam == "inet6" else f"{host}:{address[1]}"
    else:
        dst = _p(address) if isinstance(address, (str, bytes)) else str(address)
    return fam, proto, dst


AUDITED = {
    "open": lambda a: (
        ["open", _p(a[0]), int(a[2]) if len(a) > 2 and a[2] is not None else 0]
        if a[0] is not None
        else None
    ),
    "os.remove": lambda a: ["delete", _p(a[0])],
    "os.rmdir": lambda a: ["delete", _p(a[0])],
    "shutil.rmtree": lambda a: ["delete", _p(a[0])],
    "os.rename": lambda a: ["rename", _p(a[0]), _p(a[1])],
    "os.mkdir": lambda a: ["mkdir", _p(a[0])],
    "os.link": lambda a: ["link", _p(a[0]), _p(a[1]), "hard"],
    "os.symlink": lambda a: ["link", os.fsdecode(a[0]), _p(a[1]), "symbolic"],
    "subprocess.Popen": lambda a: [
        "spawn",
        os.fsdecode(a[0]) if a[0] is not None else "",
        [os.fsdecode(x) for x in ([a[1]] if isinstance(a[1], (str, bytes)) else a[1])],
    ],
    "os.system": lambda a: ["spawn", "/bin/sh", ["/bin/sh", "-c", os.fsdecode(a[0])]],
    "os.exec": lambda a: ["spawn", os.fsdecode(a[0]), [os.fsdecode(x) for x in a[1]]],
    "os.posix_spawn": lambda a: ["spawn", os.fsdecode(a[0]), [os.fsdecode(x) for x in a[1]]],
    "os.spawn": lambda a: ["spawn", os.fsdecode(a[1]), [os.fsdecode(x) for x in a[2]]],
    "socket.connect": lambda a: ["connect", *_addr(a[0], a[1])],
    "socket.bind": lambda a: ["bind", *_addr(a[0], a[1])],
}
#: Events per intermediate frame (each send is an emulated syscall path on kvm_pvm).
EVENT_BATCH = 512
