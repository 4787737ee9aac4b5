"""Build the sandbox's seccomp rules with Debian's python3-seccomp and write the BPF to stdout.

Run by /usr/bin/python3 (which has python3-seccomp) from tests/test_sandbox.py, to check our
ctypes binding of libseccomp emits the very same program. Exit code 3: binding not installed.
"""

import errno
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

try:
    import seccomp
except ImportError:
    sys.exit(3)

from glasshouse.backends import _seccomp as ours

f = seccomp.SyscallFilter(seccomp.ALLOW)
for names in ours.DENIED.values():
    for name in names:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
for flag in ours.CLONE_NS_FLAGS.values():
    f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
for name in ours.ENOSYS_SYSCALLS:
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
r, w = os.pipe()
with os.fdopen(w, "wb") as out:
    f.export_bpf(out)
data = b""
while chunk := os.read(r, 65536):
    data += chunk
sys.stdout.buffer.write(data)
