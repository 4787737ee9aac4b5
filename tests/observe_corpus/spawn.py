"""posix_spawn and vfork (subprocess uses vfork on Linux when it can)."""

import os
import subprocess
import sys

pid = os.posix_spawn("/bin/true", ["true", "spawned"], os.environ)
os.waitpid(pid, 0)
subprocess.run(["/bin/true", "vforked"], check=True)
sys.exit(0)
