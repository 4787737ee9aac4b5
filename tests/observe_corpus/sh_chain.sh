#!/bin/sh
# A shebang script that runs an sh -c chain: a pipeline, && and a subshell.
cd "$1"
sh -c 'echo chained | cat > chain-out && ls chain-out >/dev/null; (true)'
