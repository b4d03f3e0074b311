import numpy as np
import pytest

import jaxcpd


def _matrix(seed=0, shape=(40, 64)):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 0.9 ** np.arange(shape[1])).astype(np.float32)


@pytest.mark.parametrize("rank", [1, 7, 40])
def test_eckart_young(rank):
    m = _matrix()
    u, v = jaxcpd.truncated_svd(m, rank)
    assert u.shape == (40, rank) and v.shape == (64, rank)
    s = np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)
    np.testing.assert_allclose(
        np.linalg.norm(m - np.asarray(u, np.float64) @ np.asarray(v, np.float64).T),
        np.sqrt(np.sum(s[rank:] ** 2)),
        rtol=1e-4,
        atol=1e-4,
    )
    # balanced split: both factors carry sqrt of the singular values
    np.testing.assert_allclose(np.linalg.norm(u, axis=0), np.linalg.norm(v, axis=0), rtol=1e-4)


@pytest.mark.parametrize("bound", [0.01, 0.1, 0.5])
def test_error_bound_smallest_rank(bound):
    m = _matrix(1)
    u, _ = jaxcpd.truncated_svd(m, error_bound=bound)
    r = u.shape[1]
    s = np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)
    rel = lambda k: np.sqrt(np.sum(s[k:] ** 2)) / np.linalg.norm(s)  # noqa: E731
    assert rel(r) <= bound < rel(r - 1)


def test_bad_arguments():
    m = _matrix()
    with pytest.raises(ValueError, match="exactly one"):
        jaxcpd.truncated_svd(m)
    with pytest.raises(ValueError, match="rank must be <= 40"):
        jaxcpd.truncated_svd(m, 41)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        jaxcpd.truncated_svd(m, 0)
    with pytest.raises(ValueError, match="error_bound"):
        jaxcpd.truncated_svd(m, error_bound=2.0)
    with pytest.raises(ValueError, match="ndim=2"):
        jaxcpd.truncated_svd(np.ones((2, 2, 2)), 1)
