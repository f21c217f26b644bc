"""Shared test setup. Service fixtures (real Mosquitto, Kafka, Prometheus) live in tests/harness/, one module
per service, and are registered here as plugins so any test can ask for them by name.

Hypothesis runs derandomized by default, so a CI run is reproducible (the same examples every time);
`HYPOTHESIS_PROFILE=explore make test` searches new examples, which is how regressions get found and then pinned
with `@example`."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytest_plugins = [
    "tests.harness.kafka",
    "tests.harness.mosquitto",
    "tests.harness.prometheus",
]
