"""Power-of-two normalisation of inputs of extreme magnitude.

The decompositions square their inputs (norms, Gram matrices, eq. 3 and 5). In float32
the square of an entry above 2^64 overflows and one below 2^-63 is subnormal, so a
tensor with ``max|x| = 1e22`` gave NaN and one with ``max|x| = 1e-22`` a zero model
reported as exact. Dividing by a power of two is exact, so each decomposition runs on
``x / scale`` and hands the scale back exactly: a CPD of order N multiplies each of its
N factors by ``2^m`` when ``scale = 2^(N m)``, a Tucker core takes ``scale`` whole.
"""

from __future__ import annotations

import jax.numpy as jnp

# Inside [2^-21, 2^20) for max|x| the input is used as given, so the computation is
# bit for bit the one without normalisation; there even 2^40 squared entries of the
# largest size stay below float32's overflow and the squares of entries 2^-40 times
# smaller than the largest (below float32's resolution) are still normal numbers.
_SAFE_EXPONENT = 20


def max_exponent(x, axis=None):
    """``e`` with ``max|x|`` (over ``axis``) in ``[2^(e-1), 2^e)``; 0 where it is 0."""
    return jnp.frexp(jnp.max(jnp.abs(x), axis=axis))[1]


def out_of_range(exponent):
    """Whether a :func:`max_exponent` lies outside ``[2^-21, 2^20)``, where squares may
    overflow or go subnormal."""
    return jnp.abs(exponent) > _SAFE_EXPONENT


def power_of_two_scale(x, order=1):
    """``(scale, per_factor)`` with ``scale = per_factor ** order`` a power of two.

    ``scale`` is 1 for a zero ``x`` or one with ``max|x|`` in ``[2^-21, 2^20)``;
    otherwise ``max|x| / scale`` lies within a factor ``2^(order/2 + 1)`` of 1
    (``2^(order + 1)`` at the ends of the float range, where ``scale`` is clipped).
    ``order`` is the number of factors that take the scale back (the tensor order
    for a CPD, 1 for a Tucker core).
    """
    exponent = max_exponent(x)
    # ``scale`` and ``1 / scale`` must be normal numbers (2^-126 .. 2^126 in float32):
    # XLA may divide by multiplying with the reciprocal, and flushes subnormals to zero.
    limit = -jnp.finfo(x.dtype).minexp // order
    m = jnp.clip(jnp.round(exponent / order), -limit, limit)
    m = jnp.where(out_of_range(exponent), m, 0).astype(jnp.int32)
    one = jnp.ones((), x.dtype)
    return jnp.ldexp(one, order * m), jnp.ldexp(one, m)


def rescale_cpd(factors, scale):
    """Factors of the CPD ``[[factors]] / scale`` for a power of two ``scale``, exactly.

    Column by column: with ``scale == 1`` and the largest entry of every factor's
    column in ``[2^-21, 2^20)`` the column is left as it is. Otherwise each factor's
    column is first brought to unit size (largest entry in [0.5, 1)) and the rank-1
    term's remaining power of two is shared out evenly over the factors, so a CPD
    whose factors have very different magnitudes, e.g. ``(1e20 A, 1e-10 B, 1e-10 C)``,
    squares none of them out of range.
    """
    exps = jnp.stack([max_exponent(f, axis=0) for f in factors])  # (N, R)
    order = len(factors)
    total = jnp.sum(exps, axis=0) - (jnp.frexp(scale)[1] - 1)  # frexp(2^k) = (0.5, k + 1)
    share = total // order
    extra = total - share * order  # the first ``extra`` factors take one more factor 2
    needed = (scale != 1) | jnp.any(out_of_range(exps), axis=0)
    return tuple(
        jnp.ldexp(f, jnp.where(needed, share + (n < extra) - exps[n], 0)) for n, f in enumerate(factors)
    )
