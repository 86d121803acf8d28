"""The CLI runner and folder store of tests/operations, for the command tests here."""

from tests.operations.conftest import cli, root, store  # noqa: F401
