#!/usr/bin/env bash
# Set up everything Glasshouse needs on a Debian 12 / Ubuntu 22.04+ host, as root.
# Idempotent: a second run with nothing missing takes about a second.
#   scripts/setup.sh            # packages, venv, CLI on PATH, BPF objects, guest images
#   GLASSHOUSE_SKIP_GUEST=1 scripts/setup.sh   # skip the (slow, cached) microVM guest build
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$GH_ROOT"

# 1. System packages. Runtime isolation/observation tools are optional per host: doctor
#    reports what each missing one disables.
ensure_apt python3 python3-venv python3-pip ca-certificates git
ensure_apt_optional clang llvm libbpf-dev bpftool bubblewrap runsc qemu-system-x86 strace \
  e2fsprogs iproute2 libseccomp2 python3-seccomp

# 2. The Python environment (Debian's python3; re-installed when pyproject.toml changes).
venv=$GH_ROOT/.venv
if [ ! -x "$venv/bin/python" ]; then
  gh_log "creating $venv"
  /usr/bin/python3 -m venv "$venv"
fi
stamp=$venv/.glasshouse-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  gh_log "pip install -e .[dev]"
  "$venv/bin/pip" install -q --disable-pip-version-check -e ".[dev]"
  touch "$stamp"
fi

# Byte-compile our sources: with PYTHONDONTWRITEBYTECODE set (as in some CI environments) every
# CLI start would otherwise recompile them (~30 ms). Cheap when nothing changed.
"$venv/bin/python" -m compileall -q -j 0 src/glasshouse >/dev/null || true

# 3. Put the commands on PATH (root: /usr/local/bin).
if [ "$(id -u)" = 0 ]; then
  for cmd in glasshouse glasshouse-server glasshouse-agent; do
    if [ -x "$venv/bin/$cmd" ] && [ "$(readlink "/usr/local/bin/$cmd" 2>/dev/null)" != "$venv/bin/$cmd" ]; then
      ln -sf "$venv/bin/$cmd" "/usr/local/bin/$cmd"
    fi
  done
fi

# 3b. Opt-in host tuning (GLASSHOUSE_TUNE_CGROUPS=1): mount cgroup2 with favordynmods. Each run
#     attaches a process to its cgroup; without this the kernel waits for an RCU grace period on
#     that attach (~10 ms per run here), with it ~1 ms. It makes fork/exit slightly costlier
#     host-wide, so it is the operator's call; doctor reports it.
if [ -n "${GLASSHOUSE_TUNE_CGROUPS:-}" ] && [ "$(id -u)" = 0 ]; then
  v2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
  if [ -n "$v2" ] && ! grep -q "^cgroup2 $v2 .*favordynmods" /proc/mounts; then
    mount -o remount,favordynmods "$v2" && gh_log "cgroup2 at $v2: favordynmods on"
  fi
fi

# 4. Components with their own (cached, idempotent) build steps.
if [ -x scripts/build-ebpf.sh ]; then scripts/build-ebpf.sh --if-needed || gh_log "eBPF build failed: host observation disabled (see glasshouse doctor)"; fi
if [ -x scripts/build-sandbox.sh ]; then scripts/build-sandbox.sh --if-needed || gh_log "sandbox build failed: sandbox/gvisor backends disabled (see glasshouse doctor)"; fi
if [ -x scripts/build-guest.sh ] && [ -z "${GLASSHOUSE_SKIP_GUEST:-}" ]; then
  scripts/build-guest.sh --if-needed || gh_log "guest build failed: microvm backend disabled (see glasshouse doctor)"
fi
exit 0
