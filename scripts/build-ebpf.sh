#!/usr/bin/env bash
# Build Glasshouse's CO-RE BPF object(s) for host observation.
#
#   scripts/build-ebpf.sh               # build everything (exec.o) + the syscall name table
#   scripts/build-ebpf.sh exec|fs|net   # the same: see the mapping below
#   scripts/build-ebpf.sh --if-needed   # skip when sources + kernel BTF are unchanged
#   GLASSHOUSE_BPF_DIR=/some/dir scripts/build-ebpf.sh   # write the objects there
#
# Output: $GLASSHOUSE_BPF_DIR or /var/cache/glasshouse/bpf (a per-host build: vmlinux.h is
# generated from this kernel's BTF at build time and never committed). The observer looks
# for exec.o in the same place.
#
# Object mapping (seed 003 names exec.o, fs.o, net.o): ONE object, exec.o, built from
# exec.bpf.c which includes fs.bpf.c, net.bpf.c and uring.bpf.c, so every syscall runs one
# sys_enter and one sys_exit program instead of three of each (docs/observe.md has the
# measured reason). "fs" and "net" are accepted names for the same build.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

src=$GH_ROOT/src/glasshouse/observe/ebpf
out=${GLASSHOUSE_BPF_DIR:-$GH_CACHE/bpf}
if_needed=
for arg in "$@"; do
  case $arg in
    --if-needed) if_needed=1 ;;
    exec|fs|net|all) ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-ebpf.sh: unknown argument: $arg (expected exec, fs, net, all, --if-needed)" >&2; exit 2 ;;
  esac
done

if [ "$(uname -m)" != x86_64 ]; then
  # The programs read syscall arguments from x86_64 pt_regs and dispatch on x86_64 numbers.
  gh_log "host observation (eBPF) is built for x86_64 only; this is $(uname -m)"
  exit 1
fi

btf=/sys/kernel/btf/vmlinux
if [ ! -r "$btf" ]; then
  gh_log "no kernel BTF at $btf: host observation (eBPF) is unavailable on this kernel"
  exit 1
fi

ensure_apt clang llvm libbpf-dev bpftool linux-libc-dev

# The content key: our sources, the kernel's BTF and the compiler.
key=$( { cat "$src"/*.bpf.c "$src"/events.h "$0"; sha256sum < "$btf"; clang --version | head -1; } | sha256sum | cut -c1-16)
stamp=$out/.build-key
if [ -n "$if_needed" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -f "$out/exec.o" ] && [ -f "$out/syscalls.tsv" ]; then
  exit 0
fi

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bpftool btf dump file "$btf" format c > "$work/vmlinux.h"
arch_inc=/usr/include/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
[ -d "$arch_inc" ] || arch_inc=/usr/include/x86_64-linux-gnu
clang -g -O2 -Wall -Wno-unused-function -target bpf -D__TARGET_ARCH_x86 \
  -I"$work" -I"$src" -I"$arch_inc" -c "$src/exec.bpf.c" -o "$work/exec.o"
# Drop DWARF (keeps BTF, which CO-RE needs): a smaller object, faster open.
llvm-strip -g "$work/exec.o" 2>/dev/null || true

# The x86_64 syscall name table, from the kernel headers this object was built against.
unistd=$arch_inc/asm/unistd_64.h
[ -f "$unistd" ] || unistd=/usr/include/asm/unistd_64.h
awk '$1 == "#define" && $2 ~ /^__NR_/ { sub(/^__NR_/, "", $2); print $3 "\t" $2 }' "$unistd" > "$work/syscalls.tsv"
[ -s "$work/syscalls.tsv" ] || { echo "build-ebpf.sh: no syscall numbers in $unistd" >&2; exit 1; }

install -m 0644 "$work/exec.o" "$work/syscalls.tsv" "$out/"
echo "$key" > "$stamp"
gh_log "built $out/exec.o ($(stat -c %s "$out/exec.o") bytes)"
