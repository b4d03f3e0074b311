"""Inputs of extreme magnitude: exact power-of-two normalisation (jaxcpd/decomp/_scale.py).

The reference is the scaling law each decomposition obeys in exact arithmetic:
``cp_als(c X)`` has the factors of ``cp_als(X)`` times ``c^(1/N)``, EPC's sensitivity
(eq. 5) scales as ``c^(2(N-1)/N)``, a Tucker core as ``c``; relative errors do not move.
Without the normalisation, float32 squares overflow for ``max|X|`` around 1e19 (NaN
results) and vanish below 1e-19 (a zero model reported as exact).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cp_testing import full

import jaxcpd
from jaxcpd.decomp._scale import power_of_two_scale, rescale_cpd

# Powers of two keep the scaling law exact in float32, so the comparisons can be tight.
SCALES = [2.0**-80, 2.0**-70, 2.0**70, 2.0**90]


def _x(shape=(9, 8, 7), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("top", [0.0, 2.0**-21, 1e-3, 1.0, 3.0, 0.999 * 2.0**20])
def test_inputs_in_range_are_left_alone(top):
    scale, per_factor = power_of_two_scale(jnp.asarray([top, -top / 2], jnp.float32), 3)
    assert float(scale) == 1.0 and float(per_factor) == 1.0


@pytest.mark.parametrize("order", [1, 3, 4])
@pytest.mark.parametrize("top", [1e-37, 1e-30, 0.999 * 2.0**-21, 2.0**20, 1e22, 3e38])
def test_scale_is_a_power_of_two_that_brings_the_maximum_near_one(order, top):
    x = jnp.asarray([top, -top / 3], jnp.float32)
    scale, per_factor = power_of_two_scale(x, order)
    scale, per_factor = float(scale), float(per_factor)
    assert np.isfinite(scale) and scale > 0 and per_factor**order == scale
    assert np.frexp(scale)[0] == 0.5  # a power of two: dividing by it is exact
    assert 2.0 ** -(order + 1) <= top / scale <= 2.0 ** (order + 1)
    np.testing.assert_array_equal(np.asarray(x / scale) * scale, np.asarray(x))


def test_rescale_cpd_is_exact_and_brings_every_factor_to_unit_size():
    rng = np.random.default_rng(1)
    sizes = ((4, 1e-20), (5, 1e15), (6, 3.0))
    factors = [jnp.asarray(rng.standard_normal((n, 3)), jnp.float32) * s for n, s in sizes]
    same = rescale_cpd(factors[2:] * 2, jnp.float32(1.0))  # in range: untouched
    assert all(a is b or np.array_equal(a, b) for a, b in zip(same, factors[2:] * 2, strict=True))
    for scale in (1.0, 2.0**40, 2.0**-40):
        out = rescale_cpd(factors, jnp.float32(scale))
        np.testing.assert_array_equal(full(out), full(factors) / scale)
        sizes = [float(jnp.max(jnp.abs(f))) for f in out]
        assert max(sizes) / min(sizes) < 8  # 2^(order - 1) at most, from the shared exponent


@pytest.mark.parametrize("c", SCALES)
def test_cp_als_is_scale_equivariant(c):
    x = _x()
    ref = jaxcpd.cp_als(x, 4, max_iter=40)
    res = jaxcpd.cp_als(np.float32(c) * x, 4, max_iter=40)
    assert all(np.all(np.isfinite(np.asarray(f))) for f in res.factors)
    np.testing.assert_allclose(res.errors, ref.errors, rtol=1e-6)
    np.testing.assert_allclose(full(res.factors) / c, full(ref.factors), rtol=1e-5, atol=1e-6)
    # The returned factors stay balanced, each carrying c^(1/3).
    a = np.asarray(res.factors[0]) / c ** (1 / 3)
    np.testing.assert_allclose(a, ref.factors[0], rtol=1e-5, atol=1e-6)


def test_cp_als_start_of_any_magnitude():
    x = _x()
    start = jaxcpd.cp_als(x, 4, max_iter=3).factors
    ref = jaxcpd.cp_als(x, 4, init=start, max_iter=20)
    huge = (start[0] * np.float32(1e30), start[1] * np.float32(1e-30), start[2])
    res = jaxcpd.cp_als(x, 4, init=huge, max_iter=20)
    np.testing.assert_allclose(res.errors, ref.errors, rtol=1e-6)


@pytest.mark.parametrize("c", SCALES)
def test_epc_is_scale_equivariant(c):
    x = _x()
    start = jaxcpd.cp_als(x, 12, max_iter=30).factors
    ref = jaxcpd.epc(x, start, max_iter=15)
    c3 = np.float32(c ** (1 / 3))
    res = jaxcpd.epc(np.float32(c) * x, tuple(f * c3 for f in start), max_iter=15)
    assert int(res.n_iter) == int(ref.n_iter)
    np.testing.assert_allclose(res.history.rel_error, ref.history.rel_error, rtol=1e-5)
    np.testing.assert_allclose(res.sensitivity, ref.sensitivity * c ** (4 / 3), rtol=1e-4)
    np.testing.assert_allclose(res.history.sensitivity, ref.history.sensitivity * c ** (4 / 3), rtol=1e-4)
    np.testing.assert_allclose(res.history.intensity, ref.history.intensity * c**2, rtol=1e-4)
    np.testing.assert_allclose(float(jaxcpd.cp_sensitivity(res.factors)), float(res.sensitivity), rtol=1e-4)
    # The bound holds in the caller's units.
    delta = np.linalg.norm(c * x - full(tuple(f * c3 for f in start)))
    assert np.linalg.norm(c * x - full(res.factors)) <= delta * (1 + 1e-5)


def test_epc_with_an_explicit_delta_and_unbalanced_start():
    x = _x()
    start = jaxcpd.cp_als(x, 12, max_iter=30).factors
    delta = 1.05 * float(np.linalg.norm(x - full(start)))
    ref = jaxcpd.epc(x, start, delta=delta, max_iter=10)
    c = 2.0**-90
    lopsided = (start[0] * np.float32(c), start[1], start[2])  # all the scale in one factor
    res = jaxcpd.epc(np.float32(c) * x, lopsided, delta=c * delta, max_iter=10)
    np.testing.assert_allclose(res.history.rel_error, ref.history.rel_error, rtol=1e-5)
    assert np.linalg.norm(c * x - full(res.factors)) <= c * delta * (1 + 1e-5)


@pytest.mark.parametrize("c", [2.0**-80, 2.0**90])
def test_tucker2_and_tkd_cpd_are_scale_equivariant(c):
    x = _x((9, 10, 12))
    ref = jaxcpd.tucker2(x, (4, 5))
    res = jaxcpd.tucker2(np.float32(c) * x, (4, 5))
    np.testing.assert_allclose(res.rel_error, ref.rel_error, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.core) / c, ref.core, rtol=1e-5, atol=1e-6)
    bound = jaxcpd.tucker2(np.float32(c) * x, error_bound=0.6)
    assert bound.core.shape == jaxcpd.tucker2(x, error_bound=0.6).core.shape
    hyb_ref = jaxcpd.tkd_cpd(x, (4, 5), 6)
    hyb = jaxcpd.tkd_cpd(np.float32(c) * x, (4, 5), 6)
    np.testing.assert_allclose(hyb.rel_error, hyb_ref.rel_error, rtol=1e-5)
    np.testing.assert_allclose(hyb.core_rel_error, hyb_ref.core_rel_error, rtol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_input_is_computed_in_float32(dtype):
    x = jnp.asarray(_x(), dtype)
    res = jaxcpd.cp_als(x, 3, max_iter=10)
    ref = jaxcpd.cp_als(x.astype(jnp.float32), 3, max_iter=10)
    assert res.factors[0].dtype == jnp.float32
    np.testing.assert_array_equal(res.errors, ref.errors)


def test_scaling_works_under_jit_and_vmap():
    xs = np.stack([_x(seed=s) for s in range(3)]) * np.float32([1.0, 2.0**80, 2.0**-80])[:, None, None, None]
    batched = jax.vmap(lambda x: jaxcpd.cp_als(x, 3, max_iter=10).rel_error)(jnp.asarray(xs))
    single = [float(jaxcpd.cp_als(x, 3, max_iter=10).rel_error) for x in xs]
    np.testing.assert_allclose(batched, single, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(batched)))
