"""SVD blocks: a 1x1 conv or a dense layer as two rank-R factors (paper section 3, Fig. 3b).

A weight ``W (S, T) ~= U V^T`` with ``U (S, R)``, ``V (T, R)`` (truncated SVD) becomes
two layers ``S -> R -> T``. The paper uses it for 1x1 convolutions, without
sensitivity correction ("SVD Block"); it keeps fully-connected layers intact, and
:class:`SVDDense` offers the same factorisation for them as an option.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxcpd.decomp._checks import as_float_array, check_positive_int

from ._common import (
    build_with_params,
    check_bias,
    check_input,
    default_bias_init,
    default_kernel_init,
    factor_dtype,
    new_param,
    pad_spatial,
    pointwise,
    promote,
)
from ._geometry import PaddingLike, make_geometry


def _check_svd_factors(U, V):
    u = as_float_array(U, "U", ndim=2)
    v = as_float_array(V, "V", ndim=2)
    if u.shape[1] != v.shape[1]:
        raise ValueError(f"U (S, R) and V (T, R) must have the same rank R, got U {u.shape} and V {v.shape}")
    return u, v


class _LowRankProjection(nnx.Module):
    """Holds ``in_proj = U (S, R)``, ``out_proj = V^T (R, T)`` and a bias; applies ``x U V^T + b``."""

    def __init__(self, in_features, out_features, rank, *, use_bias, dtype, param_dtype, precision,
                 kernel_init, bias_init, rngs):
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.rank = check_positive_int(rank, "rank", upper=min(self.in_features, self.out_features))
        self.dtype = dtype
        self.precision = precision
        self.in_proj = new_param(kernel_init, rngs, (self.in_features, self.rank), param_dtype)
        self.out_proj = new_param(kernel_init, rngs, (self.rank, self.out_features), param_dtype)
        self.bias = new_param(bias_init, rngs, (self.out_features,), param_dtype) if use_bias else None

    def _project(self, x):
        bias = None if self.bias is None else self.bias[...]
        x, u, vt, bias = promote(self.dtype, x, self.in_proj[...], self.out_proj[...], bias)
        x = pointwise(pointwise(x, u, self.precision), vt, self.precision)
        return x if bias is None else x + bias

    def factors(self):
        """The factors ``(U (S, R), V (T, R))`` with weight ``U V^T``."""
        return self.in_proj[...], self.out_proj[...].T

    def _weight(self):
        return jnp.matmul(self.in_proj[...], self.out_proj[...], precision="highest")

    def num_params(self) -> int:
        """Number of parameters: ``R (S + T)``, plus ``T`` with bias."""
        bias = 0 if self.bias is None else self.out_features
        return self.rank * (self.in_features + self.out_features) + bias


class SVDDense(_LowRankProjection):
    """Dense layer with a rank-``R`` weight ``W = U V^T``: ``y = (x U) V^T + b``.

    Drop-in for ``nnx.Linear(S, T)`` (whose ``kernel`` is ``W (S, T)``).

    Args:
      in_features: ``S``.
      out_features: ``T``.
      rank: ``R``, ``1 <= R <= min(S, T)``.
      use_bias: whether to add a bias of length ``T``.
      dtype: computation dtype (default: promoted from input and parameters).
      param_dtype: parameter dtype.
      precision: matmul precision.
      kernel_init: initializer for both factors (each with its own fan-in).
      bias_init: bias initializer.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, precision=None, kernel_init=default_kernel_init,
                 bias_init=default_bias_init, rngs: nnx.Rngs):
        super().__init__(in_features, out_features, rank, use_bias=use_bias, dtype=dtype,
                         param_dtype=param_dtype, precision=precision, kernel_init=kernel_init,
                         bias_init=bias_init, rngs=rngs)

    def __call__(self, x):
        """Applies the layer to ``x (..., S)``; returns ``(..., T)``."""
        return self._project(check_input(x, self.in_features, 1))

    def dense_kernel(self):
        """The equivalent ``nnx.Linear`` kernel ``U V^T (S, T)``."""
        return self._weight()

    def flops(self) -> int:
        """Multiply-adds per input row: ``R (S + T)`` (``nnx.Linear``: ``S T``); bias not counted."""
        return self.rank * (self.in_features + self.out_features)

    @classmethod
    def from_factors(cls, U, V, *, bias=None, dtype=None, param_dtype=None, precision=None) -> SVDDense:
        """Builds the layer from a factorisation ``W ~= U V^T`` of an ``nnx.Linear`` kernel.

        Args:
          U: ``(S, R)``, e.g. left singular vectors times singular values.
          V: ``(T, R)``.
          bias: optional ``(T,)`` bias.
          dtype, precision: as in the constructor.
          param_dtype: parameter dtype (default: the factors' dtype).

        Returns:
          An :class:`SVDDense` with ``dense_kernel() == U @ V.T``.
        """
        u, v = _check_svd_factors(U, V)
        bias = check_bias(bias, v.shape[0])
        param_dtype = factor_dtype(param_dtype, u, v, bias)
        return build_with_params(
            cls, (u.shape[0], v.shape[0], u.shape[1]),
            dict(use_bias=bias is not None, dtype=dtype, param_dtype=param_dtype, precision=precision),
            param_dtype, in_proj=u, out_proj=v.T, bias=bias,
        )


