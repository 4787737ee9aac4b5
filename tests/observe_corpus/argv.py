"""Exec a child whose argv has spaces, unicode and a long argument."""

import os
import sys

LONG = "L" * 6000
ARGS = ["with space", "ünïcødé ✓", "", LONG, "--flag=a b"]
pid = os.fork()
if pid == 0:
    os.execv("/bin/echo", ["echo", *ARGS])
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
