"""Fixtures for the rewrite-pass tests (helpers are in tests/sparsefx_testing.py)."""
from __future__ import annotations

import pytest
import torch

from sparsefx_testing import substituted


@pytest.fixture
def build():
    return substituted


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
