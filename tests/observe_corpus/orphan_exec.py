"""An orphan that keeps working: the middle process exits at once; the grandchild waits
until it has been reparented (to init or a subreaper), then execs sh, which writes a file
and execs sleep. The root exits once the file is there, leaving the orphan running: the
backend ends it with the run. Prints the middle and grandchild pids."""

import os
import sys
import time

work = sys.argv[1]
done = os.path.join(work, "reparented")
r, w = os.pipe()
mid = os.fork()
if mid == 0:
    os.close(r)
    me = os.getpid()
    gc = os.fork()
    if gc == 0:
        os.close(w)
        deadline = time.monotonic() + 10
        while os.getppid() == me and time.monotonic() < deadline:
            time.sleep(0.01)
        script = f"echo $PPID > {done}.tmp && mv {done}.tmp {done} && exec sleep 30"
        os.execv("/bin/sh", ["sh", "-c", script])
    os.write(w, str(gc).encode())
    os._exit(0)
os.close(w)
gc = int(os.read(r, 64))
os.waitpid(mid, 0)
deadline = time.monotonic() + 20
while not os.path.exists(done) and time.monotonic() < deadline:
    time.sleep(0.01)
print(mid, gc, flush=True)
