"""Data tests share the training tests' tiny prepared dataset (tests/training/conftest.py)."""

from tests.training.conftest import one_thread, tiny_data  # noqa: F401 - fixtures
