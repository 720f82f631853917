"""Evaluation tests train tiny runs on the training tests' tiny prepared dataset (tests/training/conftest.py)."""

from tests.training.conftest import one_thread, tiny_data  # noqa: F401 - fixtures
