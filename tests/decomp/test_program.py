"""How the decomposition programs are compiled (``jaxcpd/decomp/_program.py``): with
XLA:CPU's elemental emitters as a per-program option where they run on their own, inlined
without options inside a caller's program."""

import importlib
import math
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcpd
from jaxcpd.decomp import _program

X = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)), jnp.float32)
# An option XLA does not know fails the compilation: it shows where the options go.
UNKNOWN = {"compiler_options": {"xla_jaxcpd_no_such_option": True}}


def _fresh_program():
    """A program jitted on first use, after the test has patched ``jit_options``."""
    return _program.program(lambda m: m @ m.T)


def test_cpu_programs_use_the_elemental_emitters():
    assert jax.default_backend() == "cpu"
    assert _program.jit_options() == {"compiler_options": {"xla_cpu_use_fusion_emitters": False}}


def test_a_program_called_on_its_own_compiles_with_the_options(monkeypatch):
    monkeypatch.setattr(_program, "jit_options", lambda: UNKNOWN)
    with pytest.raises(Exception, match="xla_jaxcpd_no_such_option"):
        _fresh_program()(X)


def test_vmap_at_top_level_keeps_the_options(monkeypatch):
    monkeypatch.setattr(_program, "jit_options", lambda: UNKNOWN)
    with pytest.raises(Exception, match="xla_jaxcpd_no_such_option"):
        jax.vmap(_fresh_program())(X[None])


def test_inside_a_callers_jit_a_program_is_inlined_without_its_options(monkeypatch):
    monkeypatch.setattr(_program, "jit_options", lambda: UNKNOWN)
    got = jax.jit(lambda m: _fresh_program()(m) + 1.0)(X)
    x = np.asarray(X, np.float64)
    np.testing.assert_allclose(got, x @ x.T + 1.0, rtol=1e-6, atol=1e-6)


def test_a_decomposition_inside_a_callers_jit_matches_the_top_level_call():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((9, 6, 5)), jnp.float32)
    run = partial(jaxcpd.cpd_epc, rank=3, als_kwargs={"max_iter": 20}, epc_kwargs={"max_iter": 5})
    top, inner = run(x), jax.jit(run)(x)
    # Different compiler options round differently; the results are the same CPD.
    assert float(inner.epc.rel_error) == pytest.approx(float(top.epc.rel_error), rel=1e-4)
    for a, b in zip(inner.epc.factors, top.epc.factors, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_program_inside_a_callers_jit_is_traced_once():
    traced = []

    def square(m):
        traced.append(1)
        return m @ m.T

    prog = _program.program(square)
    jax.jit(lambda m: prog(m) + 1.0)(X)
    assert len(traced) == 1


def test_the_options_are_decided_right_when_first_used_inside_a_callers_jit():
    _program.jit_options.cache_clear()
    got = jax.jit(lambda m: _fresh_program()(m))(X)
    assert _program.jit_options() == {"compiler_options": {"xla_cpu_use_fusion_emitters": False}}
    x = np.asarray(X, np.float64)
    np.testing.assert_allclose(got, x @ x.T, rtol=1e-6, atol=1e-6)


def _unrolled_matrix_windows(hlo_text):
    """Float reductions XLA:CPU runs over a 2-D window of 512 or more entries: the elemental
    emitters unroll those fully, which took seconds each to compile (``decomp/_sum.py``)."""
    found = []
    for line in hlo_text.splitlines():
        m = re.search(r"= f\d+\[[\d,]*\]\{?[\d,]*\}? reduce-window\(.*window=\{size=([\dx]+)", line)
        if m:
            dims = [int(d) for d in m.group(1).split("x")]
            if sum(d > 1 for d in dims) > 1 and math.prod(dims) >= 512:
                found.append(m.group(1))
    return found


def test_the_sweeps_reduce_matrices_as_flat_vectors_at_a_shape_that_tiles_the_windows():
    """At (9, 32, 32), R = 64 every (32, 64) factor-shaped sum used to be a 32 x 32 window
    (22 of them in the EPC program: 22.9 s of compilation instead of 3 s)."""
    cp_als = importlib.import_module("jaxcpd.decomp.cp_als")  # the modules, not the functions
    epc = importlib.import_module("jaxcpd.decomp.epc")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((9, 32, 32)), jnp.float32)
    factors = tuple(jnp.ones((n, 64), jnp.float32) for n in x.shape)
    zero = jnp.zeros((), jnp.float32)
    als = cp_als._cp_als_call._top_level.lower(x, factors, zero, 5, slots=64)
    sweeps = epc._epc_call._top_level.lower(
        x, factors, zero, False, zero, 5, slots=64, objective="sensitivity"
    )
    for lowered in (als, sweeps):
        assert _unrolled_matrix_windows(lowered.compile().as_text()) == []
