#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs lint and the test suite twice:
# once on today's clock, once with the clock shifted by libfaketime, so a test that depends on the
# date it runs turns red the day it is written, not the day its dates run out.
#
# Debian packages installed here if missing: redis-server (tests start their own server on a free
# 127.0.0.1 port, so nothing is left running), redis-sentinel (tests/test_topology.py starts
# Sentinels the same way; without it they run as `redis-server --sentinel`), faketime, and
# chromium with fonts-noto-cjk (the console's browser tests drive /usr/bin/chromium through
# playwright; the fonts render its Chinese in the screenshots kept under tests/artifacts/).
#
#   bash tests/run.sh                      lint, the suite, the suite again 400 days ahead
#   bash tests/run.sh tests/test_machine.py -x   the same, for some tests (args go to pytest)
#   WD_CLOCK_SHIFT='-30 days' bash tests/run.sh  another shift for the second pass
#   WD_CLOCK_SHIFT=none bash tests/run.sh        no second pass
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/run.sh: installing Debian packages: ${missing[*]}" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,bench]'
python3 -m ruff check engine simulator benchmarks tests
python3 -m ruff format --check engine simulator benchmarks tests
python3 -m mypy
python3 -m pytest --durations=10 "$@"
shift_by="${WD_CLOCK_SHIFT:-+400 days}"
if [ "$shift_by" != none ]; then
    echo "tests/run.sh: the suite again with the clock shifted by '$shift_by' (libfaketime)" >&2
    # The monotonic clock moves with the wall clock (a constant offset, harmless to trio and to
    # timeouts): with FAKETIME_DONT_FAKE_MONOTONIC=1, libfaketime makes time.sleep fail (EINVAL).
    # The harness starts redis-server without LD_PRELOAD (engine/testing/redis_server.py).
    faketime "$shift_by" python3 -m pytest -q --durations=5 "$@"
fi
