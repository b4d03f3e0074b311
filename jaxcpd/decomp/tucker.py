"""Tucker-2 decomposition of the channel modes, with fixed ranks or an error bound.

``K ~= G x_2 U x_3 V`` (eq. 14) with ``U (S, R1)``, ``V (T, R2)`` orthonormal and the
core ``G = K x_2 U^T x_3 V^T`` (Lemma 2). U and V are the principal eigenvectors of
``Q1`` (eq. 16) and ``Q2`` (eq. 18), updated alternately. With an error bound the
ranks are the smallest that keep ``||K - G x_2 U x_3 V||_F <= delta`` (eq. 15, 17).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._checks import as_float_array, check_fraction, check_positive_int, check_tol, is_concrete
from ._program import program
from ._scale import power_of_two_scale


class Tucker2Result(NamedTuple):
    """Result of :func:`tucker2`.

    Attributes:
      core: ``(I, R1, R2)`` core tensor G.
      U: ``(J, R1)`` orthonormal factor of mode 2 (input channels).
      V: ``(K, R2)`` orthonormal factor of mode 3 (output channels).
      rel_error: ``||X - G x_2 U x_3 V||_F / ||X||_F``.
    """

    core: jax.Array
    U: jax.Array
    V: jax.Array
    rel_error: jax.Array


def _top_eigvecs(q, rank):
    """Eigenvalues (descending) and the ``rank`` principal eigenvectors of symmetric ``q``."""
    vals, vecs = jnp.linalg.eigh(q)
    return vals[::-1], vecs[:, ::-1][:, :rank]


def _q1(x, v):
    """Eq. 16: ``Q1 = sum_i K_i V V^T K_i^T`` (J x J)."""
    w = jnp.einsum("ijk,kr->jir", x, v).reshape(x.shape[1], -1)
    return w @ w.T


def _q2(x, u):
    """Eq. 18: ``Q2 = sum_i K_i^T U U^T K_i`` (K x K)."""
    z = jnp.einsum("ijk,jr->kir", x, u).reshape(x.shape[2], -1)
    return z @ z.T


def tucker_core(x, u, v):
    """Lemma 2: ``G = X x_2 U^T x_3 V^T``."""
    return jnp.einsum("ijk,jr,ks->irs", x, u, v)


def tucker_reconstruct(core, u, v):
    """``G x_2 U x_3 V`` (eq. 14)."""
    return jnp.einsum("irs,jr,ks->ijk", core, u, v)


@program(static_argnames=("ranks",))
def _tucker2_fixed(x, tol, max_iter, *, ranks):
    r1, r2 = ranks
    norm_sq = jnp.sum(x * x)
    safe = jnp.where(norm_sq > 0, norm_sq, 1.0)
    _, v = _top_eigvecs(_q2(x, jnp.eye(x.shape[1], dtype=x.dtype)), r2)

    def rel_err_sq(u, v):
        core = tucker_core(x, u, v)
        return jnp.maximum(norm_sq - jnp.sum(core * core), 0.0) / safe

    def body(state):
        it, _, v, err, _ = state
        _, u = _top_eigvecs(_q1(x, v), r1)
        _, v = _top_eigvecs(_q2(x, u), r2)
        return it + 1, u, v, rel_err_sq(u, v), err

    def cond(state):
        it, _, _, err, prev = state
        return (it < max_iter) & ((it < 2) | (prev - err > tol * jnp.maximum(prev, 1e-30)))

    u0 = jnp.zeros((x.shape[1], r1), x.dtype)
    init = (jnp.zeros((), jnp.int32), u0, v, jnp.ones((), x.dtype), 2 * jnp.ones((), x.dtype))
    _, u, v, _, _ = lax.while_loop(cond, body, init)
    core = tucker_core(x, u, v)
    rel_error = jnp.linalg.norm(x - tucker_reconstruct(core, u, v)) / jnp.sqrt(safe)
    return Tucker2Result(core, u, v, rel_error)


@program(static_argnums=(2, 3))
def _spectrum(x, w, mode, rank):
    """:func:`_top_eigvecs` of eq. 16's ``Q1`` (``mode=1``, ``w = V``) or eq. 18's ``Q2``
    (``mode=2``, ``w = U``), as one program."""
    return _top_eigvecs((_q1 if mode == 1 else _q2)(x, w), rank)


@jax.jit
def _scaled(x):
    """``x`` divided by its power-of-two scale (``_scale.py``), the scale, and ``|x / scale|^2``."""
    scale = power_of_two_scale(x)[0]
    x = x / scale
    return x, scale, jnp.sum(x * x)


def _energy_rank(vals, needed):
    """Smallest r with ``sum(vals[:r]) >= needed`` (eq. 17), at least 1."""
    cum = np.cumsum(np.asarray(vals, dtype=np.float64))
    return int(min(max(np.searchsorted(cum, needed) + 1, 1), len(cum)))


def _smallest_for_bound(x, norm_sq, error_bound, tol, max_iter):
    """Tucker-2 with the smallest ranks meeting a relative error bound (eq. 15-18).

    Alternates the eigenvalue-energy rule of eq. 17 for U and for V until the ranks
    stop changing, then descends while a fixed-rank Tucker-2 with one rank smaller
    still meets the bound. Returns the fixed-rank result the search accepted last
    (each ranks' decomposition is computed once).
    """
    needed = norm_sq * (1.0 - error_bound**2)
    j, k = x.shape[1], x.shape[2]
    v = jnp.eye(k, dtype=x.dtype)
    ranks = (j, k)
    for _ in range(max(max_iter, 1)):
        vals, vecs = _spectrum(x, v, 1, j)
        r1 = _energy_rank(vals, needed)
        u = vecs[:, :r1]
        vals, vecs = _spectrum(x, u, 2, k)
        r2 = _energy_rank(vals, needed)
        v = vecs[:, :r2]
        if (r1, r2) == ranks:
            break
        ranks = (r1, r2)

    results = {}

    def meets(r):
        if r not in results:
            results[r] = _tucker2_fixed(x, tol, max_iter, ranks=r)
        return float(results[r].rel_error) <= error_bound

    while not meets(ranks) and ranks != (j, k):
        ranks = (min(ranks[0] + 1, j), min(ranks[1] + 1, k))
    improved = True
    while improved:
        improved = False
        candidates = [(ranks[0] - 1, ranks[1]), (ranks[0], ranks[1] - 1)]
        # Try the reduction that saves more parameters first (objective of eq. 15).
        candidates.sort(key=lambda r: r[0] * j + r[1] * k + r[0] * r[1] * x.shape[0])
        for cand in candidates:
            if min(cand) >= 1 and meets(cand):
                ranks, improved = cand, True
                break
    return results[ranks]


def tucker2(x, ranks=None, *, error_bound=None, max_iter=100, tol=1e-7):
    """Tucker-2 decomposition of modes 2 and 3 (the channel modes), eq. 14-18.

    Args:
      x: ``(I, J, K)`` tensor, e.g. a conv kernel as ``(D*D, S, T)``.
      ranks: ``(R1, R2)``; static, required unless ``error_bound`` is given.
      error_bound: relative bound ``eps`` in (0, 1): the smallest ranks with
        ``||X - X^||_F <= eps ||X||_F`` are searched (eq. 15). Ranks then depend on
        the data, so this mode needs a concrete ``x`` (not under ``jit``).
      max_iter: maximum number of alternating U/V updates.
      tol: stop when the relative decrease of the squared error is below ``tol``.

    Returns:
      :class:`Tucker2Result`; ``U``, ``V`` orthonormal, core by Lemma 2.

    A tensor of extreme magnitude (``max|x|`` outside ``[2^-21, 2^20)``) is decomposed
    divided by a power of two, which is exact, and the core is scaled back
    (``_scale.py``).
    """
    x = as_float_array(x, "x", ndim=3)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_tol(tol)
    if (ranks is None) == (error_bound is None):
        raise ValueError("pass exactly one of ranks=(R1, R2) or error_bound")
    if error_bound is not None:
        error_bound = check_fraction(error_bound, "error_bound")
        if not is_concrete(x):
            raise ValueError("error_bound needs a concrete x (ranks depend on data); pass ranks under jit")
        scaled, scale, norm_sq = _scaled(x)
        if float(norm_sq) > 0.0:
            tol = jnp.asarray(tol, x.dtype)
            result = _smallest_for_bound(scaled, float(norm_sq), error_bound, tol, max_iter)
            return result._replace(core=result.core * scale)
        ranks = (1, 1)
    if not isinstance(ranks, tuple | list) or len(ranks) != 2:
        raise ValueError(f"ranks must be a pair (R1, R2), got {ranks!r}")
    ranks = (
        check_positive_int(ranks[0], "ranks[0]", upper=x.shape[1]),
        check_positive_int(ranks[1], "ranks[1]", upper=x.shape[2]),
    )
    return _tucker2_call(x, jnp.asarray(tol, x.dtype), max_iter, ranks=ranks)


@program(static_argnames=("ranks",))
def _tucker2_call(x, tol, max_iter, *, ranks):
    """:func:`tucker2` at fixed ranks after validation, scaling included, as one program."""
    scale = power_of_two_scale(x)[0]
    result = _tucker2_fixed(x / scale, tol, max_iter, ranks=ranks)
    return result._replace(core=result.core * scale)
