"""A restored clone's own randomness and clock: the host's fresh entropy into the kernel
pool (and a CRNG reseed) and Python's ``random``, the host's time into CLOCK_REALTIME.

Only built-in modules at import (``random`` is loaded when reseeding)."""

from __future__ import annotations

import fcntl
import os
import struct
import time

import gh_transport as T
from gh_system import PRE

_RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
_RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
#: A primed VM's clock is set again at the request only when it is off by more than this
#: (the host's timestamp is already a few ms old when it arrives).
CLOCK_SLACK_NS = 20_000_000


def reseed(req: dict) -> dict:
    """Make this clone's randomness and clock its own: the host's fresh bytes into the
    kernel pool and Python's ``random``, the host's time into CLOCK_REALTIME. A VM primed
    ahead (the host's warm pool) already did both; its request carries no entropy, and the
    clock, running since, is set again only if it drifted."""
    facts = {}
    entropy = T.unb64(req.get("entropy", ""), "entropy", 512)
    if entropy:
        fd = PRE.get("urandom") or os.open("/dev/urandom", os.O_WRONLY)
        try:
            try:
                fcntl.ioctl(
                    fd, _RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy
                )
                fcntl.ioctl(fd, _RNDRESEEDCRNG)
                facts["crng_reseeded"] = True
            except OSError as exc:
                facts["crng_reseeded"] = False
                facts["reseed_error"] = str(exc)
        finally:
            if fd != PRE.get("urandom"):
                os.close(fd)
    if entropy or not PRE.get("primed"):
        import random

        # Seeded from the host's fresh bytes (no syscall after restore); os.urandom only
        # when the request carried none.
        random.seed(entropy if entropy else os.urandom(32))
    now = req.get("time_ns")
    if type(now) is int and now > 0:
        skew = time.time_ns() - now
        facts["clock_skew_ms"] = round(skew / 1e6, 1)
        if not PRE.get("primed") or abs(skew) > CLOCK_SLACK_NS:
            try:
                time.clock_settime_ns(time.CLOCK_REALTIME, now)
                facts["clock_set"] = True
            except OSError:
                facts["clock_set"] = False
    return facts


def prime(req: dict) -> dict:
    """The warm pool's step ahead of a request: fresh entropy and the time, nothing else."""
    t0 = time.monotonic()
    facts = reseed(req)
    PRE["primed"] = True
    facts["ms"] = round((time.monotonic() - t0) * 1000, 1)
    return facts
