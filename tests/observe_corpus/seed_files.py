"""The seed's filesystem fields, adversarially: every way a path's content or existence
changes (writes) or a path goes away (deletes), including the ones that are easy to miss:
renames over an existing file, an exchange, dirfd-relative namespace calls, links, nodes,
anonymous tmpfiles named later, an O_PATH fd reopened through /proc/self/fd, and files that
never had a path (a memfd, an unnamed tmpfile). Prints which optional calls the kernel
allowed here (as JSON), since a sandbox may refuse some of them."""

import ctypes
import json
import os
import stat
import sys

work = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH, RENAME_EXCHANGE = -100, 0x400, 0x1000, 2
allowed = {}


def touch(name: str, data: bytes = b"x") -> None:
    with open(name, "wb") as f:
        f.write(data)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise OSError(ctypes.get_errno(), what)


os.chdir(work)
touch("old.txt")  # a write
touch("new.txt")  # a write...
os.rename("new.txt", "old.txt")  # ...then gone (a delete); old.txt replaced (a write)
touch("left", b"L")
touch("right", b"R")
check(libc.renameat2(AT_FDCWD, b"left", AT_FDCWD, b"right", RENAME_EXCHANGE) == 0, "exchange")

os.mkdir("d")  # mkdir: a write (and a mkdir)
dfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)  # a read of the directory
os.mkdir("sub", dir_fd=dfd)  # mkdirat
os.mkfifo("fifo", dir_fd=dfd)  # mknodat S_IFIFO
os.mknod("sock", stat.S_IFSOCK | 0o600, dir_fd=dfd)  # mknodat S_IFSOCK
os.symlink("../old.txt", "sym", dir_fd=dfd)  # symlinkat: the link is a write
os.link("old.txt", "d/hard")  # linkat from the cwd: the new name is a write
os.link("hard", "hard2", src_dir_fd=dfd, dst_dir_fd=dfd)  # linkat, both dirfd-relative
os.rename("hard2", "moved", src_dir_fd=dfd, dst_dir_fd=dfd)  # renameat: hard2 deleted
os.unlink("moved", dir_fd=dfd)  # unlinkat
os.rmdir("sub", dir_fd=dfd)  # unlinkat(AT_REMOVEDIR)
os.close(dfd)
os.mkfifo("fifo2")  # mknod(at) from the cwd

# An anonymous tmpfile has no path: writing or truncating it changes none, until linkat
# names it; then the name is a write.
t = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)
os.write(t, b"anon")
os.ftruncate(t, 2)
allowed["linkat_empty_path"] = libc.linkat(t, b"", AT_FDCWD, b"tmp-empty", AT_EMPTY_PATH) == 0
t2 = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)
os.write(t2, b"anon2")
proc_t2 = f"/proc/self/fd/{t2}".encode()
check(libc.linkat(AT_FDCWD, proc_t2, AT_FDCWD, b"tmp-proc", AT_SYMLINK_FOLLOW) == 0, "linkat")
unnamed = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)  # never named
os.write(unnamed, b"gone")
os.ftruncate(unnamed, 1)
reopened = os.open(f"/proc/self/fd/{unnamed}", os.O_RDWR)  # still nameless
os.close(reopened)
m = os.memfd_create("scratch")  # a memfd: no path either
os.write(m, b"m")
os.ftruncate(m, 1)

# O_PATH: a lookup, no access, until reopened through /proc/self/fd (the access it became),
# also through a symlink pointing at that magic link.
touch("target.txt")
p = os.open("target.txt", os.O_PATH)
w = os.open(f"/proc/self/fd/{p}", os.O_WRONLY | os.O_APPEND)  # a write of target.txt
os.write(w, b"more")
os.close(w)
os.symlink(f"/proc/self/fd/{p}", "alias")  # the symlink itself is a write
with open("alias", "rb") as f:  # a read of target.txt, not of alias
    f.read()
try:
    os.open("", os.O_RDONLY, dir_fd=p)  # openat(fd, "") is refused (ENOENT): no access
except OSError:
    pass
dp = os.open("d", os.O_PATH | os.O_DIRECTORY)
os.close(os.open("via-opath-dir.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dp))

# open_by_handle_at: a file opened with no path at all (needs CAP_DAC_READ_SEARCH)
touch("by-handle.txt")


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 128)]  # fmt: skip


fh, mount_id = FileHandle(handle_bytes=128), ctypes.c_int()
got = libc.name_to_handle_at(
    AT_FDCWD, b"by-handle.txt", ctypes.byref(fh), ctypes.byref(mount_id), 0
)
mfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
hfd = libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)  # refused in a sandbox
allowed["open_by_handle_at"] = got == 0 and hfd >= 0
print(json.dumps(allowed))
