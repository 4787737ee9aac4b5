"""An unrelated busy process (NOT run under the observer): opens, writes and connects in a
loop until killed, its time is up, or a ``stop`` file appears in its directory, so a
concurrent observed run can show no phantom entries. Prints ``ready`` after its first round
and, when it stops, how many rounds it made: the test's evidence it was busy all along."""

import os
import socket
import sys
import time

work = sys.argv[1]
deadline = time.monotonic() + float(sys.argv[2])
path = os.path.join(work, "busy-phantom.txt")
stop = os.path.join(work, "stop")
rounds = 0
while time.monotonic() < deadline and not os.path.exists(stop):
    with open(path, "w") as f:
        f.write("x")
    os.unlink(path)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("127.0.0.1", 9))
    s.close()
    rounds += 1
    if rounds == 1:
        print("ready", flush=True)
print(f"stopped after {rounds} rounds", flush=True)
