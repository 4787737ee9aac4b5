"""Network operations against loopback listeners the test opened; ports come in argv:
net.py WORK TCP4_PORT TCP6_PORT(0=skip) UDP_PORT CLOSED_PORT UNIX_PATH"""

import os
import socket
import sys

work, tcp4, tcp6, udp, closed, unix_path = sys.argv[1:7]
tcp4, tcp6, udp, closed = int(tcp4), int(tcp6), int(udp), int(closed)

s = socket.create_connection(("127.0.0.1", tcp4))  # connected
s.sendall(b"p" * 1000)
got = b""
while len(got) < 500:
    chunk = s.recv(500 - len(got))
    if not chunk:
        break
    got += chunk
s.close()

r = socket.socket()
print("refused", r.connect_ex(("127.0.0.1", closed)))  # refused
r.close()

nb = socket.socket()
nb.setblocking(False)
print("nonblock", nb.connect_ex(("127.0.0.1", tcp4)))  # in progress (or connected)
nb.close()

if tcp6:
    s6 = socket.create_connection(("::1", tcp6))
    s6.close()

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"d" * 42, ("127.0.0.1", udp))  # sendto without connect
u.sendmsg([b"m" * 7], [], 0, ("127.0.0.1", udp))  # sendmsg with a destination
u.connect(("127.0.0.1", udp))  # udp "connect"
u.send(b"c" * 8)
u.close()

x = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
x.connect(unix_path)
x.close()
y = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
print("unix missing", y.connect_ex(os.path.join(work, "no-such.sock")))
y.close()

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print("listening", srv.getsockname()[1])
srv.close()
