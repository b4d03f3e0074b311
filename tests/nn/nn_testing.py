"""Helpers for the block tests: the dense reference conv and a relative error."""

import numpy as np
from flax import nnx
from jax import lax

# Conv options covering the cases the issue asks for: every kernel size with strides 1 and 2,
# 'SAME', 'VALID' and torchvision's explicit paddings, alternating bias and batch sizes 1 and 3.
KERNEL_SIZES = (1, 3, 5, 7)
PADDINGS = ("SAME", "VALID", ((1, 1), (1, 1)), ((3, 3), (3, 3)))
CONV_CASES = [
    (k, s, p, (n % 2 == 0), 1 + 2 * (n // 2 % 2))
    for n, (k, s, p) in enumerate((k, s, p) for k in KERNEL_SIZES for s in (1, 2) for p in PADDINGS)
]


def dense_conv(x, kernel, strides=1, padding="SAME", dilation=1, bias=None):
    """The reference: ``lax.conv_general_dilated`` with an HWIO kernel on NHWC input."""
    strides = (strides, strides) if isinstance(strides, int) else strides
    dilation = (dilation, dilation) if isinstance(dilation, int) else dilation
    y = lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")
    return y if bias is None else y + bias


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def normal(seed, shape, dtype=np.float32):
    """Standard normal test data from NumPy (cheaper than compiling ``jax.random`` for every shape)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@nnx.jit
def block_and_reference(block, x):
    """``block(x)`` and the reference conv with ``block.dense_kernel()``, in one compiled call."""
    g = block.geometry
    bias = None if block.bias is None else block.bias[...]
    return block(x), dense_conv(x, block.dense_kernel(), g.strides, g.padding, g.dilation, bias)


def make_conv(kernel, bias=None, **kwargs):
    """An ``nnx.Conv`` holding ``kernel`` (HWIO) and ``bias``, built without running an initialiser."""
    kh, kw, s, t = kernel.shape
    s *= kwargs.get("feature_group_count", 1)
    conv = nnx.eval_shape(lambda: nnx.Conv(s, t, (kh, kw), use_bias=bias is not None, precision="highest",
                                           rngs=nnx.Rngs(0), **kwargs))
    conv.kernel.set_value(kernel)
    if bias is not None:
        conv.bias.set_value(bias)
    return conv
