import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorly as tl
from cp_testing import degenerate_cpd, full, random_factors
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorly.decomposition import parafac

import jaxcpd
from jaxcpd.decomp.cp_als import cholesky, cholesky_solve_rows, gram, gram_solve, psd_cholesky


@pytest.mark.parametrize(
    ("shape", "rank", "init"),
    [
        ((9, 64, 64), 20, "svd"),
        ((9, 32, 48), 12, "svd"),
        ((9, 32, 48), 8, "random"),
        ((4, 5, 6, 7), 3, "svd"),
        ((30, 40), 5, "svd"),
    ],
)
def test_recovers_exact_low_rank(shape, rank, init):
    x = full(random_factors(shape, rank, seed=rank)).astype(np.float32)
    res = jaxcpd.cp_als(x, rank, init=init, max_iter=3000, tol=1e-9)
    assert float(res.rel_error) < 1e-5
    assert len(res.factors) == len(shape)
    assert all(f.shape == (n, rank) for f, n in zip(res.factors, shape, strict=True))


def test_recovers_collinear_factors():
    x = full(random_factors((9, 16, 16), 5, seed=4, congruence=0.9)).astype(np.float32)
    res = jaxcpd.cp_als(x, 5, max_iter=20000, tol=0.0)
    assert float(res.rel_error) < 1e-5


def _tensorly_error(x, factors, rank, n_iter):
    tl.set_backend("numpy")
    x64 = np.asarray(x, np.float64)
    init = tl.cp_tensor.CPTensor((np.ones(rank), [np.asarray(f, np.float64) for f in factors]))
    cp = parafac(x64, rank, init=init, n_iter_max=n_iter, tol=0.0, normalize_factors=False)
    return np.linalg.norm(x64 - tl.cp_to_tensor(cp)) / np.linalg.norm(x64)


@pytest.mark.parametrize("rank", [5, 20])
def test_not_worse_than_tensorly(rank):
    rng = np.random.default_rng(rank)
    low = full(random_factors((9, 24, 32), 8, seed=1))
    x = (low / np.linalg.norm(low) + 0.05 * rng.standard_normal(low.shape) / np.sqrt(low.size)).astype(
        np.float32
    )
    init = tuple(rng.standard_normal((n, rank)).astype(np.float32) for n in x.shape)
    ours = jaxcpd.cp_als(x, rank, init=init, max_iter=300, tol=0.0)
    theirs = _tensorly_error(x, init, rank, 300)
    assert float(ours.rel_error) <= theirs + 1e-3
    # the reported error is the true error of the returned factors
    np.testing.assert_allclose(
        float(ours.rel_error), np.linalg.norm(x - full(ours.factors)) / np.linalg.norm(x), rtol=1e-4
    )


@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from([(9, 8, 8), (4, 12, 6), (9, 16, 10), (3, 4, 5, 6)]),
    rank=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    init=st.sampled_from(["svd", "random"]),
)
def test_error_history_non_increasing(shape, rank, seed, init):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    res = jaxcpd.cp_als(x, rank, key=jax.random.PRNGKey(seed), init=init, max_iter=60, tol=0.0)
    errors = np.asarray(res.errors)
    assert np.all(np.isfinite(errors))
    assert np.all(np.diff(errors) <= 1e-5 * errors[:-1] + 1e-6)
    assert 1 <= int(res.n_iter) <= 60
    assert errors[-1] == pytest.approx(float(res.rel_error), rel=1e-3)


def test_history_padding_and_stop_on_tol():
    x = np.random.default_rng(0).standard_normal((9, 8, 8)).astype(np.float32)
    res = jaxcpd.cp_als(x, 3, max_iter=500, tol=1e-3)
    n = int(res.n_iter)
    assert n < 500
    np.testing.assert_array_equal(res.errors[n:], res.rel_error)


