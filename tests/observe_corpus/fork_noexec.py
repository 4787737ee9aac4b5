"""A child that forks without exec, writes a file and exits 3."""

import os
import sys

work = sys.argv[1]
pid = os.fork()
if pid == 0:
    with open(os.path.join(work, "from-child"), "w") as f:
        f.write("x")
    os._exit(3)
_, status = os.waitpid(pid, 0)
print(pid, os.waitstatus_to_exitcode(status))
