#!/usr/bin/env bash
# The project's test command (the README's): set up what the tests need, lint, then run every test.
#   scripts/test.sh [pytest args...]
# Needs PostgreSQL on 127.0.0.1:5432 with trust auth and a database `test` (SOKO_TEST_DATABASE_URL overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test

status=0
.venv/bin/ruff check src tests bench || status=$?
.venv/bin/mypy || status=$?  # src/soko, as configured in pyproject.toml
# pytest-xdist: 2 workers; tests marked xdist_group (e.g. the skopeo e2e suite) share one worker and so
# one registry server and one set of built images.
.venv/bin/pytest -n 2 --dist loadgroup -q --durations=30 "$@" || status=$?  # durations: keep CI under its 15 min
exit "$status"
