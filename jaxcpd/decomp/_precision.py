"""Full float32 matrix products for the decomposition programs.

JAX lets accelerators compute float32 matrix products with fewer mantissa bits by
default (TensorFloat-32 on NVIDIA GPUs since Ampere, bfloat16 passes on TPU): about
1e-3 relative error per product. A CPD fitted to 1e-5, the error bound that EPC
preserves, and the Gram matrices whose Cholesky factors the sweeps solve with all
need the full 24 bits, so every decomposition program traces its products at
``Precision.HIGHEST``, whatever ``jax_default_matmul_precision`` says. XLA:CPU
always computes float32 products in full, so this changes nothing on CPU.
"""

from __future__ import annotations

import functools

import jax


def float32_matmuls(fn):
    """``fn`` with every matrix product it traces at full float32 precision."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped
