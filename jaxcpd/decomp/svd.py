"""Truncated SVD for 1x1 convolutions and linear layers (paper section 3, SVD block)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_float_array, check_fraction, check_positive_int, is_concrete


def svd_rank_for_bound(singular_values, error_bound) -> int:
    """Smallest r whose discarded singular values keep the relative error <= error_bound."""
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    total = s2.sum()
    if total == 0.0:
        return 1
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tail[r] = sum_{i>=r} s_i^2
    ok = np.nonzero(tail <= (error_bound**2) * total)[0]
    return int(max(ok[0], 1))


def truncated_svd(m, rank=None, *, error_bound=None):
    """Best rank-R approximation ``M ~= U @ V.T`` (Eckart-Young).

    The singular values are split evenly, ``U = U_R sqrt(S_R)`` and
    ``V = V_R sqrt(S_R)``, so the two factor layers have balanced scales.

    Args:
      m: ``(S, T)`` matrix (a 1x1 conv kernel ``(1, 1, S, T)`` squeezed, or a dense layer).
      rank: number of kept singular values, ``1 <= rank <= min(S, T)`` (static).
      error_bound: alternatively, the relative Frobenius error bound in (0, 1); the
        smallest rank meeting it is used (needs a concrete ``m``, not under ``jit``).

    Returns:
      ``(U, V)`` of shapes ``(S, R)`` and ``(T, R)``.
    """
    m = as_float_array(m, "m", ndim=2)
    if (rank is None) == (error_bound is None):
        raise ValueError("pass exactly one of rank or error_bound")
    u, s, vt = _svd(m)
    if error_bound is not None:
        error_bound = check_fraction(error_bound, "error_bound")
        if not is_concrete(m):
            raise ValueError("error_bound needs a concrete m (the rank depends on data); pass rank under jit")
        rank = svd_rank_for_bound(s, error_bound)
    rank = check_positive_int(rank, "rank", upper=min(m.shape))
    return _split_singular_values(u, s, vt, rank)


_svd = jax.jit(partial(jnp.linalg.svd, full_matrices=False))


@partial(jax.jit, static_argnums=3)
def _split_singular_values(u, s, vt, rank):
    """``U_R sqrt(S_R)`` and ``V_R sqrt(S_R)``."""
    root = jnp.sqrt(s[:rank])
    return u[:, :rank] * root, vt[:rank].T * root
