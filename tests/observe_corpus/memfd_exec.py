"""fexecve of a memfd: a copy of echo in a memfd named "payload", run without any path
(execveat(fd, "", AT_EMPTY_PATH)). The exe is the memfd, by its name."""

import os
import shutil

m = os.memfd_create("payload")
with open(shutil.which("echo"), "rb") as f:
    os.write(m, f.read())
os.execve(m, ["payload", "from-memfd"], {})
