#!/usr/bin/env bash
# Start Soko on the embedded default (SQLite + local filesystem in ./soko-data), listening on 127.0.0.1:5000.
# Any extra arguments go to `soko serve` (e.g. --listen 0.0.0.0:5000 --data-dir /var/lib/soko --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/soko serve "$@"