class SVDConv(_LowRankProjection):
    """A 1x1 convolution with a rank-``R`` weight: 1x1 conv ``S -> R``, 1x1 conv ``R -> T``.

    Paper section 3, "SVD Block", Fig. 3b. The strides and padding of the replaced 1x1
    conv (e.g. a ResNet downsample shortcut, stride 2) are applied to the input first,
    so both matmuls run at the output resolution.

    Args:
      in_features: ``S``.
      out_features: ``T``.
      rank: ``R``, ``1 <= R <= min(S, T)``.
      kernel_size: must be 1 (accepted so that ``**jaxcpd.nn.conv_config(conv)`` can be passed).
      strides: int or pair.
      padding: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, int, pair, or ``((lo, hi), (lo, hi))``.
      dilation: accepted for the same reason; it has no effect on a 1x1 kernel.
      use_bias, dtype, param_dtype, precision, kernel_init, bias_init, rngs: as in :class:`SVDDense`.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, kernel_size=1, strides=1,
                 padding: PaddingLike = "SAME", dilation=1, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, precision=None, kernel_init=default_kernel_init,
                 bias_init=default_bias_init, rngs: nnx.Rngs):
        geometry = make_geometry(kernel_size, strides, padding, dilation)
        if geometry.kernel_size != (1, 1):
            raise ValueError(f"SVDConv replaces 1x1 convs: kernel_size must be 1, got {geometry.kernel_size}")
        super().__init__(in_features, out_features, rank, use_bias=use_bias, dtype=dtype,
                         param_dtype=param_dtype, precision=precision, kernel_init=kernel_init,
                         bias_init=bias_init, rngs=rngs)
        self.geometry = geometry._replace(dilation=(1, 1))

    def __call__(self, x):
        """Applies the block to ``x (..., H, W, S)``; returns ``(..., H_out, W_out, T)``."""
        x = check_input(x, self.in_features, 3)
        hw = x.shape[-3:-1]
        (ho, wo), pads, (sh, sw) = self.geometry.output_hw(hw), self.geometry.pads(hw), self.geometry.strides
        x = pad_spatial(x, pads)[..., : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, :]
        return self._project(x)

    def dense_kernel(self):
        """The equivalent HWIO kernel ``(1, 1, S, T)``."""
        return self._weight()[None, None]

    def flops(self, input_hw) -> int:
        """Multiply-adds for one ``(H, W, S)`` image: ``H_out W_out R (S + T)``; bias not counted."""
        ho, wo = self.geometry.output_hw(input_hw)
        return ho * wo * self.rank * (self.in_features + self.out_features)

    @classmethod
    def from_factors(cls, U, V, *, kernel_size=1, strides=1, padding: PaddingLike = "SAME", dilation=1,
                     bias=None, dtype=None, param_dtype=None, precision=None) -> SVDConv:
        """Builds the block from a factorisation ``W ~= U V^T`` of a 1x1 conv kernel ``W = kernel[0, 0]``.

        Args:
          U: ``(S, R)``.
          V: ``(T, R)``.
          kernel_size, strides, padding, dilation: those of the replaced conv
            (``**jaxcpd.nn.conv_config(conv)``); ``kernel_size`` must be 1.
          bias: optional ``(T,)`` bias.
          dtype, precision: as in the constructor.
          param_dtype: parameter dtype (default: the factors' dtype).

        Returns:
          An :class:`SVDConv` with ``dense_kernel()[0, 0] == U @ V.T``.
        """
        u, v = _check_svd_factors(U, V)
        bias = check_bias(bias, v.shape[0])
        param_dtype = factor_dtype(param_dtype, u, v, bias)
        return build_with_params(
            cls, (u.shape[0], v.shape[0], u.shape[1]),
            dict(kernel_size=kernel_size, strides=strides, padding=padding, dilation=dilation,
                 use_bias=bias is not None, dtype=dtype, param_dtype=param_dtype, precision=precision),
            param_dtype, in_proj=u, out_proj=v.T, bias=bias,
        )
