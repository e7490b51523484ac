"""The engine over HTTP (issue 13, in progress): today ``/metrics``, ``/healthz`` and
``/readyz``; the warnings, feedback, audience and campaign API and the console come next."""
