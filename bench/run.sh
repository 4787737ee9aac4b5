#!/usr/bin/env bash
# Run every benchmark; each prints ratios against a baseline measured in the same run.
#   bench/run.sh              # all
#   bench/run.sh cli sandbox  # some (workloads: ~15 min with the microVM on kvm_pvm)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(cli observe sandbox microvm server sessions oneshot mcp training trust workloads)
for name in "${names[@]}"; do
  [ -f "bench/$name.py" ] || { echo "(no bench/$name.py)"; continue; }
  echo "=== bench/$name.py ($(date -u +%FT%TZ), $(nproc) cores, $(uname -r))"
  "$py" "bench/$name.py"
  echo
done
