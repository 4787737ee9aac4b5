#!/usr/bin/env bash
# Install and build what the sandbox/gvisor backends need; idempotent (a second run is instant).
#   scripts/build-sandbox.sh [--if-needed]
# - apt: bubblewrap (the sandbox), runsc (gVisor), libseccomp2 (the seccomp filter, used via
#   ctypes), gcc + libc6-dev (to build glasshouse-init, the sandboxes' PID 1, static).
# - glasshouse-init is compiled into $GLASSHOUSE_CACHE/sandbox-init-<source hash>/ (default
#   /var/cache/glasshouse); an empty cache rebuilds it from src/glasshouse/backends/sandbox.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$GH_ROOT"

ensure_apt bubblewrap libseccomp2 gcc libc6-dev
ensure_apt_optional runsc python3-seccomp

py=$GH_ROOT/.venv/bin/python
[ -x "$py" ] || py=/usr/bin/python3
init=$(PYTHONPATH="$GH_ROOT/src" "$py" -c 'from glasshouse.backends.sandbox import build_init; print(build_init())')
gh_log "sandbox init: $init"
