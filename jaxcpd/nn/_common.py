"""Pieces shared by the factorised blocks: parameter creation, dtype promotion, 1x1 convs."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxcpd.decomp._checks import as_float_array, check_factors

from ._geometry import as_pair
from ._init import lecun_normal

default_kernel_init = lecun_normal()
default_bias_init = nnx.initializers.zeros_init()


def new_param(init, rngs: nnx.Rngs, shape, dtype) -> nnx.Param:
    """An ``nnx.Param`` holding ``init(key, shape, dtype)``."""
    return nnx.Param(init(rngs.params(), shape, dtype))


def build_with_params(cls, args, kwargs, dtype, **values):
    """``cls(*args, **kwargs)`` with its parameters set to ``values`` (cast to ``dtype``).

    The module is first built abstractly (``nnx.eval_shape``, no initialiser runs), then
    every parameter is assigned; ``values`` must name all of them (``None`` entries are
    skipped and must correspond to absent parameters).
    """
    module = nnx.eval_shape(lambda: cls(*args, **kwargs, rngs=nnx.Rngs(0)))
    for name, value in values.items():
        if value is not None:
            getattr(module, name).set_value(jnp.asarray(value, dtype))
    return module


def factor_dtype(param_dtype, *arrays):
    """``param_dtype`` if given, else the promoted floating dtype of the arrays."""
    if param_dtype is not None:
        return param_dtype
    return jnp.result_type(*(a for a in arrays if a is not None))


def check_bias(bias, out_features: int):
    """Validates an optional bias vector of length ``out_features``."""
    if bias is None:
        return None
    bias = as_float_array(bias, "bias", ndim=1)
    if bias.shape[0] != out_features:
        raise ValueError(f"bias must have shape ({out_features},), got {bias.shape}")
    return bias


def check_cp_factors(factors, name: str, kernel_size):
    """Validates CP factors ``(A (kh*kw, R), B (I, R), C (J, R))`` of a ``kernel_size`` kernel.

    Returns:
      ``((A, B, C), (kh, kw))`` with the factors as floating JAX arrays.
    """
    if not isinstance(factors, tuple | list) or len(factors) != 3:
        count = len(factors) if isinstance(factors, tuple | list) else type(factors).__name__
        raise ValueError(f"{name} must be a tuple (A, B, C) of 3 matrices, got {count}")
    a, b, c = check_factors(factors, name)
    kh, kw = as_pair(kernel_size, "kernel_size")
    if a.shape[0] != kh * kw:
        raise ValueError(f"{name}[0] (A) has {a.shape[0]} rows, kernel_size {(kh, kw)} needs {kh * kw}")
    return (a, b, c), (kh, kw)


def check_input(x, in_features: int, min_ndim: int):
    """Checks that ``x`` has at least ``min_ndim`` dims and ``in_features`` channels last."""
    x = jnp.asarray(x)
    if x.ndim < min_ndim or x.shape[-1] != in_features:
        layout = "(..., H, W, C)" if min_ndim == 3 else "(..., C)"
        raise ValueError(f"x must have shape {layout} with C={in_features}, got {x.shape}")
    return x


def promote(dtype, *arrays):
    """Casts arrays (``None`` passes through) to ``dtype``, or to their promoted dtype if ``None``."""
    if dtype is None:
        dtype = jnp.result_type(*(a for a in arrays if a is not None))
    return [None if a is None else jnp.asarray(a, dtype) for a in arrays]


def pad_spatial(x, pads):
    """Zero-pads the ``H, W`` axes of ``x (..., H, W, C)`` by ``((lo, hi), (lo, hi))``; no-op for zeros."""
    if not any(p for pair in pads for p in pair):
        return x
    config = ((0, 0, 0),) * (x.ndim - 3) + ((*pads[0], 0), (*pads[1], 0), (0, 0, 0))
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def pointwise(x, w, precision=None):
    """1x1 convolution over the last axis: ``x (..., S) @ w (S, T)``."""
    return jnp.matmul(x, w, precision=precision)


def chain(mats, precision=None):
    """Product ``M_1 @ M_2 @ ...`` of a non-empty sequence of matrices."""
    out = mats[0]
    for m in mats[1:]:
        out = jnp.matmul(out, m, precision=precision)
    return out
