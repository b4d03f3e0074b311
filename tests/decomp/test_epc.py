import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cp_testing import degenerate_cpd, full, random_factors
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq, minimize

import jaxcpd
from jaxcpd.decomp.epc import epc_factor_update, epc_weights, predict_multiplier


def _err(x, factors):
    return np.linalg.norm(np.asarray(x, np.float64) - full(factors))


@settings(max_examples=10, deadline=None)
@given(
    shape=st.sampled_from([(9, 12, 10), (4, 6, 7)]),
    rank=st.sampled_from([2, 5, 12]),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1.0, 1.0, 1.05, 1.3, 3.0]),
)
def test_bound_holds_after_every_sweep(shape, rank, seed, scale):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    start = jaxcpd.cp_als(x, rank, key=jax.random.PRNGKey(seed), max_iter=50).factors
    delta = scale * _err(x, start)
    factors = start
    sens = float(jaxcpd.cp_sensitivity(jaxcpd.cp_balance(start)))
    for _ in range(4):
        res = jaxcpd.epc(x, factors, delta=delta, max_iter=1)
        assert all(np.all(np.isfinite(np.asarray(f))) for f in res.factors)
        assert _err(x, res.factors) <= delta * (1 + 1e-5)
        assert float(res.sensitivity) <= sens * (1 + 1e-5)
        factors, sens = res.factors, float(res.sensitivity)
    if scale * _err(x, start) >= np.linalg.norm(x):
        assert all(np.all(np.asarray(f) == 0) for f in res.factors)


def test_delta_above_norm_gives_zero_model():
    x = np.random.default_rng(0).standard_normal((9, 6, 7)).astype(np.float32)
    res = jaxcpd.epc(x, jaxcpd.cp_als(x, 4).factors, delta=1.01 * np.linalg.norm(x))
    assert all(np.all(np.asarray(f) == 0) for f in res.factors)
    assert float(res.rel_error) == pytest.approx(1.0)


