"""Error Preserving Correction (EPC): minimise CPD sensitivity at a fixed error bound.

Solves eq. 10 by alternating over the factors (eq. 11-12). For one factor, say A
with the others fixed, and weights ``w_r`` (eq. 11), set ``A~ = A diag(w)``,
``Gamma = diag(1/w) [(B'B)*(C'C)] diag(1/w) = Q diag(e) Q'`` and
``G = MTTKRP_1 diag(1/w)``. With ``b = G Q diag(e^-1/2)`` and
``Y = A~ Q diag(e^1/2)`` the subproblem becomes

    min_Y  sum_r |y_r|^2 / e_r   s.t.  |Y - b|^2 <= rho^2 = delta^2 - |K|^2 + |b|^2,

a least-norm problem over a ball ("quadratic programming over a sphere", ref. [43])
whose solution is ``y_r = b_r mu e_r / (1 + mu e_r)``, with the scalar ``mu >= 0``
the root of the secular equation ``sum_r |b_r|^2 / (1 + mu e_r)^2 = rho^2``.

The implementation never forms ``Q``: back in the original variables the solution
is ``A~(mu) = mu G (I + mu Gamma)^-1``, and Newton's method on the secular equation
needs one Cholesky factorisation of ``I + mu Gamma`` per step: 2-4 steps from the
previous sweep's ``mu``, and often one from ``mu`` extrapolated from the previous two
sweeps (:func:`predict_multiplier`). An R x R eigendecomposition costs 15-20 Cholesky
factorisations on CPU (19 ms vs 1.1 ms at R = 500), so this made the EPC sweep
1.6-3x faster on kernels up to 128 channels and left it unchanged at 512. The
secular function's offset comes from the first evaluation, without a least-squares
solve, wherever that is safe (``epc_factor_update``). With both, an EPC sweep at
R = 500 on 64-128 channels costs 1.6-2.0 ALS sweeps from the sixth sweep on
(``scripts/bench_decomp.py``; docs/performance.md has the measurements before and after).

The slack ``delta^2 - |X - X^|^2`` is carried from update to update as the sum of
the exact changes, with an estimate of that sum's rounding error (from the sizes of
the products it is made of); once the estimate exceeds what the rounding margin
absorbs, updates aim that much further inside the bound (an update that cannot
reach that far goes to its least-squares point). The residual is formed
explicitly (one GEMM of half an ALS sweep's flops) only when the estimate reaches
the margin, and on every sweep the loop may stop after: 1-8 times in 60 sweeps on
Gaussian CPDs, which makes the sweep 1.1-1.3x faster at R = 100 from 128 channels
up (1.03x at R = 500). On a CPD with big, nearly cancelling terms the estimate is
large: the first sweep then lands inside the bound instead of 2-9 % outside it, and
later sweeps come back to it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._checks import as_float_array, check_factors, check_positive_int, check_tol, is_concrete
from ._program import program
from ._scale import power_of_two_scale, rescale_cpd
from ._sum import inner, norm, sq_norm
from .cp_als import cholesky, cholesky_solve_rows, dimension_tree_sweep, gram, history_slots, psd_cholesky
from .kruskal import balance, balance_scales, reconstruct, sensitivity

OBJECTIVES = ("sensitivity", "intensity")

# Cap on the Newton steps of one factor update; from a warm start they take 1-4
# (measured on 9x64x64 .. 9x128x128 CPDs), from mu = 0 at most 5.
_NEWTON_STEPS = 30


class EPCHistory(NamedTuple):
    """Per-sweep record; index 0 is the (balanced) input, padded with the final value."""

    sensitivity: jax.Array
    intensity: jax.Array
    rel_error: jax.Array


class EPCResult(NamedTuple):
    """Result of :func:`epc`.

    Attributes:
      factors: corrected, scale-balanced factor matrices.
      rel_error: ``||X - [[factors]]||_F / ||X||_F`` (exact).
      sensitivity: eq. 5 of the corrected factors.
      n_iter: number of sweeps run.
      history: :class:`EPCHistory` of length ``max_iter + 1``.
    """

    factors: tuple
    rel_error: jax.Array
    sensitivity: jax.Array
    n_iter: jax.Array
    history: EPCHistory


def _leave_one_out_sum(sq):
    """``sum_n prod_{m != n} sq[m]`` over the rows of ``sq`` (shape (M, R))."""
    if sq.shape[0] == 1:
        return jnp.ones_like(sq[0])
    return sum(jnp.prod(jnp.delete(sq, n, axis=0), axis=0) for n in range(sq.shape[0]))


def epc_weights(factors, mode, objective):
    """Squared weights ``w_r^2`` of eq. 11 for the factor of ``mode``.

    ``"sensitivity"``: the terms of eq. 5 that contain mode ``mode``, divided by its
    squared norm (``|b_r|^2 + |c_r|^2`` for A in order 3). ``"intensity"``: the product
    of the other squared norms (``|b_r|^2 |c_r|^2``), so the objective is eq. 3.
    """
    others = jnp.stack([jnp.sum(f * f, axis=0) for n, f in enumerate(factors) if n != mode])
    if objective == "sensitivity":
        return _leave_one_out_sum(others)
    return jnp.prod(others, axis=0)


def epc_factor_update(current, weights_sq, gram, mttkrp, slack, margin=0.0, mu=0.0, reserve=0.0):
    """Exact minimiser of eq. 11/12 for one factor (the others fixed).

    In the weighted variables ``A~ = A diag(w)``, ``Gamma`` and ``G`` of the module
    docstring, the minimisers over the error ball form the path
    ``A~(mu) = mu G (I + mu Gamma)^-1``, ``mu >= 0`` (``mu = 0``: zero factor; ``mu -> oo``:
    least squares). The update is the point of the path on the sphere
    ``|Y - b|^2 = rho^2``, found by Newton's method on the secular function
    ``1/sqrt(s(mu)) - 1/rho`` with ``s(mu) = |Y(mu) - b|^2`` (Moré & Sorensen): one
    Cholesky factorisation of ``I + mu Gamma`` per step, no eigendecomposition; from
    a warm start it takes 1-4 steps. ``s`` is tracked as ``s(mu_cur)``
    plus the exact change of the squared error, ``<A~ - A~_cur, R_cur + R(mu)>`` with
    ``R = A~ Gamma - G``, so the bound never depends on ``|K|^2 - |b|^2``. The offset
    ``s(mu_cur) = R_cur Gamma^-1 R_cur^T`` only sets Newton's step sizes and the
    margin's share: from a warm start it is read off the first evaluation (a one-pole
    model of ``s``), otherwise from one Cholesky factorisation of ``Gamma``.

    Args:
      current: ``(I, R)`` current factor, kept when it is outside the bound and no
        update reaches it (``slack < 0``, ``rho^2 < 0``).
      weights_sq: ``(R,)`` squared weights ``w_r^2``.
      gram: ``(R, R)`` Hadamard product of the other factors' Gram matrices.
      mttkrp: ``(I, R)`` MTTKRP of this mode.
      slack: ``delta^2`` minus the current squared error.
      margin: the ball radius is reduced by this much (absolute), so that rounding
        in the factor's entries cannot push the error past the bound.
      mu: starting multiplier (predicted from the last ones found for this mode,
        :func:`predict_multiplier`); 0 is always safe.
      reserve: aim this much (in squared error) further inside, for the rounding of
        a carried ``slack``. When the reserve puts the target out of this factor's
        reach while the current point is inside the bound, the update goes to the
        least-squares point, the nearest it can get.

    Returns:
      ``(new factor, new slack, root)``: ``root`` is the multiplier of the accepted
      evaluation refined by one more Newton step (0 off the path), the estimate of this
      subproblem's exact root that the next sweep's start is predicted from.
    """
    dtype = current.dtype
    eps = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    r = gram.shape[0]
    w = jnp.sqrt(weights_sq)
    winv = jnp.where(w > 0, 1.0 / jnp.where(w > 0, w, 1.0), 0.0)
    gamma = gram * (winv[:, None] * winv[None, :])  # exactly symmetric, as ``cholesky`` needs
    g = mttkrp * winv
    a_cur = current * w
    r_cur = a_cur @ gamma - g
    eye = jnp.eye(r, dtype=dtype)

    def error_change(a_new, r_new):
        """``|K - K^(a_new)|^2 - |K - K^(a_cur)|^2`` from the two points and their residuals
        ``R = A~ Gamma - G``: exact for a quadratic, no cancellation."""
        return inner(a_new - a_cur, r_cur + r_new)

    target = slack - reserve
    change_zero = error_change(0.0, -g)
    start = jnp.asarray(mu, dtype)

    def evaluate(m):
        """The path at ``m``: one Cholesky of ``I + m Gamma``; ``A~ = m z``, ``A~ Gamma - G = -z``."""
        chol = cholesky(eye + m * gamma)
        z = cholesky_solve_rows(chol, g)
        return chol, z, error_change(m * z, -z)

    def half_solve_norm(chol, rows):
        """``|L^-1 rows^T|^2 = rows (L L^T)^-1 rows^T``: with ``L L^T = I + m Gamma`` and
        ``rows = z`` the slope ``-s'(m) / 2``; with ``L L^T = Gamma`` and ``rows = R_cur``
        the offset ``s_cur``."""
        return sq_norm(lax.linalg.triangular_solve(chol, rows.T, left_side=True, lower=True))

    def pole_slope(m, s, p2):
        """``-s'(m) / 2`` of the one-pole model of s that fits ``s`` and ``p2 = |z|^2``
        (exact when Gamma has one distinct eigenvalue)."""
        return p2 * s / (s + m * p2)

    # The first evaluation, at the warm start, comes before the offset s_cur is known:
    # from a warm start, s_cur is read off it (below) instead of a least-squares solve.
    # Its slope is always solved for: the offset needs it from a warm start, and
    # Newton's next step from a cold one unless that start is accepted.
    chol0, z0, change0 = evaluate(start)
    p2 = sq_norm(z0)
    warm = start > 0
    slope0 = half_solve_norm(chol0, z0)
    # One-pole model from p2 and p3 = slope0: s(m) ~= m p2 p3 / (p2 - p3), 0.6-5.7 % off
    # (median; at most 8.5 %) over 40 sweeps of five Gaussian CPDs. The offset's error
    # changes Newton's steps, not its root (where the exact error change meets the
    # target, up to the margin's share), nor the bound. It is used only where rho^2 is
    # at least half the offset (so that error is at most 17 % of rho^2) and rho is above
    # 1024 margins: 97 % of the updates in those runs, 65 % at (9, 64, 64) R = 500,
    # whose rounding reserve keeps it near least squares. Elsewhere, and from a cold
    # start, least squares gives it.
    gap = p2 - slope0
    s_free = start * p2 * slope0 / jnp.where(gap > 0, gap, 1.0) - change0
    free = warm & (gap > 0) & (s_free > 0) & (s_free + target >= 0.5 * s_free)
    free = free & (jnp.sqrt(jnp.maximum(s_free + target, 0.0)) > 1024 * margin)

    def exact_offset():
        """``(A~_ls, change_ls)`` from the least-squares Cholesky factor: ``-change_ls =
        s_cur = E_cur - E_ls = R_cur Gamma^-1 R_cur^T`` (one triangular solve), and the
        least-squares point with its exact change where needed."""
        # Gamma may be singular and, after rounding, slightly indefinite: least squares
        # uses a jittered factor (``psd_cholesky``); a path point whose factorisation
        # fails is never taken (below).
        chol_ls = psd_cholesky(gamma)
        s_fast = half_solve_norm(chol_ls, r_cur)

        def least_squares():
            """``G Gamma^-1`` and its exact error change. (Not ``A~_cur - R_cur Gamma^-1``
            from the solve above: on a near-exact CPD, (9, 64, 64) R = 500 at relative
            error 4.7e-6, the rounding of ``R_cur`` in that point left EPC's first sweep
            at 5.4e-6 instead of 4.9e-6, and the loop stopped there.)"""
            a_ls = lax.optimization_barrier(cholesky_solve_rows(chol_ls, g))
            return a_ls, error_change(a_ls, a_ls @ gamma - g)

        # That norm carries the rounding of R_cur through Gamma^-1, while the path's
        # points are measured by exact changes; the two differ by the least-squares
        # point's own rounding residual: up to 5e-5 rho^2 on Gaussian CPDs (median
        # 1e-7-1e-5), but about margin^2 on a near-exact one, where the sphere can fall
        # out of the path's reach. So within 64 margins of least squares (every update
        # that goes there is) the least-squares point and its exact change are formed,
        # and give the offset.
        near = jnp.sqrt(jnp.maximum(s_fast + target, 0.0)) <= 65 * margin
        return lax.cond(near, least_squares, lambda: (a_cur, -s_fast))

    # s(mu) = |Y(mu) - b|^2 = E(mu) - E_ls is measured from the least-squares point.
    a_ls, change_ls = lax.cond(free, lambda: (a_cur, -s_free), exact_offset)
    s_cur = jnp.maximum(-change_ls, 0.0)
    unreachable = change_ls > target
    empty = unreachable & (slack < 0)
    zero = ~unreachable & (change_zero <= target)
    rho = jnp.sqrt(jnp.maximum(s_cur + target, 0.0)) - margin
    at_ls = (unreachable & ~empty) | (~unreachable & ~zero & (rho <= 0))
    newton = ~unreachable & ~zero & ~at_ls
    rho = jnp.where(newton, rho, 1.0)
    # Stop once s is within half the margin's share of the sphere (or a few ulps of
    # it): the iterates approach from the outside, so this keeps the bound, and in
    # float32 s is not known much better than that.
    s_tol = rho * margin + 16 * eps * rho * rho

    def newton_step(m, change, known_slope):
        """Whether ``s(m)`` is still outside the tolerance, and the next ``m``. -s'(m)/2 is
        needed for the next step only: an evaluation within tolerance ends the loop, and
        its step only refines the root remembered for the next sweep's start, so there
        the one-pole model replaces the solve."""
        s = jnp.maximum(s_cur + change, tiny)
        far = jnp.abs(s - rho * rho) > s_tol
        s3 = known_slope(far, s)
        step = s * (jnp.sqrt(s) / rho - 1.0) / jnp.where(s3 > 0, s3, 1.0)
        return far, jnp.maximum(m + jnp.where(s3 > 0, step, 0.0), 0.0)

    def cond(state):
        it, m, _, _, m_next, far = state
        moving = jnp.abs(m_next - m) > 4 * eps * m_next
        return newton & (it < _NEWTON_STEPS) & far & moving

    def body(state):
        it, _, _, _, m, _ = state
        chol, z, change = evaluate(m)

        def known_slope(far, s):
            return lax.cond(far, lambda: half_solve_norm(chol, z), lambda: pole_slope(m, s, sq_norm(z)))

        far, m_next = newton_step(m, change, known_slope)
        return it + 1, m, m * z, change, m_next, far

    far0, next0 = newton_step(start, change0, lambda far, s: slope0)
    state = (jnp.ones((), jnp.int32), start, start * z0, change0, next0, far0)
    _, _, a_path, change_path, root, _ = lax.while_loop(cond, body, state)

    a_new = jnp.where(zero, 0.0, jnp.where(at_ls, a_ls, a_path))
    change = jnp.where(zero, change_zero, jnp.where(at_ls, change_ls, change_path))
    new = (a_new * winv).astype(dtype)
    # A non-finite point (a factorisation that failed even with jitter) is never taken,
    # nor, from a feasible start, one with a larger objective: that happens only when
    # the margin moves the sphere inside a current point that is already optimal.
    # (Not targeting the current point's own sphere instead: Newton stops up to
    # rho * margin outside it, and the next update's repair cost +8.1e-5 sensitivity.)
    worse = (target >= 0) & (sq_norm(a_new) > sq_norm(a_cur))
    keep = empty | worse | ~jnp.isfinite(change) | ~jnp.all(jnp.isfinite(new))
    return (
        jnp.where(keep, current, new),
        jnp.where(keep, slack, slack - change),
        jnp.where(newton & ~keep, root, 0.0),
    )


def predict_multiplier(last, before):
    """Starting multiplier for a mode's Newton iteration from its last two roots.

    The roots drift smoothly from sweep to sweep (0.5-2.5 % per sweep after the first
    few on Gaussian CPDs), so the geometric extrapolation ``last^2 / before`` lands
    9-140x closer to the next root than ``last`` (measured at (9, 64, 64) and
    (9, 128, 128), R = 500). Where that is within the stopping tolerance (most updates
    at (9, 64, 64), R = 500) the first evaluation is accepted and the update factorises
    once instead of twice; elsewhere the Newton step from the closer start is the same
    count. The ratio is clipped to [1/2, 2]; without two positive roots the start is
    ``last`` (0 starts from the zero factor)."""
    both = (last > 0) & (before > 0)
    ratio = jnp.clip(last / jnp.where(both, before, 1.0), 0.5, 2.0)
    return jnp.where(both, last * ratio, last)


def _epc_update(objective, margin, allowance):
    """Dimension-tree update rule. The carry is ``(slack, rounding, mus)``: the slack
    as a running sum of computed error changes, an estimate of that sum's rounding
    error, and each mode's last two multipliers (rows: last, the one before). Past
    ``allowance`` (what ``margin`` already absorbs) every update aims that much
    further inside the bound."""

    def update(n, factors, gram, mttkrp, carry):
        slack, rounding, mus = carry
        weights_sq = epc_weights(factors, n, objective)
        current, reserve = factors[n], jnp.where(rounding > allowance, rounding, 0.0)
        start = predict_multiplier(mus[0, n], mus[1, n])
        new, new_slack, mu = epc_factor_update(
            current, weights_sq, gram, mttkrp, slack, margin, start, reserve
        )
        # The change <F - F_cur, (F + F_cur) gram - 2 mttkrp> is exact up to the rounding
        # of its products: negligible for a well-conditioned CPD (the bound moves by
        # ~1e-7 relative), but percents of the error when the factors carry big
        # cancelling terms, which is where EPC starts from.
        size = (norm(current) + norm(new)) * norm(gram) + 2 * norm(mttkrp)
        rounding += jnp.finfo(new.dtype).eps * norm(new - current) * size
        return new, (new_slack, rounding, mus.at[:, n].set(jnp.stack([mu, mus[0, n]])))

    return update


def _intensity_sum(factors):
    """Eq. 3: sum of squared intensities."""
    return jnp.sum(jnp.prod(jnp.stack([jnp.sum(f * f, axis=0) for f in factors]), axis=0))


def _epc(x, factors, delta, tol, max_iter, slots, objective):
    """The EPC sweeps at the bound ``delta`` (traced inside :func:`_epc_call`)."""
    norm_sq = jnp.sum(x * x)
    safe_norm = jnp.where(norm_sq > 0, jnp.sqrt(norm_sq), 1.0)
    minimised = OBJECTIVES.index(objective)  # which of ``metrics`` the sweeps lower
    # Rounding moves ||X - X^|| by about ten ulps of ||X|| (measured: ~9 eps ||X||
    # in float32). Updates aim that far inside the bound, and a violation smaller
    # than that is treated as rounding, not repaired at the cost of sensitivity.
    ulps = 16.0 * jnp.finfo(x.dtype).eps * jnp.sqrt(norm_sq)
    update = _epc_update(objective, ulps, ulps * delta)

    def exact(factors):
        """The exact error of ``factors`` and the slack it leaves; a violation within
        ``ulps`` counts as none."""
        err = jnp.linalg.norm(x - reconstruct(factors))
        slack = (delta - err) * (delta + err)
        return err, jnp.where((slack < 0) & (err - delta < ulps), 0.0, slack)

    def metrics(factors):
        """Eq. 5 and eq. 3, in the order of ``OBJECTIVES``."""
        return sensitivity(factors), _intensity_sum(factors)

    def record(hist, i, values, err):
        return EPCHistory(
            hist.sensitivity.at[i].set(values[0]),
            hist.intensity.at[i].set(values[1]),
            hist.rel_error.at[i].set(err / safe_norm),
        )

    def cond(state):
        it, _, _, _, change, slack, _, _, _ = state
        # Keep going while the objective moves, and while a sweep left the model just
        # outside the bound (rounding) and the next one can still move it back.
        moving = (change > tol) | ((slack < 0) & (change > 0))
        return (it < max_iter) & ((it < 1) | moving)

    def body(state):
        it, factors, grams, prev, _, slack, rounding, mus, hist = state
        carry = (slack, rounding, mus)
        factors, _, (slack, rounding, mus), grams = dimension_tree_sweep(
            x, norm_sq, factors, update, carry, grams
        )
        # Balancing scales columns, so the sweep's Grams are rescaled, not formed again.
        scales = balance_scales(factors)
        factors = tuple(f * s for f, s in zip(factors, scales, strict=True))
        grams = tuple(g * (s[:, None] * s[None, :]) for g, s in zip(grams, scales, strict=True))
        values = metrics(factors)
        value = values[minimised]
        change = jnp.abs(prev - value) / jnp.maximum(jnp.abs(prev), jnp.finfo(x.dtype).tiny)
        # The slack is carried as a running sum of exact per-update error changes. The
        # residual is formed explicitly (one GEMM, half an ALS sweep's flops) once the
        # rounding estimate of that sum reaches the margin, and on any sweep the loop
        # may stop after, so the result and the stopping decision rest on the exact error.
        last = (it + 1 >= max_iter) | (change <= tol)
        refresh = last | (rounding > ulps * delta)
        err, slack, rounding = lax.cond(
            refresh,
            lambda: (*exact(factors), jnp.zeros_like(rounding)),
            lambda: (jnp.sqrt(jnp.maximum(delta * delta - slack, 0.0)), slack, rounding),
        )
        return it + 1, factors, grams, value, change, slack, rounding, mus, record(hist, it + 1, values, err)

    factors = balance(factors)
    zeros = jnp.zeros((slots,), x.dtype)
    err, slack = exact(factors)
    values = metrics(factors)
    hist = record(EPCHistory(zeros, zeros, zeros), 0, values, err)
    start = values[minimised]
    mus = jnp.zeros((2, x.ndim), x.dtype)
    zero = jnp.zeros((), x.dtype)
    grams = tuple(gram(f) for f in factors)
    state = (jnp.zeros((), jnp.int32), factors, grams, start, zero, slack, zero, mus, hist)
    n_iter, factors, _, _, _, _, _, _, hist = lax.while_loop(cond, body, state)
    valid = jnp.arange(slots) <= n_iter
    hist = EPCHistory(*(jnp.where(valid, h, h[n_iter]) for h in hist))
    return EPCResult(factors, hist.rel_error[n_iter], hist.sensitivity[n_iter], n_iter, hist)


def epc(x, factors, *, delta=None, objective="sensitivity", max_iter=200, tol=1e-5):
    """Error Preserving Correction of a CPD (eq. 10-13).

    Minimises the sensitivity (Lemma 1, eq. 5) -- or, with ``objective="intensity"``,
    the sum of squared intensities (eq. 3, the original EPC of ref. [42]) -- subject
    to ``||X - [[A, B, C]]||_F <= delta``. Each factor update is the exact solution
    of its subproblem (see the module docstring); each sweep ends with a scale
    balancing (``cp_balance``), which leaves the tensor unchanged and can only lower
    the objective.

    Args:
      x: tensor of order N >= 2 (``(D*D, S, T)`` for a conv kernel).
      factors: starting CPD, e.g. ``cp_als(x, R).factors``.
      delta: absolute Frobenius error bound; default the error of ``factors`` (the
        paper's choice). A bound above ``||x||`` gives the zero model; a bound below
        what a subproblem can reach leaves that factor unchanged.
      objective: ``"sensitivity"`` (eq. 11) or ``"intensity"`` (eq. 13).
      max_iter: maximum number of sweeps (static: it sets the history's length; the
        program is compiled per power of two, see ``cp_als.history_slots``).
      tol: stop when the objective changes by less than ``tol`` (relative) in a sweep.

    Returns:
      :class:`EPCResult`. ``history.rel_error`` is exact on the sweeps where the
      residual was formed (always the last) and the carried value on the others.

    A tensor of extreme magnitude (``max|x|`` outside ``[2^-21, 2^20)``) is corrected
    divided by a power of two, with ``factors`` and ``delta`` alike, which is exact;
    the results are scaled back (``_scale.py``).

    Accuracy: after every sweep the error is at most ``delta`` plus rounding,
    ``16 eps ||x||`` (in float32 about 2e-6 ||x||); for a near-exact CPD (``delta``
    around 1e-5 ||x||) that allowance is a sizeable fraction of ``delta``.

    Differentiation: ``jax.jvp``/``jax.jacfwd`` work through the loop; reverse-mode
    ``jax.grad`` w.r.t. ``x`` does not, because the sweeps run in a ``lax.while_loop``
    (whose trip count depends on the data) and the corrected CPD is not a smooth
    function of ``x`` where the constraint changes activity. Gradients w.r.t. the
    returned factors (what fine-tuning uses) are unaffected.

    References:
      Phan et al., ECCV 2020, section 2.3; Phan, Tichavsky, Cichocki, "Error
      preserving correction: a method for CP decomposition at a target error bound",
      IEEE TSP 2019 (ref. [42]).
    """
    x = as_float_array(x, "x", min_ndim=2)
    factors = check_factors(factors, "factors", shape=x.shape)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    given = delta is not None
    delta = jnp.asarray(delta if given else 0.0, x.dtype)
    if delta.ndim != 0:
        raise ValueError(f"delta must be a scalar, got shape {delta.shape}")
    if is_concrete(delta) and not (math.isfinite(float(delta)) and float(delta) >= 0):
        raise ValueError(f"delta must be a finite float >= 0, got {float(delta)}")
    tol = jnp.asarray(tol, x.dtype)
    slots = history_slots(max_iter + 1)
    res = _epc_call(x, factors, delta, given, tol, max_iter, slots=slots, objective=objective)
    return res._replace(history=EPCHistory(*(h[: max_iter + 1] for h in res.history)))


@program(static_argnames=("slots", "objective"))
def _epc_call(x, factors, delta, given, tol, max_iter, *, slots, objective):
    """:func:`epc` after validation, as one program: scaling, the bound, the sweeps.

    ``delta`` is used when ``given``, else the error of ``factors`` is. One compilation
    per shape, options and ``history_slots``, with or without ``delta`` (run op by op, the scaling alone
    compiled some twenty small programs on each new shape).
    """
    factors = tuple(f.astype(x.dtype) for f in factors)
    scale, per_factor = power_of_two_scale(x, x.ndim)
    x = x / scale
    factors = rescale_cpd(factors, scale)
    delta = lax.cond(given, lambda: delta / scale, lambda: jnp.linalg.norm(x - reconstruct(factors)))
    res = _epc(x, factors, delta, tol, max_iter, slots, objective)
    # Eq. 5 multiplies N - 1 squared factor norms, eq. 3 all N of them.
    sens_scale, intensity_scale = per_factor ** (2 * (x.ndim - 1)), per_factor ** (2 * x.ndim)
    hist = res.history._replace(
        sensitivity=res.history.sensitivity * sens_scale, intensity=res.history.intensity * intensity_scale
    )
    factors = tuple(f * per_factor for f in res.factors)
    return res._replace(factors=factors, sensitivity=res.sensitivity * sens_scale, history=hist)
