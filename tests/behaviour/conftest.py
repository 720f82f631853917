"""Behavioural model tests (Made-With-ML's third tier): does the trained model behave like an
expression recogniser? One short training run through the real path (synth -> RAF-DB ingest -> engine),
shared by the module; 1 torch thread like every model test."""

from __future__ import annotations

import pytest

from tests.conftest import one_torch_thread

one_thread = pytest.fixture(autouse=True)(one_torch_thread)
