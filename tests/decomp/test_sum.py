import jax
import numpy as np
import pytest

from jaxcpd.decomp._sum import pairwise_sum


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
