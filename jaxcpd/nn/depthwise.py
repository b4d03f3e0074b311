"""Depthwise 2-D convolution, the spatial stage of the CP and TKD-CPD blocks.

The CP block (paper section 3, Fig. 3a) performs all its spatial filtering in one
depthwise ``D x D`` convolution over ``R`` channels. XLA lowers that to a grouped
convolution (``feature_group_count=R``), which on CPU runs at about 0.5 GFLOP/s,
some 50x slower than writing it as ``D*D`` shifted multiply-adds (DESIGN.md,
performance notes); on GPU/TPU the grouped convolution is the fast one. This module
provides both and picks one by backend.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from ._common import pad_spatial
from ._geometry import PaddingLike, make_geometry

DepthwiseImpl = Literal["auto", "shift", "xla"]
_IMPLS = ("auto", "shift", "xla")


def check_depthwise_impl(impl: str) -> str:
    """Validates a ``depthwise_impl`` option (``'auto'``, ``'shift'`` or ``'xla'``)."""
    if impl not in _IMPLS:
        raise ValueError(f"depthwise_impl must be one of {_IMPLS}, got {impl!r}")
    return impl


def resolve_depthwise_impl(impl: str = "auto") -> str:
    """The implementation ``impl`` stands for on the current default backend.

    Args:
      impl: ``'shift'``, ``'xla'``, or ``'auto'``: ``'shift'`` when
        ``jax.default_backend() == 'cpu'``, else ``'xla'``.

    Returns:
      ``'shift'`` or ``'xla'``.
    """
    if check_depthwise_impl(impl) == "auto":
        return "shift" if jax.default_backend() == "cpu" else "xla"
    return impl


@partial(jax.jit, static_argnames=("geometry", "pads", "out_hw"))
def _shifted_multiply_add(x, kernel, geometry, pads, out_hw):
    """Sum over the ``kh*kw`` taps of a strided slice of the padded input times one kernel row.

    Jitted so that eager calls run as one fused XLA computation (inside an outer ``jit``
    it is inlined).
    """
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel_size, geometry.strides, geometry.dilation
    n, _, _, c = x.shape
    ho, wo = out_hw
    x = pad_spatial(x, pads)
    out = None
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c)
            term = lax.slice(x, start, limit, (1, sh, sw, 1)) * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


def depthwise_conv(
    x,
    kernel,
    *,
    strides=1,
    padding: PaddingLike = "SAME",
    dilation=1,
    impl: DepthwiseImpl = "auto",
    precision=None,
):
    """Depthwise 2-D convolution (cross-correlation, like ``lax.conv_general_dilated``).

    ``out[..., y, x, c] = sum_{i,j} xpad[..., y*sh + i*dh, x*sw + j*dw, c] * kernel[i, j, 0, c]``,
    i.e. ``lax.conv_general_dilated(..., feature_group_count=C)`` with an HWIO kernel.

    Args:
      x: input ``(..., H, W, C)``; leading dimensions are batch dimensions (none is fine).
      kernel: ``(kh, kw, 1, C)``, the layout of ``nnx.Conv(C, C, ..., feature_group_count=C).kernel``.
      strides: int or pair.
      padding: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, int, pair, or ``((lo, hi), (lo, hi))``.
      dilation: kernel dilation, int or pair.
      impl: ``'shift'`` (``kh*kw`` strided slices times a per-channel weight, summed;
        fused by XLA into one pass, the fast choice on CPU), ``'xla'`` (grouped
        ``lax.conv_general_dilated``, the fast choice on GPU/TPU) or ``'auto'``
        (by ``jax.default_backend()``). Both are differentiable with exact gradients.
      precision: passed to ``lax.conv_general_dilated`` (``'xla'`` only; ``'shift'`` does
        only elementwise arithmetic).

    Returns:
      ``(..., H_out, W_out, C)`` in the promoted dtype of ``x`` and ``kernel``.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if x.ndim < 3:
        raise ValueError(f"x must have shape (..., H, W, C), got {x.shape}")
    channels = x.shape[-1]
    if kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != channels:
        raise ValueError(f"kernel must have shape (kh, kw, 1, {channels}) for x of shape {x.shape}, "
                         f"got {kernel.shape}")
    geometry = make_geometry(kernel.shape[:2], strides, padding, dilation)
    impl = resolve_depthwise_impl(impl)
    batch_shape, (h, w) = x.shape[:-3], x.shape[-3:-1]
    out_hw = geometry.output_hw((h, w))
    pads = geometry.pads((h, w))
    dtype = jnp.result_type(x, kernel)
    x4 = x.reshape((-1, h, w, channels)).astype(dtype)
    kernel = kernel.astype(dtype)
    if impl == "shift":
        out = _shifted_multiply_add(x4, kernel, geometry, pads, out_hw)
    else:
        out = lax.conv_general_dilated(
            x4, kernel, geometry.strides, pads, rhs_dilation=geometry.dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels, precision=precision,
        )
    return out.reshape(batch_shape + out.shape[1:])
