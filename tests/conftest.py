"""Shared pytest fixtures.

A persistent XLA compilation cache under ``.pytest_cache/jax`` is shared by the
pytest-xdist workers and the subprocesses some tests start (multi-device, fresh-process
loading); ``pytest_collection_modifyitems`` groups the tests for the workers. XLA runs
with the library's own settings: the decomposition programs pick their XLA:CPU options
themselves (``jaxcpd/decomp/_program.py``), so the suite needs no ``XLA_FLAGS``.

Under ``CI`` the hypothesis tests draw a fixed sequence of examples, so a CI run is
reproducible; local runs keep drawing new ones (that is how a 2.3e-5 sensitivity rise
in the EPC bound test, seed 422, was found).
"""

import contextlib
import os
from pathlib import Path

_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@contextlib.contextmanager
def _programs_compiled():
    """Names of the programs compiled (or read from the persistent cache) inside the block."""
    names = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def programs_compiled():
    """``with programs_compiled() as names:`` lists the programs compiled inside the block."""
    return _programs_compiled


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (for finite differences and exact references)."""
    with jax.enable_x64(True):
        yield


# Session fixtures of tests/compression that take most of a minute to build; the modules
# using them run on one pytest-xdist worker, so they are built once.
_SHARED_FIXTURES = {"compressed_third", "lossless"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(items):
    """Groups the tests for pytest-xdist's ``--dist loadgroup`` (set in ``pyproject.toml``):
    each module runs on one worker, so its module fixtures are built once (the demo
    smoke run takes most of a minute), and the modules sharing the compressed
    ResNet-18 fixtures share a worker."""
    modules = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    for module, module_items in modules.items():
        shared = any(_SHARED_FIXTURES & set(item.fixturenames) for item in module_items)
        group = "compressed-resnet18" if shared else module
        for item in module_items:
            item.add_marker(pytest.mark.xdist_group(group))
