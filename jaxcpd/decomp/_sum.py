"""Sums written so that XLA:CPU runs and compiles them fast: over a leading (non-minor)
axis (``pairwise_sum``) and over all entries of a matrix (``inner``, ``sq_norm``, ``norm``)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def pairwise_sum(x, axis):
    """Sum of ``x`` over ``axis`` by repeated halving (pairwise summation).

    Equal to ``jnp.sum(x, axis)`` up to rounding (pairwise summation, error
    ``O(log n)`` ulps). XLA:CPU fuses the halvings, and any elementwise producer of
    ``x``, into one loop over the data; its own reduction over a non-minor axis ran
    4-15x slower on the ALS contractions (measured with jax 0.10.2: a (9, 512, 500)
    tensor summed over axis 0 took 4.5 ms, this 0.29 ms).
    """
    axis = axis % x.ndim
    while x.shape[axis] > 1:
        n = x.shape[axis]
        half = n // 2
        head = lax.slice_in_dim(x, 0, half, axis=axis) + lax.slice_in_dim(x, half, 2 * half, axis=axis)
        x = jnp.concatenate([head, lax.slice_in_dim(x, 2 * half, n, axis=axis)], axis) if n % 2 else head
    return jnp.squeeze(x, axis)


def inner(a, b):
    """``sum(a * b)`` over all entries (a scalar), reduced as one flat vector.

    ``jnp.sum(a * b)`` of a matrix is a 2-D reduction, which XLA:CPU's elemental
    emitters (the decomposition programs' compiler option, ``_program.py``) compile
    into a fully unrolled loop over a 2-D window when the shape tiles it exactly: with
    jax 0.10.2, five such sums of a (32, 64) matrix took 5.5-6.9 s to compile (a 32 x 32
    window each), of a (16, 64) one 1.0 s, and the EPC program of a (9, 32, 32) tensor
    at R = 64 22.9 s instead of 3 s. Reduced as a flat vector (a window of 32), the five
    compile in 0.12-0.19 s. The barrier keeps XLA from folding the flattening back into
    a 2-D reduction, which it did to a flattened vector dot in the ALS program; it
    materialises ``a * b``, which costs less than the reduction it feeds (a (512, 500)
    product: 0.45 ms for five, against 0.82 ms as 2-D sums). Rounding differs from
    ``jnp.sum`` only in the order of the additions.
    """
    return jnp.sum(lax.optimization_barrier(jnp.ravel(a * b)))


def sq_norm(a):
    """``sum(a * a)``: the squared Frobenius norm, reduced as :func:`inner`."""
    return inner(a, a)


def norm(a):
    """The Frobenius norm, reduced as :func:`inner`."""
    return jnp.sqrt(inner(a, a))
