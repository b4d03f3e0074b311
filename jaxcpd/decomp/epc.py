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
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._checks import as_float_array, check_factors, check_positive_int, check_tol, is_concrete
from .cp_als import dimension_tree_sweep
from .kruskal import balance, reconstruct, sensitivity

OBJECTIVES = ("sensitivity", "intensity")

# Iterations of the monotone Newton method on the secular equation; it converges
# from the left, quadratically once near the root, so this is ample in float64.
_SECULAR_STEPS = 40


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


def solve_secular(beta, e, rho):
    """Root ``mu >= 0`` of ``sum_r beta_r / (1 + mu e_r)^2 = rho^2``.

    Newton's method on ``h(mu) = 1/g(mu) - 1/rho``, ``g(mu)^2`` the left-hand side:
    h is concave and increasing (Moré & Sorensen's trust-region secular function),
    so the iterates started at 0 increase monotonically to the root without
    overshooting. Assumes ``0 < rho^2 < sum(beta)``.
    """

    def step(_, mu):
        d = 1.0 + mu * e
        g_sq = jnp.sum(beta / (d * d))
        s3 = jnp.sum(beta * e / (d * d * d))
        g = jnp.sqrt(g_sq)
        return mu + jnp.where(s3 > 0, (g / rho - 1.0) * g_sq / jnp.where(s3 > 0, s3, 1.0), 0.0)

    return lax.fori_loop(0, _SECULAR_STEPS, step, jnp.zeros((), beta.dtype))


def epc_factor_update(current, weights_sq, gram, mttkrp, slack, margin=0.0):
    """Exact minimiser of eq. 11/12 for one factor (the others fixed).

    The ball radius is formed from the current point instead of from
    ``delta^2 - |K|^2 + |b|^2``: ``rho^2 = |Y_cur - b|^2 + slack`` with
    ``slack = delta^2 - ||K - K^_cur||^2`` carried from update to update. Both terms
    are small numbers computed directly, so float32 keeps the bound to a few ulps of
    ``|K|`` rather than losing half the digits to ``|K|^2 - |b|^2``.

    Args:
      current: ``(I, R)`` current factor, kept when the ball is empty (``rho^2 < 0``).
      weights_sq: ``(R,)`` squared weights ``w_r^2``.
      gram: ``(R, R)`` Hadamard product of the other factors' Gram matrices.
      mttkrp: ``(I, R)`` MTTKRP of this mode.
      slack: ``delta^2`` minus the current squared error.
      margin: the ball radius is reduced by this much (absolute), so that rounding
        in the factor's entries cannot push the error past the bound.

    Returns:
      ``(new factor, new slack)``.
    """
    dtype = current.dtype
    eps = jnp.finfo(dtype).eps
    r = gram.shape[0]
    w = jnp.sqrt(weights_sq)
    winv = jnp.where(w > 0, 1.0 / jnp.where(w > 0, w, 1.0), 0.0)
    gamma = gram * winv[:, None] * winv[None, :]
    e, q = jnp.linalg.eigh(gamma)
    keep = e > r * eps * jnp.maximum(jnp.max(e), 0.0)
    e_safe = jnp.where(keep, e, 1.0)
    root = jnp.where(keep, jnp.sqrt(e_safe), 0.0)
    inv_root = jnp.where(keep, lax.rsqrt(e_safe), 0.0)
    b = ((mttkrp * winv) @ q) * inv_root
    y_cur = ((current * w) @ q) * root
    rho_sq = jnp.sum((y_cur - b) ** 2) + slack
    beta = jnp.sum(b * b, axis=0)
    b_sq = jnp.sum(beta)
    inside = (rho_sq > 0) & (rho_sq < b_sq)
    rho = jnp.sqrt(jnp.where(inside, rho_sq, 0.5 * b_sq)) - margin
    at_ls = rho <= 0
    mu = solve_secular(beta, jnp.where(keep, e, 0.0), jnp.where(at_ls, 1.0, rho))
    # y_r - b_r = -b_r / (1 + mu e_r): formed directly, no cancellation.
    resid = jnp.where(inside, jnp.where(at_ls, 0.0, 1.0 / (1.0 + mu * e_safe)), 1.0)
    y = b * (1.0 - resid)
    new = ((y * inv_root) @ q.T) * winv
    new_slack = rho_sq - jnp.sum(beta * resid * resid)
    empty = rho_sq < 0
    return jnp.where(empty, current, new).astype(dtype), jnp.where(empty, slack, new_slack)


