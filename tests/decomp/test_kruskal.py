import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cp_testing import full, random_factors
from jax.test_util import check_grads

import jaxcpd


def test_reconstruct_matches_einsum_any_order():
    for shape in [(4, 5), (3, 4, 5), (2, 3, 4, 5)]:
        f = random_factors(shape, 3, seed=len(shape))
        np.testing.assert_allclose(jaxcpd.cp_reconstruct(f), full(f), rtol=1e-5, atol=1e-5)


def test_intensities_and_eq3():
    f = random_factors((9, 6, 7), 4)
    dense_terms = [full(tuple(m[:, [r]] for m in f)) for r in range(4)]
    expected = np.array([np.linalg.norm(t) for t in dense_terms])
    np.testing.assert_allclose(jaxcpd.cp_intensities(f), expected, rtol=1e-5)


def test_sensitivity_closed_form():
    a, b, c = (np.asarray(m, np.float64) for m in random_factors((9, 6, 7), 5, seed=1))
    ata, btb, ctc = a.T @ a, b.T @ b, c.T @ c
    eq5 = np.trace(ata * btb + btb * ctc + ata * ctc)
    np.testing.assert_allclose(jaxcpd.cp_sensitivity((a, b, c)), eq5, rtol=1e-5)


def test_sensitivity_monte_carlo(x64):
    """Definition 1 by simulation: E||T - [[A+dA, B+dB, C+dC]]||^2 to first order in sigma.

    The exact expectation is sigma^2 (I S_bc + J S_ac + K S_ab) with S_xy = sum_r |x_r|^2|y_r|^2;
    eq. 5 is S_bc + S_ac + S_ab, so with I = J = K the expectation is sigma^2 * I * eq. 5.
    """
    rng = np.random.default_rng(3)
    shape, rank, sigma, n_samples = (6, 6, 6), 4, 1e-4, 4000
    f = [rng.standard_normal((n, rank)) for n in shape]
    t = full(f)
    samples = []
    for _ in range(n_samples):
        g = [m + sigma * rng.standard_normal(m.shape) for m in f]
        samples.append(np.sum((full(g) - t) ** 2))
    mc = np.mean(samples) / sigma**2
    sq = [np.sum(m * m, axis=0) for m in f]
    weighted = sum(shape[n] * np.sum(np.prod([sq[m] for m in range(3) if m != n], axis=0)) for n in range(3))
    assert abs(mc / weighted - 1) < 0.05
    assert abs(mc / (shape[0] * float(jaxcpd.cp_sensitivity(tuple(f)))) - 1) < 0.05


def test_balance_keeps_tensor_and_minimises_sensitivity():
    a, b, c = random_factors((9, 6, 7), 5, seed=2)
    scaled = (a * 10.0, b * 0.1, c)
    balanced = jaxcpd.cp_balance(scaled)
    np.testing.assert_allclose(jaxcpd.cp_reconstruct(balanced), full(scaled), rtol=1e-4, atol=1e-4)
    norms = np.stack([np.linalg.norm(m, axis=0) for m in balanced])
    np.testing.assert_allclose(norms, np.broadcast_to(norms[0], norms.shape), rtol=1e-5)
    s_bal = float(jaxcpd.cp_sensitivity(balanced))
    assert s_bal < float(jaxcpd.cp_sensitivity(scaled))
    # AM-GM: any other per-term rescaling (product one) has higher sensitivity
    rng = np.random.default_rng(0)
    for _ in range(20):
        s1, s2 = np.exp(rng.standard_normal((2, 5)) * 0.3)
        other = (balanced[0] * s1, balanced[1] * s2, balanced[2] / (s1 * s2))
        assert float(jaxcpd.cp_sensitivity(other)) >= s_bal * (1 - 1e-6)


def test_balance_zero_term():
    a, b, c = random_factors((3, 4, 5), 2)
    b = b.copy()
    b[:, 1] = 0.0
    out = jaxcpd.cp_balance((a, b, c))
    assert all(np.all(np.asarray(m)[:, 1] == 0) for m in out)
    assert all(np.all(np.isfinite(np.asarray(m))) for m in out)


@pytest.mark.parametrize("exps", [(66, -33, -33), (40, -60, 20), (-70, 35, 35), (80, -100, 20)])
def test_metrics_of_a_cpd_with_factors_of_extreme_magnitude(exps):
    """Factors scaled by powers of two whose product is 1: the tensor and the intensities
    are those of the plain CPD, eq. 5 follows from float64 norms (inf where it exceeds
    float32); squaring the raw entries in float32 would overflow (2^66) or flush to zero
    (2^-70)."""
    plain = random_factors((4, 5, 6), 3, seed=2)
    lopsided = tuple(f * np.float32(2.0**e) for f, e in zip(plain, exps, strict=True))
    np.testing.assert_allclose(jaxcpd.cp_intensities(lopsided), jaxcpd.cp_intensities(plain), rtol=1e-6)
    sq = [np.sum(np.asarray(f, np.float64) ** 2, axis=0) for f in lopsided]
    eq5 = np.sum(sq[0] * sq[1] + sq[1] * sq[2] + sq[0] * sq[2])
    if eq5 < np.finfo(np.float32).max:
        np.testing.assert_allclose(float(jaxcpd.cp_sensitivity(lopsided)), eq5, rtol=1e-5)
    else:
        assert np.isposinf(float(jaxcpd.cp_sensitivity(lopsided)))
    balanced = jaxcpd.cp_balance(lopsided)
    assert all(np.all(np.isfinite(np.asarray(f))) for f in balanced)
    np.testing.assert_allclose(full(balanced), full(plain), rtol=1e-5, atol=1e-5)
    for got, want in zip(balanced, jaxcpd.cp_balance(plain), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [jaxcpd.cp_reconstruct, jaxcpd.cp_intensities, jaxcpd.cp_sensitivity])
def test_gradients_match_finite_differences(fn, x64):
    f = tuple(jnp.asarray(m, jnp.float64) for m in random_factors((4, 3, 5), 3, seed=5))
    check_grads(jax.jit(lambda *fs: fn(fs)), f, order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


def test_jit_and_vmap():
    f = random_factors((4, 3, 5), 3)
    batch = tuple(np.stack([m, 2 * m]) for m in f)
    out = jax.vmap(lambda *fs: jaxcpd.cp_sensitivity(fs))(*batch)
    np.testing.assert_allclose(out[1], 16 * out[0], rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jaxcpd.cp_sensitivity)(f), jaxcpd.cp_sensitivity(f), rtol=1e-6)


@pytest.mark.parametrize(
    ("factors", "match"),
    [
        ((np.ones((3, 2)),), "at least 2"),
        ((np.ones((3, 2)), np.ones((4, 3))), "share one number of columns"),
        ((np.ones((3, 2)), np.ones((4,))), r"factors\[1\] must have ndim=2"),
        ((np.ones((3, 2)), np.full((4, 2), np.inf)), "NaN or Inf"),
    ],
)
def test_bad_factors(factors, match):
    with pytest.raises(ValueError, match=match):
        jaxcpd.cp_sensitivity(factors)


def test_khatri_rao_matches_tensorly_in_both_layouts():
    from tensorly.tenalg import khatri_rao as tl_khatri_rao

    from jaxcpd.decomp.kruskal import khatri_rao

    mats = random_factors((3, 4, 5), 6, seed=7)
    expected = tl_khatri_rao([np.asarray(m) for m in mats])
    np.testing.assert_allclose(khatri_rao(mats), expected, rtol=1e-6)
    np.testing.assert_allclose(khatri_rao(mats, transposed=True), expected.T, rtol=1e-6)