def test_unreachable_delta_keeps_factors():
    x = np.random.default_rng(1).standard_normal((9, 8, 8)).astype(np.float32)
    cpd = jaxcpd.cp_als(x, 5, max_iter=500, tol=1e-8)
    res = jaxcpd.epc(x, cpd.factors, delta=0.5 * _err(x, cpd.factors))
    for a, b in zip(res.factors, jaxcpd.cp_balance(cpd.factors), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.isfinite(float(res.sensitivity))


def test_overparameterised_cpd_gets_less_sensitive():
    # Over seeds 0-5 on an AMD EPYC, sensitivity after / before was 0.61-0.82 after 150
    # sweeps (0.708 for this seed, where another CPU gave < 0.7) and 0.31-0.61 after 500.
    x = np.random.default_rng(2).standard_normal((9, 32, 32)).astype(np.float32)
    cpd = jaxcpd.cp_als(x, 60, max_iter=1000, tol=1e-7)
    res = jaxcpd.epc(x, cpd.factors, max_iter=500, tol=0.0)
    before = float(jaxcpd.cp_sensitivity(jaxcpd.cp_balance(cpd.factors)))
    assert float(res.sensitivity) < 0.7 * before
    assert _err(x, res.factors) <= _err(x, cpd.factors) * (1 + 1e-5)
    hist = np.asarray(res.history.sensitivity)
    assert hist[0] == pytest.approx(before, rel=1e-5)
    assert np.all(np.diff(hist) <= 1e-5 * hist[:-1])


def test_cancelling_terms_are_removed():
    x, factors = degenerate_cpd()
    before = np.max(np.asarray(jaxcpd.cp_intensities(factors)))
    res = jaxcpd.epc(x, factors, max_iter=300)
    after = np.max(np.asarray(jaxcpd.cp_intensities(res.factors)))
    assert after * 10 <= before
    assert _err(x, res.factors) <= _err(x, factors) * (1 + 1e-5)


@pytest.mark.parametrize(("seed", "big"), [(3, 10.0), (3, 100.0), (4, 1000.0), (6, 100.0)])
def test_bound_holds_from_a_degenerate_start(seed, big):
    # With big cancelling terms the float32 error changes are off by percents of the
    # error (seed 3, big 10: the singular Gram made the update NaN-driven, 52x delta;
    # the others: 2-9 % over delta after one sweep). The rounding estimate keeps every
    # sweep inside, and the run still ends at the bound.
    x, factors = degenerate_cpd(seed=seed, big=big)
    delta = _err(x, factors)
    one = jaxcpd.epc(x, factors, max_iter=1)
    assert all(np.all(np.isfinite(np.asarray(f))) for f in one.factors)
    assert _err(x, one.factors) <= delta * (1 + 1e-5)
    res = jaxcpd.epc(x, factors, max_iter=300)
    assert delta * (1 - 2e-4) <= _err(x, res.factors) <= delta * (1 + 1e-5)
    # The cancelling pair (the last two terms) is what must go. At big 10 it is only
    # 6x the largest genuine term, so the largest intensity overall need not fall 10x.
    before = np.asarray(jaxcpd.cp_intensities(factors))[-2:]
    assert np.max(np.asarray(jaxcpd.cp_intensities(res.factors))[-2:]) * 10 <= np.min(before)


def test_history_between_exact_refreshes_tracks_the_error():
    # Between explicit residuals the error is the running sum of per-update changes;
    # the history must still give the true error of the factors after each sweep.
    x = np.random.default_rng(2).standard_normal((9, 32, 32)).astype(np.float32)
    start = jaxcpd.cp_als(x, 60, max_iter=30).factors
    long = jaxcpd.epc(x, start, max_iter=12, tol=0.0)
    for m in (3, 7):
        short = jaxcpd.epc(x, start, max_iter=m, tol=0.0)  # the same first m sweeps
        true = _err(x, short.factors) / np.linalg.norm(x.astype(np.float64))
        assert float(long.history.rel_error[m]) == pytest.approx(true, rel=1e-5)
        assert float(long.history.sensitivity[m]) == pytest.approx(float(short.sensitivity), rel=1e-4)


def test_intensity_objective_reduces_eq3():
    x, factors = degenerate_cpd(seed=4)
    res = jaxcpd.epc(x, factors, objective="intensity", max_iter=100)
    eq3 = lambda f: float(np.sum(np.asarray(jaxcpd.cp_intensities(f)) ** 2))  # noqa: E731
    assert eq3(res.factors) < 0.1 * eq3(factors)
    assert _err(x, res.factors) <= _err(x, factors) * (1 + 1e-5)
    hist = np.asarray(res.history.intensity)
    assert np.all(np.diff(hist) <= 1e-5 * hist[:-1])


def _mode1_subproblem(seed):
    """A random rank-3 CPD of a (4, 3, 5) tensor, as the mode-1 problem ``X_(1) ~ A Z^T``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3, 5))
    a, b, c = (rng.standard_normal((n, 3)) for n in x.shape)
    z = np.einsum("jr,kr->jkr", b, c).reshape(-1, 3)
    x1 = x.reshape(4, -1)
    return x1, (a, b, c), z, np.sum((x1 - a @ z.T) ** 2)


@pytest.mark.parametrize("objective", ["sensitivity", "intensity"])
@pytest.mark.parametrize("slack_scale", [0.0, 0.3])
def test_factor_update_is_exact_minimiser(objective, slack_scale, x64):
    """Compare the closed-form update with SLSQP on eq. 11 (B, C fixed, update A)."""
    x1, (a, b, c), z, cur_err_sq = _mode1_subproblem(seed=5)
    delta_sq = cur_err_sq + slack_scale * cur_err_sq
    w_sq = np.asarray(epc_weights((jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)), 0, objective))
    new, _, _ = epc_factor_update(
        jnp.asarray(a),
        jnp.asarray(w_sq),
        jnp.asarray(z.T @ z),
        jnp.asarray(x1 @ z),
        jnp.asarray(delta_sq - cur_err_sq),
    )
    new = np.asarray(new)

    def objective_fn(v):
        return np.sum(v.reshape(4, 3) ** 2 * w_sq)

    cons = {"type": "ineq", "fun": lambda v: delta_sq - np.sum((x1 - v.reshape(4, 3) @ z.T) ** 2)}
    ref = minimize(
        objective_fn, a.ravel(), constraints=[cons], method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000}
    )
    assert ref.success
    np.testing.assert_allclose(new.ravel(), ref.x, atol=1e-4)
    assert np.sum((x1 - new @ z.T) ** 2) <= delta_sq * (1 + 1e-9)


@pytest.mark.parametrize("slack_scale", [0.0, 0.3, -0.3])
def test_factor_update_returns_the_secular_root_and_any_start_gives_one_update(slack_scale, x64):
    """The returned multiplier is the root of the secular equation (closed form by eigh:
    ``sum |b_r|^2 / (1 + mu e_r)^2 = rho^2``), and the update does not depend on the
    start it is given (0, the root, or far from it on either side)."""
    x1, (_, b, c), z, _ = _mode1_subproblem(seed=5)
    ls = np.linalg.lstsq(z, x1.T, rcond=None)[0].T
    a = 0.6 * ls  # between the zero factor and least squares: the root is on the path
    cur_err_sq, ls_err_sq = (np.sum((x1 - f @ z.T) ** 2) for f in (a, ls))
    slack = slack_scale * (cur_err_sq - ls_err_sq)
    w_sq = np.asarray(epc_weights((jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)), 0, "sensitivity"))
    winv = 1 / np.sqrt(w_sq)
    e, q = np.linalg.eigh(z.T @ z * np.outer(winv, winv))
    b_sq = np.sum(((x1 @ z) * winv @ q) ** 2 / e, axis=0)
    rho_sq = cur_err_sq - ls_err_sq + slack
    root = brentq(lambda m: np.sum(b_sq / (1 + m * e) ** 2) - rho_sq, 0.0, 1e8, xtol=1e-14, rtol=1e-14)

    args = (jnp.asarray(a), jnp.asarray(w_sq), jnp.asarray(z.T @ z), jnp.asarray(x1 @ z), slack)
    jitted = jax.jit(epc_factor_update)  # one compilation for the five starts

    def update(mu):
        return jitted(*args, mu=mu)

    new, _, found = update(0.0)
    assert float(found) == pytest.approx(root, rel=1e-9)
    for start in (root, root * 1.01, root * 0.2, root * 50):
        again, _, found_again = update(start)
        np.testing.assert_allclose(np.asarray(again), np.asarray(new), rtol=1e-9, atol=1e-12)
        assert float(found_again) == pytest.approx(root, rel=1e-9)


def test_predicted_multiplier_extrapolates_geometrically():
    """Exact on a geometric sequence; the ratio clipped to [1/2, 2]; the last root when
    there are not two positive ones."""
    geometric = [(3.0, 2.0, 4.5), (2.0, 3.0, 4 / 3)]
    clipped = [(10.0, 1.0, 20.0), (1.0, 10.0, 0.5)]
    for last, before, want in geometric + clipped + [(5.0, 0.0, 5.0), (0.0, 4.0, 0.0)]:
        got = predict_multiplier(jnp.float32(last), jnp.float32(before))
        assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("slack_scale", [0.2, -0.2])
def test_unreachable_reserve_goes_to_least_squares_unless_outside(slack_scale, x64):
    """A rounding reserve beyond this factor's reach: from inside the bound the update
    takes the least-squares factor (the nearest to the target); from outside it keeps
    the factor, as when delta itself is out of reach."""
    x1, (a, b, c), z, cur_err_sq = _mode1_subproblem(seed=8)
    ls = np.linalg.lstsq(z, x1.T, rcond=None)[0].T
    reach = cur_err_sq - np.sum((x1 - ls @ z.T) ** 2)
    w_sq = epc_weights((jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)), 0, "sensitivity")
    slack = slack_scale * cur_err_sq
    new, new_slack, _ = epc_factor_update(
        jnp.asarray(a), w_sq, jnp.asarray(z.T @ z), jnp.asarray(x1 @ z), slack, reserve=slack + 2 * reach
    )
    if slack >= 0:
        np.testing.assert_allclose(np.asarray(new), ls, rtol=1e-8, atol=1e-10)
        assert float(new_slack) == pytest.approx(slack + reach, rel=1e-8)
    else:
        np.testing.assert_array_equal(np.asarray(new), a)
        assert float(new_slack) == slack


def test_a_new_shape_compiles_one_program_with_or_without_delta(programs_compiled):
    """The scaling, the default bound and the sweeps are one program (op by op, the scaling
    alone compiled ~20 small ones per shape); an explicit ``delta`` takes the same one."""
    dense = full(random_factors((5, 6, 7), 4, seed=12))
    x = jnp.asarray(dense, jnp.float32)  # a shape no other test uses
    start = random_factors((5, 6, 7), 4, seed=13)
    norm, start_error = np.linalg.norm(dense), np.linalg.norm(dense - full(start))
    start, delta = tuple(jnp.asarray(f) for f in start), jnp.float32(2.0 * start_error)
    with programs_compiled() as names:
        default = jaxcpd.epc(x, start, max_iter=4)
        looser = jaxcpd.epc(x, start, delta=delta, max_iter=4)
        longer = jaxcpd.epc(x, start, delta=delta, max_iter=9, tol=0.0)  # the sweep count is traced
    assert names.count("jit(_epc_call)") == 1 and len(names) <= 5, names
    assert longer.history.rel_error.shape == (10,) and default.history.rel_error.shape == (5,)
    assert float(default.rel_error) * norm <= start_error * (1 + 1e-5)
    assert float(looser.rel_error) * norm <= 2.0 * start_error * (1 + 1e-5)


def test_vmap_over_batch():
    xs = np.random.default_rng(6).standard_normal((3, 9, 6, 6)).astype(np.float32)
    out = jax.vmap(lambda t: jaxcpd.cpd_epc(t, 8, epc_kwargs={"max_iter": 20}))(xs)
    for i in range(3):
        single = jaxcpd.cpd_epc(xs[i], 8, epc_kwargs={"max_iter": 20})
        np.testing.assert_allclose(out.epc.sensitivity[i], single.epc.sensitivity, rtol=1e-3)
        np.testing.assert_allclose(out.epc.rel_error[i], single.cpd.rel_error, rtol=1e-4)


def test_forward_mode_derivative_matches_finite_differences(x64):
    """jax.jvp flows through cpd_epc (fixed sweep counts); reverse mode is documented as unsupported."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((4, 5, 6)))
    dx = jnp.asarray(rng.standard_normal((4, 5, 6)))
    kw = {"als_kwargs": {"max_iter": 30, "tol": 0.0}, "epc_kwargs": {"max_iter": 5, "tol": 0.0}}

    def f(t):
        return jaxcpd.cpd_epc(t, 3, **kw).epc.sensitivity

    _, tangent = jax.jvp(f, (x,), (dx,))
    h = 1e-6
    fd = (f(x + h * dx) - f(x - h * dx)) / (2 * h)
    np.testing.assert_allclose(float(tangent), float(fd), rtol=1e-4)
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work for lax.while_loop"):
        jax.grad(f)(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objective": "norm"}, "objective must be one of"),
        ({"delta": -1.0}, "delta must be a finite float >= 0"),
        ({"delta": np.nan}, "delta must be a finite float >= 0"),
        ({"delta": np.ones(2)}, "delta must be a scalar"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_bad_arguments(kwargs, match):
    x = np.ones((9, 4, 5), np.float32)
    f = (np.ones((9, 2)), np.ones((4, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=match):
        jaxcpd.epc(x, f, **kwargs)


def test_mismatched_factors():
    with pytest.raises(ValueError, match="row counts"):
        jaxcpd.epc(np.ones((9, 4, 5)), (np.ones((9, 2)), np.ones((5, 2)), np.ones((5, 2))))
