"""Double fork: the middle process exits at once; the grandchild outlives it, then writes
a file and exits 7. The root waits for that file (bounded) and prints both pids."""

import os
import sys
import time

work = sys.argv[1]
done = os.path.join(work, "grandchild-done")
r, w = os.pipe()
mid = os.fork()
if mid == 0:
    os.close(r)
    gc = os.fork()
    if gc == 0:
        time.sleep(0.3)  # the middle process is gone by now
        with open(done + ".tmp", "w") as f:
            f.write(str(os.getppid()))
        os.rename(done + ".tmp", done)
        os._exit(7)
    os.write(w, str(gc).encode())
    os._exit(0)
os.close(w)
gc = int(os.read(r, 64))
os.waitpid(mid, 0)
deadline = time.monotonic() + 10
while not os.path.exists(done) and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.1)  # let the grandchild exit
print(mid, gc)
