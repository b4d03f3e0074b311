"""CP decomposition by alternating least squares (ALS), jitted, with a dimension tree.

For an order-N tensor the modes are split into the "left" block ``0..N-2`` and the
last mode. One sweep costs two GEMMs of ``prod(I) * R`` multiply-adds (about
``4 * I*J*K * R`` flops for order 3) and never builds the Khatri-Rao product of
two channel modes:

* ``Y = X_(left) @ F_last`` once per sweep, shape ``(I_0, ..., I_{N-2}, R)``;
* the MTTKRP of every left mode is ``Y`` contracted with the other left factors
  (multiply + sum, no GEMM);
* the MTTKRP of the last mode is ``(khatri_rao(left factors)^T @ X_(left))^T``, whose
  Khatri-Rao factor has the size of ``Y`` (``D^2 * S x R`` for a conv kernel).

Both GEMMs take their operands in the layout XLA:CPU's fast GEMM path expects, and
the contractions are pairwise sums (``pairwise_sum``): together 1.3-1.5x faster per
sweep than ``X^T @ khatri_rao(...)`` and ``jnp.sum`` (``docs/performance.md``).

Each factor is the solution of its normal equations with the Cholesky factor of
the Hadamard product of the other Gram matrices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._checks import as_float_array, check_factors, check_key, check_positive_int, check_tol
from ._program import program
from ._scale import power_of_two_scale, rescale_cpd
from ._sum import inner, pairwise_sum
from .kruskal import balance, khatri_rao, reconstruct


class CPResult(NamedTuple):
    """Result of :func:`cp_als`.

    Attributes:
      factors: tuple of ``(I_n, R)`` factor matrices, scale-balanced (see ``cp_balance``).
      rel_error: ``||X - [[factors]]||_F / ||X||_F``, computed exactly at the end.
      n_iter: number of ALS sweeps run.
      errors: ``(max_iter,)`` relative error after each sweep; entries at and after
        ``n_iter`` repeat the last value, so the array is jit-shaped and monotone.
    """

    factors: tuple
    rel_error: jax.Array
    n_iter: jax.Array
    errors: jax.Array


def cholesky(sym):
    """Lower Cholesky factor of a symmetric matrix, read from its upper triangle.

    NaN throughout the lower triangle when the factorisation fails. ``sym.T`` is the
    column-major view LAPACK reads, so no transposed copy is made, and no
    ``(A + A^T) / 2`` pass: every matrix factorised here is exactly symmetric (built
    from ``gram`` by symmetric scalings and Hadamard products; ``docs/performance.md``).
    """
    return lax.linalg.cholesky(sym.T, symmetrize_input=False)


def cholesky_solve_rows(chol, rhs):
    """Solves ``F @ (L L^T) = rhs`` for F, given the lower Cholesky factor ``L``."""
    half = lax.linalg.triangular_solve(chol, rhs.T, left_side=True, lower=True)
    return lax.linalg.triangular_solve(chol, half, left_side=True, lower=True, transpose_a=True).T


def psd_cholesky(gram):
    """Lower Cholesky factor of ``gram + jitter * I`` for a symmetric PSD ``gram``.

    The jitter starts at ``eps * trace / R`` (an ulp of the mean eigenvalue, which
    leaves the least-squares fit unchanged) and grows 100x until the factorisation
    succeeds. Rounding in a Hadamard product of Gram
    matrices leaves a singular one (two equal columns, e.g. a CPD with a repeated
    or diverging pair of terms) with eigenvalues a few ``eps * trace`` below zero,
    where LAPACK's Cholesky fails and returns NaN. The loop body runs only then, so
    the common case costs one factorisation, also under ``vmap``.
    """
    r = gram.shape[0]
    dtype = gram.dtype
    scale = jnp.sum(jnp.diagonal(gram)) / r + jnp.finfo(dtype).tiny
    eye = jnp.eye(r, dtype=dtype)

    def factor(jitter):
        return cholesky(gram + jitter * eye)

    def failed(state):
        # A failed factorisation is NaN throughout its triangle, a NaN Gram gives a NaN
        # pivot: the last pivot tells both, without a pass over the matrix.
        jitter, chol = state
        return ~jnp.isfinite(chol[-1, -1]) & (jitter < scale)

    def retry(state):
        jitter = 100.0 * state[0]
        return jitter, factor(jitter)

    # At most log_100(1 / eps) + 1 retries (5 in float32): the last jitter exceeds the
    # mean eigenvalue. A non-finite Gram stays NaN, for the caller to see.
    jitter = jnp.finfo(dtype).eps * scale + jnp.finfo(dtype).tiny
    return lax.while_loop(failed, retry, (jitter, factor(jitter)))[1]


def gram_solve(gram, mttkrp):
    """Solves ``F @ gram = mttkrp`` for F with a jittered Cholesky factor (``psd_cholesky``)."""
    return cholesky_solve_rows(psd_cholesky(gram), mttkrp)


def _normalize(f):
    norms = jnp.linalg.norm(f, axis=0)
    return f / jnp.where(norms > 0, norms, 1.0)


def _contract_except(y, factors, keep):
    """Contracts ``y`` (left dims + R) with every left factor but ``keep``: ``(I_keep, R)``."""
    n_left = y.ndim - 1
    for m in reversed(range(n_left)):
        if m == keep:
            continue
        shape = [1] * y.ndim
        shape[m], shape[-1] = factors[m].shape
        y = pairwise_sum(y * factors[m].reshape(shape), m)
    return y


def gram(f):
    """``f^T f``, exactly symmetric, from a GEMM on XLA:CPU's fast path.

    The contracted dimension is made minor in both operands (``docs/performance.md``).
    A GEMM does not promise a symmetric result (YNNPACK on this CPU gave one in every
    shape tried; other backends tile differently); the average is exactly symmetric,
    so the factor ``cholesky`` takes from one triangle is that of the matrix the rest
    of the sweep multiplies with.
    """
    ft = lax.optimization_barrier(f.T)
    g = ft @ ft.T
    return 0.5 * (g + g.T)


def hadamard_grams(grams, skip=None):
    """Hadamard product of the Gram matrices ``F_n^T F_n``, leaving out mode ``skip``."""
    out = None
    for n, g in enumerate(grams):
        if n != skip:
            out = g if out is None else out * g
    return out


def dimension_tree_sweep(x, norm_sq, factors, update, carry=None, grams=None):
    """One pass over all modes, each factor replaced by ``update`` (dimension tree).

    Args:
      x: order-N tensor.
      norm_sq: ``||x||_F^2``.
      factors: current factor matrices.
      update: ``update(n, factors, gram, mttkrp, carry) -> (new F_n, carry)`` where
        ``gram`` is the Hadamard product of the other factors' Gram matrices and
        ``mttkrp`` is ``X_(n) @ khatri_rao(other factors)``; ``factors`` holds the
        already updated ones.
      carry: state threaded through the updates.
      grams: the Gram matrices ``F_n^T F_n`` of ``factors`` when the caller has them
        (the previous sweep's output); computed when omitted.

    Returns:
      ``(factors, err_sq, carry, grams)``: the updated factors, the squared residual
      norm via the Gram identity ``|X|^2 - 2<X, X^> + |X^|^2``, the final carry and
      the Gram matrices of the updated factors.
    """
    last = x.ndim - 1
    x_left = x.reshape(-1, x.shape[last])
    factors = list(factors)
    grams = [gram(f) for f in factors] if grams is None else list(grams)
    y = (x_left @ factors[last]).reshape(*x.shape[:last], -1)
    mttkrp = None
    for n in range(x.ndim):
        if n < last:
            mttkrp = _contract_except(y, factors, n)
        else:
            # The barrier keeps XLA from folding the transpose into the GEMM, which
            # would move it off the fast path (EPC sweep 17.4 -> 13.9 ms at 9x512x512, R=100).
            mttkrp = lax.optimization_barrier(khatri_rao(factors[:last], transposed=True) @ x_left).T
        factors[n], carry = update(n, tuple(factors), hadamard_grams(grams, n), mttkrp, carry)
        grams[n] = gram(factors[n])
    fit_sq = inner(hadamard_grams(grams, last), grams[last])  # |X^|^2: sum of the Hadamard of all Grams
    err_sq = norm_sq - 2.0 * inner(mttkrp, factors[last]) + fit_sq
    return tuple(factors), err_sq, carry, tuple(grams)


def _als_update(last):
    """ALS rule: least-squares factor; left modes column-normalised, the last keeps the scale."""

    def update(n, factors, gram, mttkrp, carry):
        f = gram_solve(gram, mttkrp)
        return (f if n == last else _normalize(f)), carry

    return update


def _svd_init(x, rank, key):
    """Leading eigenvectors of ``X_(n) X_(n)^T`` (HOSVD), padded with random columns."""
    factors = []
    keys = jax.random.split(key, x.ndim)
    for n in range(x.ndim):
        unf = jnp.moveaxis(x, n, 0).reshape(x.shape[n], -1)
        _, vecs = jnp.linalg.eigh(unf @ unf.T)
        k = min(rank, x.shape[n])
        lead = vecs[:, ::-1][:, :k]
        if k < rank:
            extra = jax.random.normal(keys[n], (x.shape[n], rank - k), x.dtype)
            lead = jnp.concatenate([lead, _normalize(extra)], axis=1)
        factors.append(lead)
    return tuple(factors)


def _random_init(x, rank, key):
    keys = jax.random.split(key, x.ndim)
    return tuple(
        _normalize(jax.random.normal(k, (i, rank), x.dtype)) for k, i in zip(keys, x.shape, strict=True)
    )


def history_slots(length: int) -> int:
    """Static length of a per-sweep history of ``length`` entries: the next power of two, at least 64.

    The sweep count is a traced argument of the programs and only this length is
    static, so any ``max_iter`` up to 64 shares one compiled program per shape (and
    so on per power of two); the public functions slice the history to its documented
    length. With ``max_iter`` static, every new value compiled the sweeps again
    (1.5-8 s each for ``cp_als`` and ``epc``).
    """
    return max(64, 1 << (length - 1).bit_length())


def _cp_als(x, init, tol, max_iter, slots):
    """The ALS sweeps from ``init`` (traced inside :func:`_cp_als_call`)."""
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    norm_x = jnp.linalg.norm(x)
    safe_norm = jnp.where(norm_x > 0, norm_x, 1.0)
    # Below this relative error the Gram identity loses its digits to cancellation;
    # there the residual is formed explicitly.
    exact_below = 30.0 * jnp.sqrt(eps)

    def rel_err(factors, err_sq):
        fast = jnp.sqrt(jnp.maximum(err_sq, 0.0)) / safe_norm
        return lax.cond(
            fast < exact_below,
            lambda: jnp.linalg.norm(x - reconstruct(factors)) / safe_norm,
            lambda: fast,
        )

    def cond(state):
        it, _, _, err, prev, _ = state
        change = jnp.abs(prev - err) / jnp.maximum(prev, eps)
        return (it < max_iter) & ((it < 2) | (change > tol)) & (err > 10.0 * eps)

    norm_sq = norm_x * norm_x
    update = _als_update(x.ndim - 1)

    def body(state):
        it, factors, grams, err, _, errors = state
        factors, err_sq, _, grams = dimension_tree_sweep(x, norm_sq, factors, update, grams=grams)
        new_err = rel_err(factors, err_sq)
        return it + 1, factors, grams, new_err, err, errors.at[it].set(new_err)

    errors = jnp.zeros((slots,), dtype)
    one = jnp.ones((), dtype)
    grams = tuple(gram(f) for f in init)
    state = (jnp.zeros((), jnp.int32), init, grams, one, 2 * one, errors)
    n_iter, factors, _, _, _, errors = lax.while_loop(cond, body, state)
    factors = balance(factors)
    final = jnp.linalg.norm(x - reconstruct(factors)) / safe_norm
    keep = norm_x > 0
    factors = tuple(jnp.where(keep, f, 0.0) for f in factors)
    final = jnp.where(keep, final, 0.0)
    errors = jnp.where(jnp.arange(slots) < n_iter, errors, final)
    return CPResult(factors, final, n_iter, errors)


def cp_als(x, rank, *, key=None, init="svd", max_iter=500, tol=1e-6):
    """CP decomposition of an order-N tensor by ALS (eq. 2).

    Args:
      x: tensor of order N >= 2, e.g. a conv kernel as ``(D*D, S, T)``.
      rank: number of rank-1 terms R (static).
      key: ``jax.random`` key for the random parts of the initialisation
        (``PRNGKey(0)`` when omitted).
      init: ``"svd"`` (leading singular vectors of the unfoldings, HOSVD, padded
        with random columns when R exceeds a dimension), ``"random"`` (Gaussian),
        or a tuple of factor matrices ``(I_n, R)``.
      max_iter: maximum number of sweeps (static: it sets the history's length; the
        program is compiled per power of two, see ``history_slots``).
      tol: stop when the relative change of the relative error is below ``tol``.

    Returns:
      :class:`CPResult` with scale-balanced factors, the exact final relative
      error, the sweep count and the per-sweep error history.

    Works under ``jax.jit`` (``rank``, ``init`` and ``max_iter`` static) and
    ``jax.vmap`` over a batch of same-shape tensors. A zero tensor returns zero
    factors and error 0. A tensor of extreme magnitude (``max|x|`` outside
    ``[2^-21, 2^20)``) is decomposed divided by a power of two, which is exact, and
    its factors are scaled back (``_scale.py``).
    """
    x = as_float_array(x, "x", min_ndim=2)
    rank = check_positive_int(rank, "rank")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    key = check_key(key)
    if isinstance(init, str):
        if init not in ("svd", "random"):
            raise ValueError(f"init must be 'svd', 'random' or a tuple of factors, got {init!r}")
        factors = _initial_factors(x, key, rank=rank, init=init)
    else:
        start = check_factors(init, "init", shape=x.shape)
        if start[0].shape[1] != rank:
            raise ValueError(f"init factors have rank {start[0].shape[1]}, but rank={rank}")
        factors = _rescaled_start(x, start)
    result = _cp_als_call(x, factors, jnp.asarray(tol, x.dtype), max_iter, slots=history_slots(max_iter))
    return result._replace(errors=result.errors[:max_iter])


# The public function runs as three programs, each compiled once per shape: the
# initialisation, or the rescaling of a given start, and the sweeps, which all starts
# share. Run op by op, the scaling and initialisation compiled some twenty small
# programs on each new shape (1.5-2 s, about as long as the sweeps' own compilation).


@program(static_argnames=("rank", "init"))
def _initial_factors(x, key, *, rank, init):
    """``init`` ("svd" or "random") factors for ``x`` divided by its power-of-two scale."""
    x = x / power_of_two_scale(x, x.ndim)[0]
    return _svd_init(x, rank, key) if init == "svd" else _random_init(x, rank, key)


@jax.jit
def _rescaled_start(x, start):
    """A given start CPD, for ``x`` divided by its power-of-two scale (exact)."""
    return rescale_cpd(tuple(f.astype(x.dtype) for f in start), power_of_two_scale(x, x.ndim)[0])


@program(static_argnames=("slots",))
def _cp_als_call(x, factors, tol, max_iter, *, slots):
    """The sweeps on ``x`` divided by its power-of-two scale; the factors scaled back."""
    scale, per_factor = power_of_two_scale(x, x.ndim)
    result = _cp_als(x / scale, factors, tol, max_iter, slots)
    return result._replace(factors=tuple(f * per_factor for f in result.factors))
