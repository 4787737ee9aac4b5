#!/usr/bin/env bash
# The main job in one command: set up what is missing, run a small script in the strongest
# sandbox this host offers with host observation, and print its receipt summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
demo=$(mktemp -d /tmp/glasshouse-demo.XXXXXX)
cat > "$demo/sneaky.py" <<'PY'
import os, socket, subprocess
print("reading", len(open("/etc/hostname").read()), "bytes of /etc/hostname")
open("notes.txt", "w").write("hello\n")
os.remove("notes.txt")
subprocess.run(["uname", "-s"], check=False)
s = socket.socket()
s.settimeout(0.2)
print("connect:", s.connect_ex(("127.0.0.1", 9)))
PY
cd "$demo"
backend=${GLASSHOUSE_DEMO_BACKEND:-auto}
set +e
.venv_path=; "$OLDPWD/.venv/bin/glasshouse" run --backend "$backend" --profile host --receipt "$demo/receipt.json" -- python3 sneaky.py
rc=$?
set -e
echo
"$OLDPWD/.venv/bin/glasshouse" receipt show "$demo/receipt.json"
echo "receipt: $demo/receipt.json (exit code $rc)"
