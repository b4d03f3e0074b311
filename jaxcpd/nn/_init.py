"""Kernel initialisers that share their compiled random draws across parameter shapes.

``jax.random.normal(key, shape)`` compiles one program per shape, 0.4-2.7 s each on CPU
(threefry and the inverse error function), which was most of building a model in a fresh
process. :func:`variance_scaling` draws a flat block whose size is the next power of two
(at least 1024) and slices it. With JAX's partitionable threefry (the default,
``jax_threefry_partitionable``) element ``i`` of a draw depends only on the key and
``i``, so the values are bitwise those of ``jax.nn.initializers.variance_scaling``
(``tests/nn/test_init.py``); without it they are another sample of the same law.
Kernels above 2^24 entries are drawn at their own shape: a block up to twice as large
would cost more than the compilation it saves.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

_SMALLEST_BLOCK = 1 << 10
_LARGEST_BLOCK = 1 << 24
_SAMPLERS = {
    "normal": jax.random.normal,
    "truncated_normal": partial(jax.random.truncated_normal, lower=-2.0, upper=2.0),
    "uniform": partial(jax.random.uniform, minval=-1.0),
}
# Standard deviation of a standard normal truncated to (-2, 2), as jax.nn.initializers has it.
_TRUNCATED_STD = 0.87962566103423978


def _draw(distribution, key, shape, dtype):
    """``sample(key, shape, dtype)``, as the first entries of a flat power-of-two block."""
    sample = _SAMPLERS[distribution]
    n = math.prod(shape)
    if n > _LARGEST_BLOCK:
        return sample(key, shape=shape, dtype=dtype)
    block = max(_SMALLEST_BLOCK, 1 << (n - 1).bit_length())
    return sample(key, shape=(block,), dtype=dtype)[:n].reshape(shape)


def variance_scaling(scale: float, mode: str, distribution: str):
    """``jax.nn.initializers.variance_scaling(scale, mode, distribution)`` for real kernels
    (input axis -2, output axis -1, e.g. HWIO or ``(in, out)``), drawn by :func:`_draw`."""
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
    if distribution not in _SAMPLERS:
        raise ValueError(f"distribution must be one of {tuple(_SAMPLERS)}, got {distribution!r}")

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ValueError(f"a kernel shape needs an input and an output axis, got {shape}")
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = jnp.array(scale / denominator, dtype=dtype)
        draw = _draw(distribution, key, shape, dtype)
        if distribution == "truncated_normal":
            return draw * (jnp.sqrt(variance) / jnp.array(_TRUNCATED_STD, dtype))
        if distribution == "uniform":
            return draw * jnp.sqrt(3 * variance)
        return draw * jnp.sqrt(variance)

    return init


def lecun_normal():
    """``jax.nn.initializers.lecun_normal()`` (flax's default kernel init), see :func:`variance_scaling`."""
    return variance_scaling(1.0, "fan_in", "truncated_normal")
