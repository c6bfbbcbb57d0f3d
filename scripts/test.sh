#!/usr/bin/env bash
# Runs the pytest suite against the real services: PostgreSQL and Redis when they answer on this machine (else
# SQLite and the filesystem broker), and an anvil that the test session starts on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ -z "${DATABASE_URL:-}" ]] && reachable 5432; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/openledger"
fi
if [[ -z "${CELERY_BROKER_URL:-}" ]] && reachable 6379; then
  # a database number of its own, so a test run never meets the messages of a `make run` on the same Redis
  export CELERY_BROKER_URL="redis://127.0.0.1:6379/14"
fi
export DATA_DIR="${TEST_DATA_DIR:-$PWD/var/test}"
# the self-check at the end of every training job (attribution.selfcheck) is off in the tests, which train ~30 jobs;
# attribution/tests/test_selfcheck.py turns it on for its own jobs
export ATTRIBUTION_SELFCHECK_SAMPLE="${ATTRIBUTION_SELFCHECK_SAMPLE:-0}"
export DEFAULT_BASE_MODEL_DIR="${DEFAULT_BASE_MODEL_DIR:-$PWD/var/models/smollm2-135m-instruct}"
export PLAYWRIGHT_BROWSERS_PATH=0 PYTHONUNBUFFERED=1
rm -rf "$DATA_DIR" && mkdir -p "$DATA_DIR"
# The whole suite runs on two pytest-xdist processes, a test file each at a time (a module's shared fixtures, a trained
# version or a browser, are made once); openledger_web.pytest_workers gives each process its own database, broker
# database, DATA_DIR folder and torch thread. Chosen files run in this one process unless TEST_WORKERS says otherwise.
workers="${TEST_WORKERS:-2}"
if [[ -z "${TEST_WORKERS:-}" ]]; then
  for arg in "$@"; do
    if [[ -e "${arg%%::*}" ]]; then workers=0; fi
  done
fi
parallel=()
if [[ "$workers" != 0 ]] && ! .venv/bin/python -c "import xdist" 2>/dev/null; then
  echo "tests: pytest-xdist is not installed (make setup-dev installs requirements-dev.txt); one process" >&2
  workers=0
fi
if [[ "$workers" != 0 ]]; then
  parallel=(-n "$workers" --dist loadfile)
fi
echo "tests: database ${DATABASE_URL:-sqlite}, broker ${CELERY_BROKER_URL:-filesystem}, xdist workers ${workers}"
exec .venv/bin/python -m pytest "${parallel[@]}" "$@"