def test_indefinite_gram_is_factorised_with_jitter():
    # A rank-2 Gram pushed 10 eps*trace below PSD, as rounding leaves a Hadamard Gram
    # with two equal columns: LAPACK's Cholesky fails (NaN), psd_cholesky does not.
    f = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    gram = f.T @ f
    gram -= 10 * np.finfo(np.float32).eps * np.trace(gram) * np.eye(6, dtype=np.float32)
    assert not np.all(np.isfinite(np.asarray(jnp.linalg.cholesky(gram))))
    chol = np.asarray(psd_cholesky(jnp.asarray(gram)), np.float64)
    assert np.all(np.isfinite(chol)) and np.array_equal(chol, np.tril(chol))
    np.testing.assert_allclose(chol @ chol.T, gram, atol=1e-5 * np.trace(gram))
    # right-hand sides in the range of the Gram are solved to the Gram's accuracy
    rhs = np.random.default_rng(1).standard_normal((3, 2)).astype(np.float32) @ f
    sol = np.asarray(gram_solve(jnp.asarray(f.T @ f), jnp.asarray(rhs)), np.float64)
    np.testing.assert_allclose(sol @ (f.T @ f), rhs, atol=1e-4 * np.abs(rhs).max())


def test_gram_and_cholesky_helpers_match_numpy():
    # The fast-path Gram is exactly symmetric (inside a jitted sweep as well), and the
    # factor and row solves match float64 numpy.
    f = np.random.default_rng(2).standard_normal((64, 40)).astype(np.float32)
    for g in (np.asarray(gram(jnp.asarray(f))), np.asarray(jax.jit(gram)(jnp.asarray(f)))):
        assert np.array_equal(g, g.T)
        f64 = f.astype(np.float64)
        np.testing.assert_allclose(g, f64.T @ f64, atol=1e-5 * np.abs(f64.T @ f64).max())
    ref = f.astype(np.float64).T @ f.astype(np.float64)
    chol = np.asarray(jax.jit(cholesky)(jnp.asarray(ref, jnp.float32)), np.float64)
    np.testing.assert_allclose(chol, np.linalg.cholesky(ref), rtol=1e-4, atol=1e-4 * np.sqrt(ref.max()))
    rhs = np.random.default_rng(3).standard_normal((9, 40))
    sol = np.asarray(cholesky_solve_rows(jnp.asarray(chol, jnp.float32), jnp.asarray(rhs, jnp.float32)))
    np.testing.assert_allclose(sol, np.linalg.solve(ref, rhs.T).T, rtol=1e-3, atol=1e-5)
    failed = np.asarray(cholesky(-jnp.eye(3)))  # NaN throughout the triangle, the last pivot too
    assert np.all(np.isnan(failed[np.tril_indices(3)]))


@pytest.mark.parametrize("seed", [8, 12])
def test_repeated_columns_do_not_give_nan(seed):
    # A CPD with two equal columns in B and C (every Hadamard Gram singular): with the
    # plain jittered Cholesky these seeds returned NaN factors.
    x, factors = degenerate_cpd(seed=seed, big=10.0)
    res = jaxcpd.cp_als(x, 7, init=factors, max_iter=20)
    assert all(np.all(np.isfinite(np.asarray(f))) for f in res.factors)
    start = np.linalg.norm(x - full(factors)) / np.linalg.norm(x)
    assert float(res.rel_error) < start


def test_zero_tensor():
    res = jaxcpd.cp_als(np.zeros((9, 4, 5), np.float32), 3)
    assert float(res.rel_error) == 0.0
    assert all(np.all(np.asarray(f) == 0) for f in res.factors)


def test_returned_factors_are_balanced():
    x = np.random.default_rng(1).standard_normal((9, 8, 8)).astype(np.float32)
    res = jaxcpd.cp_als(x, 4)
    norms = np.stack([np.linalg.norm(f, axis=0) for f in res.factors])
    np.testing.assert_allclose(norms, np.broadcast_to(norms[0], norms.shape), rtol=1e-4)


def test_a_new_shape_compiles_a_few_programs_and_starts_share_the_sweeps(programs_compiled):
    """Called op by op, a new shape compiled ~20 small programs (scaling, SVD start) besides
    the sweeps; now the validation, the start and the sweeps are one program each, and a
    given start reuses the sweeps compiled for the SVD start."""
    key = jax.random.PRNGKey(3)
    x = jnp.asarray(full(random_factors((5, 7, 6), 3, seed=11)), jnp.float32)  # a shape no other test uses
    with programs_compiled() as first:
        res = jaxcpd.cp_als(x, 3, key=key, max_iter=7)
    # + a dtype conversion of tol and the slice of the history to max_iter entries
    assert len(first) <= 5, first
    with programs_compiled() as given_start:
        again = jaxcpd.cp_als(x, 3, init=res.factors, max_iter=7)
    assert "jit(_cp_als_call)" not in given_start and len(given_start) <= 2, given_start
    assert float(again.rel_error) <= float(res.rel_error) + 1e-6


