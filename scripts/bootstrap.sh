#!/usr/bin/env bash
# Idempotent set-up of the project's virtualenv (.venv) with Soko and its pinned dependencies.
# Usage: scripts/bootstrap.sh [--test]   (--test adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
stamp=".venv/.installed${extra:+-test}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e ".${extra}"
  touch "$stamp"
fi
