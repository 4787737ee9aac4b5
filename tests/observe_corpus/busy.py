"""An unrelated busy process (NOT run under the observer): opens, writes and connects in a
loop until killed, so a concurrent observed run can show no phantom entries."""

import os
import socket
import sys
import time

work = sys.argv[1]
deadline = time.monotonic() + float(sys.argv[2])
path = os.path.join(work, "busy-phantom.txt")
while time.monotonic() < deadline:
    with open(path, "w") as f:
        f.write("x")
    os.unlink(path)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("127.0.0.1", 9))
    s.close()
