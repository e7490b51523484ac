#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs lint and the test suite.
# Redis tests need Debian's redis-server; it is installed here if missing (tests start their own
# server on a free 127.0.0.1 port, so nothing is left running).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
    echo "tests/run.sh: installing Debian's redis-server" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,bench]'
python3 -m ruff check engine simulator benchmarks tests
python3 -m ruff format --check engine simulator benchmarks tests
python3 -m pytest "$@"
