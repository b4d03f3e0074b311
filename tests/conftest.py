"""Shared pytest fixtures."""

import jax
import pytest


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (for finite differences and exact references)."""
    with jax.enable_x64(True):
        yield
