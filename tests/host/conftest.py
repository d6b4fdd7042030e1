"""Shared fixtures for the host template tests (the kernels MLF is in tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from microtvm_registry import get_packaged_resource


@pytest.fixture(scope="session")
def host_template() -> Path:
    return get_packaged_resource("templates/host")
