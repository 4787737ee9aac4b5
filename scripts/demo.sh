#!/usr/bin/env bash
# The main job in one command, on a fresh Debian 12 / Ubuntu 22.04+ host as root: set up what
# is missing, run a small script in the sandbox with host (eBPF) observation, and print its
# receipt summary.
#   scripts/demo.sh                                  # bubblewrap sandbox (falls back: process)
#   GLASSHOUSE_DEMO_BACKEND=microvm scripts/demo.sh  # any backend name, or auto
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >&2
gh=$root/.venv/bin/glasshouse
demo=$(mktemp -d /tmp/glasshouse-demo.XXXXXX)
backend=${GLASSHOUSE_DEMO_BACKEND:-sandbox}
if [ -z "${GLASSHOUSE_DEMO_BACKEND:-}" ] && ! "$root/.venv/bin/python" -c \
    'import sys; from glasshouse.backends.sandbox import probe; sys.exit(0 if probe()[0] else 1)' 2>/dev/null; then
  echo "demo: the sandbox backend is unavailable here (see glasshouse doctor); using process" >&2
  backend=process
fi
code='
import os, socket, subprocess
print("hostname is", len(open("/etc/hostname").read().strip()), "chars")
with open("notes.txt", "w") as f:
    f.write("hello\n")
os.rename("notes.txt", "renamed.txt")
os.remove("renamed.txt")
subprocess.run(["uname", "-s"], check=False)
s = socket.socket()
s.settimeout(0.2)
print("connect to 127.0.0.1:9 ->", s.connect_ex(("127.0.0.1", 9)))
'
cd "$demo"
set +e
"$gh" run --backend "$backend" --profile host --timeout 30 --receipt "$demo/receipt.json" \
  -- python3 -c "$code"
rc=$?
set -e
echo
"$gh" receipt show "$demo/receipt.json"
echo "receipt: $demo/receipt.json (command exit code $rc)"