def test_a_new_max_iter_reuses_the_compiled_sweeps(programs_compiled):
    """The sweep count is traced (only the history's power-of-two length is static): a
    run with more sweeps compiles no sweep program, and its first sweeps are the
    shorter run's, bit for bit."""
    x = jnp.asarray(np.random.default_rng(14).standard_normal((6, 5, 7)), jnp.float32)  # a new shape
    short = jaxcpd.cp_als(x, 3, max_iter=7, tol=0.0)
    with programs_compiled() as names:
        long = jaxcpd.cp_als(x, 3, max_iter=40, tol=0.0)
    assert not any("_cp_als" in name for name in names), names
    assert short.errors.shape == (7,) and long.errors.shape == (40,)
    assert int(short.n_iter) == 7 and int(long.n_iter) > 7
    np.testing.assert_array_equal(short.errors, long.errors[:7])


def test_vmap_matches_loop_and_jit():
    xs = np.stack([full(random_factors((9, 10, 12), 3, seed=s)) for s in range(3)]).astype(np.float32)
    batched = jax.vmap(lambda x: jaxcpd.cp_als(x, 3, max_iter=200))(xs)
    for i in range(3):
        single = jaxcpd.cp_als(xs[i], 3, max_iter=200)
        np.testing.assert_allclose(batched.rel_error[i], single.rel_error, atol=1e-5)
    jitted = jax.jit(lambda x: jaxcpd.cp_als(x, 3).rel_error)(xs[0])
    assert float(jitted) < 1e-5


def test_float64(x64):
    x = jnp.asarray(full(random_factors((9, 10, 12), 4, seed=7)))
    res = jaxcpd.cp_als(x, 4, max_iter=3000, tol=0.0)
    assert res.factors[0].dtype == jnp.float64
    assert float(res.rel_error) < 1e-10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 0}, "rank must be >= 1"),
        ({"rank": 2.5}, "rank must be a positive int"),
        ({"rank": True}, "rank must be a positive int"),
        ({"rank": 2, "init": "bogus"}, "init must be"),
        ({"rank": 2, "init": (np.ones((9, 2)), np.ones((4, 2)), np.ones((4, 2)))}, "row counts"),
        ({"rank": 3, "init": (np.ones((9, 2)), np.ones((4, 2)), np.ones((5, 2)))}, "rank=3"),
        ({"rank": 2, "max_iter": 0}, "max_iter"),
        ({"rank": 2, "tol": -1.0}, "tol"),
        ({"rank": 2, "key": 0}, "key must be a jax.random key"),
        ({"rank": 2, "key": np.zeros(3, np.uint32)}, "key must be a jax.random key"),
    ],
)
def test_bad_arguments(kwargs, match):
    x = np.ones((9, 4, 5), np.float32)
    with pytest.raises(ValueError, match=match):
        jaxcpd.cp_als(x, **kwargs)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.array([[[np.nan]]]), "NaN or Inf"),
        (np.full((2, 2, 2), np.inf), "NaN or Inf"),
        (np.ones(5), "ndim>=2"),
        (np.ones((0, 2, 2)), "empty"),
    ],
)
def test_bad_tensor(x, match):
    with pytest.raises(ValueError, match=match):
        jaxcpd.cp_als(x, 1)


def test_a_constant_closed_over_by_a_traced_function_is_still_checked():
    # Inside jit a closed-over array is concrete: its finiteness check runs now
    # instead of being staged into the trace (which failed on bool() of a tracer).
    x = jnp.asarray(full(random_factors((9, 6, 7), 2, seed=5)), jnp.float32)
    assert float(jax.jit(lambda: jaxcpd.cp_als(x, 2, max_iter=500).rel_error)()) < 1e-5
    bad = x.at[0, 0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        jax.jit(lambda: jaxcpd.cp_als(bad, 2).rel_error)()


def test_typed_and_raw_keys_give_the_same_start():
    x = np.random.default_rng(0).standard_normal((9, 4, 5)).astype(np.float32)
    raw = jaxcpd.cp_als(x, 7, key=jax.random.PRNGKey(3), init="random", max_iter=3)
    typed = jaxcpd.cp_als(x, 7, key=jax.random.key(3), init="random", max_iter=3)
    np.testing.assert_array_equal(raw.errors, typed.errors)
