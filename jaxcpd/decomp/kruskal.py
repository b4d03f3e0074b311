"""Metrics and transforms of tensors in Kruskal (CP) format ``[[A, B, C]]``.

All functions take a tuple of factor matrices ``(F_1, ..., F_N)``, ``F_n`` of shape
``(I_n, R)``, and are pure, differentiable and jit/vmap compatible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import check_factors
from ._scale import max_exponent, out_of_range, rescale_cpd


def _sq_norms(factors, exps=None):
    """``(N, R)`` squared column norms of every factor, of ``f / 2^exps`` when given."""
    if exps is not None:
        factors = [jnp.ldexp(f, -e) for f, e in zip(factors, exps, strict=True)]
    return jnp.stack([jnp.sum(f * f, axis=0) for f in factors])


def _column_exponents(factors):
    """``(N, R)`` powers of two for :func:`_sq_norms`: ``|f_{n,r}|^2 = sq[n, r] * 4^exps[n, r]``.

    A column whose largest entry lies outside ``[2^-21, 2^20)`` is divided by the power
    of two that brings it near 1 before it is squared (exact), so a CPD with factors of
    very different magnitudes, e.g. ``(1e20 A, 1e-10 B, 1e-10 C)``, has finite
    intensities and sensitivity; every other column gets 0 and is squared as it is.
    """
    exps = jnp.stack([max_exponent(f, axis=0) for f in factors])
    return jnp.where(out_of_range(exps), exps, 0)


def khatri_rao(mats, *, transposed=False):
    """Column-wise Kronecker product, first matrix varying slowest: ``(prod I_n, R)``.

    With ``transposed=True`` the result is its transpose ``(R, prod I_n)``, formed in
    that layout: as the left operand of a GEMM it then needs no transposed copy
    (XLA:CPU runs ``khatri_rao(...).T @ X`` on a slower GEMM path than this).
    """
    rank = mats[0].shape[1]
    rows = 1 if transposed else 0  # the axis that runs over prod I_n
    shape = (rank, -1) if transposed else (-1, rank)
    out = mats[0].T if transposed else mats[0]
    for m in mats[1:]:
        m = m.T if transposed else m
        out = (jnp.expand_dims(out, rows + 1) * jnp.expand_dims(m, rows)).reshape(shape)
    return out


def reconstruct(factors):
    """Unchecked :func:`cp_reconstruct` for internal use on trusted factors (the layers'
    dense kernels too), its product at full float32 precision (``_precision.py``)."""
    # The Khatri-Rao product of all but the last mode is (D^2 S, R) for a conv kernel;
    # that of all but the first would be (S T, R), hundreds of MB for 512x512 kernels.
    shape = tuple(f.shape[0] for f in factors)
    return jnp.matmul(khatri_rao(factors[:-1]), factors[-1].T, precision="highest").reshape(shape)


def cp_reconstruct(factors):
    """Full tensor of a CP model, eq. 2: ``sum_r a_r o b_r o c_r``.

    Args:
      factors: tuple ``(F_1, ..., F_N)`` of ``(I_n, R)`` matrices, any order N >= 2.

    Returns:
      Array of shape ``(I_1, ..., I_N)``.
    """
    return _jit_reconstruct(check_factors(factors))


_jit_reconstruct = jax.jit(reconstruct)


def cp_intensities(factors):
    """Intensities ``||a_r o b_r o c_r||_F`` of the R rank-1 terms.

    The sum of their squares is the degeneracy measure of eq. 3.

    Args:
      factors: tuple of ``(I_n, R)`` factor matrices.

    Returns:
      ``(R,)`` array.
    """
    return _intensities(check_factors(factors))


@jax.jit
def _intensities(factors):
    exps = _column_exponents(factors)
    return jnp.ldexp(jnp.sqrt(jnp.prod(_sq_norms(factors, exps), axis=0)), jnp.sum(exps, axis=0))


def _eq5(sq, exps=None):
    """Eq. 5 from squared column norms ``sq`` (times ``4^exps`` when given)."""
    total = 0.0
    for n in range(sq.shape[0]):
        term = jnp.prod(jnp.delete(sq, n, axis=0), axis=0)
        if exps is not None:
            term = jnp.ldexp(term, 2 * jnp.sum(jnp.delete(exps, n, axis=0), axis=0))
        total = total + jnp.sum(term)
    return total


def sensitivity(factors):
    """:func:`cp_sensitivity` without its checks and without the exact rescaling of
    extreme columns, for the EPC sweeps (normalised inputs, ``_scale.py``): the
    rescaling's ``frexp``/``ldexp`` made an EPC sweep 1.2-1.45x slower at
    (9, 64, 64) R=100."""
    return _eq5(_sq_norms(factors))


def cp_sensitivity(factors):
    """Sensitivity of a CP model, Lemma 1 / eq. 5, as the paper writes it.

    For order 3 this is ``tr{(A'A)*(B'B) + (B'B)*(C'C) + (A'A)*(C'C)}``
    ``= sum_r |a_r|^2|b_r|^2 + |b_r|^2|c_r|^2 + |a_r|^2|c_r|^2``; for order N the sum
    runs over the N products that leave one factor out.

    Note: to first order in ``sigma``, the expectation in Definition 1 (eq. 4) equals
    ``sigma^2 * sum_n I_n * sum_r prod_{m != n} |f_{m,r}|^2`` (``I_n`` rows of the
    perturbed factor), not ``R sigma^2`` times eq. 5: eq. 7-9 drop the row counts.
    This function returns eq. 5, the quantity EPC minimises (eq. 10).

    Args:
      factors: tuple of ``(I_n, R)`` factor matrices.

    Returns:
      Scalar.

    References:
      Phan et al., ECCV 2020, Definition 1 and Lemma 1.
    """
    return _exact_sensitivity(check_factors(factors))


@jax.jit
def _exact_sensitivity(factors):
    exps = _column_exponents(factors)
    return _eq5(_sq_norms(factors, exps), exps)


def balance_scales(factors):
    """``(N, R)`` column scales that :func:`balance` multiplies the factors by."""
    norms = jnp.sqrt(_sq_norms(factors))
    nonzero = jnp.all(norms > 0, axis=0)
    safe = jnp.where(nonzero, norms, 1.0)
    target = jnp.exp(jnp.mean(jnp.log(safe), axis=0))
    return jnp.where(nonzero, target / safe, 0.0)


def balance(factors):
    """:func:`cp_balance` without its checks and without its exact pre-balancing of
    extreme columns (the ALS and EPC sweeps run on normalised inputs, ``_scale.py``)."""
    return tuple(f * s for f, s in zip(factors, balance_scales(factors), strict=True))


def cp_balance(factors):
    """Rescales each rank-1 term so its N vectors have equal norms.

    The tensor is unchanged (the scales multiply to one per term) and, by AM-GM,
    each term's contribution to the sensitivity (eq. 5) is minimised over such
    rescalings. Terms with a zero vector are set exactly to zero. A term whose vectors
    have entries beyond ``[2^-21, 2^20)`` is first rebalanced by powers of two (exact),
    so that its norms can be squared.

    Args:
      factors: tuple of ``(I_n, R)`` factor matrices.

    Returns:
      Tuple of rescaled factor matrices with the same shapes.
    """
    return _exact_balance(check_factors(factors))


@jax.jit
def _exact_balance(factors):
    return balance(rescale_cpd(factors, jnp.ones((), factors[0].dtype)))