def _epc_update(objective, margin):
    def update(n, factors, gram, mttkrp, slack):
        weights_sq = epc_weights(factors, n, objective)
        return epc_factor_update(factors[n], weights_sq, gram, mttkrp, slack, margin)

    return update


def _intensity_sum(factors):
    """Eq. 3: sum of squared intensities."""
    return jnp.sum(jnp.prod(jnp.stack([jnp.sum(f * f, axis=0) for f in factors]), axis=0))


@partial(jax.jit, static_argnames=("max_iter", "objective"))
def _epc(x, factors, delta, tol, *, max_iter, objective):
    norm_sq = jnp.sum(x * x)
    safe_norm = jnp.where(norm_sq > 0, jnp.sqrt(norm_sq), 1.0)
    measure = sensitivity if objective == "sensitivity" else _intensity_sum
    # Rounding moves ||X - X^|| by about ten ulps of ||X|| (measured: ~9 eps ||X||
    # in float32). Updates aim that far inside the bound, and a violation smaller
    # than that is treated as rounding, not repaired at the cost of sensitivity.
    ulps = 16.0 * jnp.finfo(x.dtype).eps * jnp.sqrt(norm_sq)
    update = _epc_update(objective, ulps)

    def slack_of(err):
        slack = (delta - err) * (delta + err)
        return jnp.where((slack < 0) & (err - delta < ulps), 0.0, slack)

    def record(hist, i, factors, err):
        return EPCHistory(
            hist.sensitivity.at[i].set(sensitivity(factors)),
            hist.intensity.at[i].set(_intensity_sum(factors)),
            hist.rel_error.at[i].set(err / safe_norm),
        )

    def cond(state):
        it, _, value, prev, slack, _ = state
        change = jnp.abs(prev - value) / jnp.maximum(jnp.abs(prev), jnp.finfo(x.dtype).tiny)
        # Keep going while the objective moves, and while a sweep left the model just
        # outside the bound (rounding) and the next one can still move it back.
        moving = (change > tol) | ((slack < 0) & (change > 0))
        return (it < max_iter) & ((it < 1) | moving)

    def body(state):
        it, factors, value, _, slack, hist = state
        factors, _, _, _ = dimension_tree_sweep(x, norm_sq, factors, update, slack)
        factors = balance(factors)
        # The residual is formed explicitly once per sweep, so the slack that the next
        # sweep starts from is exact, not a running sum of rounded updates.
        err = jnp.linalg.norm(x - reconstruct(factors))
        slack = slack_of(err)
        return it + 1, factors, measure(factors), value, slack, record(hist, it + 1, factors, err)

    factors = balance(factors)
    zeros = jnp.zeros((max_iter + 1,), x.dtype)
    err = jnp.linalg.norm(x - reconstruct(factors))
    hist = record(EPCHistory(zeros, zeros, zeros), 0, factors, err)
    start = measure(factors)
    state = (jnp.zeros((), jnp.int32), factors, start, start, slack_of(err), hist)
    n_iter, factors, _, _, _, hist = lax.while_loop(cond, body, state)
    valid = jnp.arange(max_iter + 1) <= n_iter
    hist = EPCHistory(*(jnp.where(valid, h, h[n_iter]) for h in hist))
    return EPCResult(factors, hist.rel_error[n_iter], sensitivity(factors), n_iter, hist)


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
      max_iter: maximum number of sweeps (static).
      tol: stop when the objective changes by less than ``tol`` (relative) in a sweep.

    Returns:
      :class:`EPCResult`.

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
    factors = tuple(f.astype(x.dtype) for f in factors)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    if delta is None:
        delta = jnp.linalg.norm(x - reconstruct(factors))
    else:
        delta = jnp.asarray(delta, x.dtype)
        if delta.ndim != 0:
            raise ValueError(f"delta must be a scalar, got shape {delta.shape}")
        if is_concrete(delta) and not (bool(jnp.isfinite(delta)) and float(delta) >= 0):
            raise ValueError(f"delta must be a finite float >= 0, got {float(delta)}")
    return _epc(x, factors, delta, jnp.asarray(tol, x.dtype), max_iter=max_iter, objective=objective)
