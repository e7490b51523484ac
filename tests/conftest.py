"""Suite-wide settings: hypothesis profiles and the per-test clock check.

Hypothesis profiles (pick one with ``HYPOTHESIS_PROFILE``; CI=true picks ``ci``):

- ``ci``: derandomized (each test's examples are derived from its own source) and no example
  database, so a red CI run is red again on any machine with the same commit.
- ``dev`` (the default elsewhere): a fresh random seed each run, failures printed with the
  ``@reproduce_failure`` blob; replay a run with ``pytest --hypothesis-seed=N``.
- ``explore``: like ``dev`` with ten times the examples (see :func:`tests.props.examples`).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.register_profile("explore", print_blob=True)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def pytest_report_header() -> list[str]:
    return [f"hypothesis profile: {PROFILE} (set HYPOTHESIS_PROFILE=ci|dev|explore)"]
