"""Shared test setup. Service fixtures (real Mosquitto, Kafka, Prometheus) live in tests/harness/, one module
per service, and are registered here as plugins so any test can ask for them by name."""

pytest_plugins = [
    "tests.harness.kafka",
    "tests.harness.mosquitto",
    "tests.harness.prometheus",
]
