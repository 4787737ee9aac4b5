"""Four threads each write a file: one process, not five."""

import os
import sys
import threading

work = sys.argv[1]


def worker(i: int) -> None:
    with open(os.path.join(work, f"thread-{i}"), "w") as f:
        f.write(str(i))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
