"""Every file operation the receipt lists, with absolute, relative (cwd) and dirfd paths,
and failed attempts."""

import ctypes
import os
import sys

work = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)

os.chdir(work)
with open("input.txt", "w") as f:  # relative to the cwd: a write (O_CREAT|O_TRUNC)
    f.write("data")
with open(os.path.join(work, "input.txt")) as f:  # absolute: a read
    f.read()
fd = libc.creat(b"created.txt", 0o644)  # creat(2)
os.close(fd)
os.truncate("created.txt", 0)
os.mkdir("sub")
os.chdir("sub")  # relative chdir: later relative paths resolve under sub/
with open("in-sub.txt", "w") as f:
    f.write("x")
os.chdir("..")
dfd = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
with open("at-dirfd.txt", "w", opener=lambda p, fl: os.open(p, fl, 0o644, dir_fd=dfd)) as f:
    f.write("y")
os.rename("at-dirfd.txt", "renamed-at.txt", src_dir_fd=dfd, dst_dir_fd=dfd)
os.unlink("renamed-at.txt", dir_fd=dfd)  # unlinkat
os.mkdir("gone", dir_fd=dfd)  # mkdirat
os.rmdir("gone", dir_fd=dfd)  # unlinkat(AT_REMOVEDIR)
os.close(dfd)
os.rename("input.txt", "moved.txt")
os.link("moved.txt", "hard.txt")
os.symlink("moved.txt", "soft.txt")
os.unlink("hard.txt")
os.mkdir("empty")
os.rmdir("empty")
fchdir_fd = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
os.fchdir(fchdir_fd)
os.close(fchdir_fd)
with open("after-fchdir.txt", "w") as f:
    f.write("z")
os.chdir(work)
# failed attempts
for attempt in (
    lambda: open("missing.txt"),  # noqa: SIM115 - the failed open is the point
    lambda: os.unlink("missing-unlink.txt"),
    lambda: os.mkdir("sub"),
    lambda: os.rename("missing-src", "never-dst"),
):
    try:
        attempt()
    except OSError:
        pass
