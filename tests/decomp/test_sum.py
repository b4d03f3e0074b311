import jax
import numpy as np
import pytest

from jaxcpd.decomp._sum import inner, pairwise_sum, sq_norm


@pytest.mark.parametrize("shape", [(1,), (7,), (9, 512, 3), (5, 6, 7), (2, 1, 3)])
def test_pairwise_sum_equals_float64_sum_on_every_axis(shape):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    for axis in range(-len(shape), len(shape)):
        got = jax.jit(pairwise_sum, static_argnums=1)(x, axis)
        expected = x.astype(np.float64).sum(axis=axis)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_pairwise_sum_is_more_accurate_than_sequential():
    """1 + 2^-24 * n: a running float32 sum loses every small term, pairwise keeps them."""
    n = 1 << 12
    x = np.full((n + 1,), 2.0**-24, np.float32)
    x[0] = 1.0
    exact = 1.0 + n * 2.0**-24
    sequential = np.float32(0)
    for v in x:
        sequential = np.float32(sequential + v)
    assert sequential == 1.0
    assert abs(float(pairwise_sum(x, 0)) - exact) <= 2.0**-23


@pytest.mark.parametrize("shape", [(1,), (32, 64), (16, 64), (9, 32, 32), (3, 5)])
def test_inner_and_sq_norm_equal_float64_sums(shape):
    rng = np.random.default_rng(sum(shape))
    a, b = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    expected = (a.astype(np.float64) * b).sum()
    np.testing.assert_allclose(jax.jit(inner)(a, b), expected, rtol=1e-5, atol=1e-5 * np.sqrt(a.size))
    np.testing.assert_allclose(jax.jit(sq_norm)(a), (a.astype(np.float64) ** 2).sum(), rtol=1e-5)


def test_inner_broadcasts_batches_and_differentiates():
    """A scalar operand broadcasts (EPC's change to the zero factor), ``vmap`` gives one sum per
    batch entry, and forward and reverse mode go through the barrier."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((4, 6, 5)).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(inner(2.0, b[0]), 2.0 * b[0].astype(np.float64).sum(), rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(inner)(a, b), (a.astype(np.float64) * b).sum(axis=(1, 2)), rtol=1e-5)
    _, tangent = jax.jvp(sq_norm, (a[0],), (b[0],))
    np.testing.assert_allclose(tangent, 2 * (a[0].astype(np.float64) * b[0]).sum(), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(inner)(a[0], b[0]), b[0])
