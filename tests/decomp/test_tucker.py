import jax
import numpy as np
import pytest
import tensorly as tl
from tensorly.decomposition import partial_tucker

import jaxcpd


def _kernel_like(shape, seed=0):
    """A tensor with decaying channel spectra, like a trained conv kernel."""
    rng = np.random.default_rng(seed)
    i, j, k = shape
    core = rng.standard_normal(shape) * np.outer(0.9 ** np.arange(j), 0.92 ** np.arange(k))[None]
    u, _ = np.linalg.qr(rng.standard_normal((j, j)))
    v, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return np.einsum("irs,jr,ks->ijk", core, u, v).astype(np.float32)


@pytest.mark.parametrize("ranks", [(5, 7), (12, 20), (24, 1)])
def test_matches_tensorly_partial_tucker(ranks):
    x = _kernel_like((9, 24, 32))
    ours = jaxcpd.tucker2(x, ranks)
    tl.set_backend("numpy")
    (core, factors), _ = partial_tucker(
        np.asarray(x, np.float64), rank=list(ranks), modes=[1, 2], n_iter_max=200, tol=1e-12
    )
    rec = tl.tenalg.multi_mode_dot(core, factors, modes=[1, 2])
    theirs = np.linalg.norm(x - rec) / np.linalg.norm(x)
    assert abs(float(ours.rel_error) - theirs) < 1e-4
    assert ours.core.shape == (9, *ranks)
    np.testing.assert_allclose(ours.U.T @ ours.U, np.eye(ranks[0]), atol=1e-5)
    np.testing.assert_allclose(ours.V.T @ ours.V, np.eye(ranks[1]), atol=1e-5)
    # Lemma 2: the core is the projection of X
    np.testing.assert_allclose(ours.core, np.einsum("ijk,jr,ks->irs", x, ours.U, ours.V), atol=1e-4)
    rebuilt = np.einsum("irs,jr,ks->ijk", ours.core, ours.U, ours.V)
    np.testing.assert_allclose(
        float(ours.rel_error), np.linalg.norm(x - rebuilt) / np.linalg.norm(x), rtol=1e-4
    )


def test_full_ranks_are_lossless():
    x = _kernel_like((9, 8, 10))
    assert float(jaxcpd.tucker2(x, (8, 10)).rel_error) < 1e-5


@pytest.mark.parametrize("bound", [0.05, 0.2, 0.5])
def test_error_bound_gives_smallest_ranks(bound):
    x = _kernel_like((9, 24, 32), seed=1)
    res = jaxcpd.tucker2(x, error_bound=bound)
    r1, r2 = res.U.shape[1], res.V.shape[1]
    assert float(res.rel_error) <= bound
    for smaller in [(r1 - 1, r2), (r1, r2 - 1)]:
        if min(smaller) >= 1:
            assert float(jaxcpd.tucker2(x, smaller).rel_error) > bound


def test_error_bound_needs_concrete_input():
    x = _kernel_like((9, 6, 7))
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda t: jaxcpd.tucker2(t, error_bound=0.1).core)(x)


def test_vmap_fixed_ranks():
    xs = np.stack([_kernel_like((9, 6, 7), seed=s) for s in range(3)])
    batched = jax.vmap(lambda t: jaxcpd.tucker2(t, (3, 4)).rel_error)(xs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], jaxcpd.tucker2(xs[i], (3, 4)).rel_error, rtol=1e-5)


def test_zero_tensor():
    res = jaxcpd.tucker2(np.zeros((9, 4, 5), np.float32), error_bound=0.1)
    assert float(res.rel_error) == 0.0
    assert np.all(np.isfinite(np.asarray(res.core)))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((None,), {}, "exactly one"),
        (((2, 2),), {"error_bound": 0.1}, "exactly one"),
        (((0, 2),), {}, r"ranks\[0\] must be >= 1"),
        (((2, 9),), {}, r"ranks\[1\] must be <= 5"),
        (((2,),), {}, "pair"),
        ((None,), {"error_bound": 1.0}, r"error_bound must be in \(0, 1\)"),
        ((None,), {"error_bound": 0.0}, r"error_bound must be in \(0, 1\)"),
    ],
)
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxcpd.tucker2(np.ones((9, 4, 5), np.float32), *args, **kwargs)


def test_bad_tensor():
    with pytest.raises(ValueError, match="ndim=3"):
        jaxcpd.tucker2(np.ones((9, 4)), (1, 1))
    with pytest.raises(ValueError, match="NaN"):
        jaxcpd.tucker2(np.full((9, 4, 4), np.nan), (1, 1))
