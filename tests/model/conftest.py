"""Model tests run on 1 CPU thread with tiny inputs (the machine is shared)."""

from __future__ import annotations

import pytest

from tests.conftest import one_torch_thread

one_thread = pytest.fixture(autouse=True)(one_torch_thread)
