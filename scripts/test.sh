#!/usr/bin/env bash
# Set up what is missing, then ruff, mypy and the whole pytest suite. CI (.ci/run) calls this.
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/test_cli.py -k timeout   # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check . || { echo "ruff format: run '.venv/bin/ruff format .'" >&2; exit 1; }
.venv/bin/mypy   # strict on core/, receipt/, the engine and the library API (pyproject.toml)
exec .venv/bin/python -m pytest "$@"
