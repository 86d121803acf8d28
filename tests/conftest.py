"""Shared fixtures: each real server the tests need lives in its own module under fixtures/."""

pytest_plugins = [
    "tests.fixtures.moto",
    "tests.fixtures.openai_server",
    "tests.fixtures.postgres",
]
