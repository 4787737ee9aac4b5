"""Assemble the guest root tree from the host's own files (no Docker, no downloads).

Usage: python3 mkrootfs.py DEST. The tree holds Python 3.11 and its standard library (with
the host's precompiled .pyc files, so the guest never compiles), the libraries of every
binary and extension module (found with ldd), dash as /bin/sh, a few coreutils, and the
guest init (``/init``; its modules and the wire format in ``/usr/lib/glasshouse``).
``scripts/build-guest.sh`` turns it into a read-only ext4 image with ``mkfs.ext4 -d``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "ensurepip",
    "lib2to3",
    "turtledemo",
    "unittest/test",
    "distutils/tests",
    "site-packages",
    "dist-packages",
    "config-3.11-x86_64-linux-gnu",
}


def copy(src: str, root: str) -> None:
    dst = root + src
    if os.path.lexists(dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(src):
        target = os.readlink(src)
        os.symlink(target, dst)
        copy(os.path.normpath(os.path.join(os.path.dirname(src), target)), root)
    else:
        shutil.copy2(src, dst)


def libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                found.append(p)
                break
    return found


def main(root: str) -> None:
    # Mirror the host's merged-/usr layout (/bin -> usr/bin ...), so ldd's paths resolve.
    for d in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink("/" + d):
            target = os.readlink("/" + d)
            os.makedirs(os.path.normpath(os.path.join(root, target)), exist_ok=True)
            os.symlink(target, os.path.join(root, d))
        elif os.path.isdir("/" + d):
            os.makedirs(os.path.join(root, d), exist_ok=True)
    for d in ("usr/bin", "proc", "sys", "dev", "tmp", "work", "run", "etc", "root"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    binaries = ["/usr/bin/python3.11"]
    with open(os.path.join(HERE, "rootfs.list")) as f:
        binaries += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    stdlib = "/usr/lib/python3.11"
    for dirpath, dirnames, filenames in os.walk(stdlib):
        rel = os.path.relpath(dirpath, stdlib)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel, d)) not in SKIP]
        for name in filenames:
            copy(os.path.join(dirpath, name), root)
    extensions = glob.glob(stdlib + "/lib-dynload/*.so")
    for binary in binaries + extensions:
        if not os.path.exists(binary):
            print(f"mkrootfs: skipping missing {binary}", file=sys.stderr)
            continue
        copy(os.path.realpath(binary), root)
        if os.path.realpath(binary) != binary:
            copy(binary, root)
        for lib in libs(binary):
            copy(lib, root)
            copy(os.path.realpath(lib), root)
    for alias in ("python3", "python"):
        os.symlink("python3.11", os.path.join(root, "usr/bin", alias))
    # usrmerge hosts: /bin/dash may live in /usr/bin; make /bin/sh work either way.
    os.symlink("dash", os.path.join(root, "bin/sh"))
    gl = os.path.join(root, "usr/lib/glasshouse")
    os.makedirs(gl, exist_ok=True)
    shutil.copy2(os.path.join(HERE, "transport.py"), os.path.join(gl, "gh_transport.py"))
    # The init's modules (init/gh_*.py) beside the wire format, on the init's sys.path.
    for module in sorted(glob.glob(os.path.join(HERE, "init", "gh_*.py"))):
        shutil.copy2(module, os.path.join(gl, os.path.basename(module)))
    shutil.copy2(os.path.join(HERE, "init", "ghinit.py"), os.path.join(root, "init"))
    os.chmod(os.path.join(root, "init"), 0o755)
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(root, "etc/group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    with open(os.path.join(root, "etc/hostname"), "w") as f:
        f.write("glasshouse\n")


if __name__ == "__main__":
    main(sys.argv[1])
