"""Shared pytest fixtures.

A persistent XLA compilation cache under ``.pytest_cache/jax`` is shared by the test
process and the subprocesses some tests start (multi-device, fresh-process loading).
"""

import os
from pathlib import Path

_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (for finite differences and exact references)."""
    with jax.enable_x64(True):
        yield
