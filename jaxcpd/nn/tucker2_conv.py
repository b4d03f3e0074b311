"""Tucker-2 block: 1x1 conv S->R1, dense ``D x D`` conv R1->R2 (the core), 1x1 conv R2->T (eq. 14)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxcpd.decomp._checks import as_float_array, check_positive_int

from ._common import (
    build_with_params,
    check_bias,
    check_input,
    default_bias_init,
    default_kernel_init,
    factor_dtype,
    new_param,
    pointwise,
    promote,
)
from ._geometry import PaddingLike, as_pair, make_geometry


class Tucker2Conv(nnx.Module):
    """Conv with kernel ``G x_2 U x_3 V`` (Tucker-2 of the channel modes, eq. 14).

    The input is projected to ``R1`` channels (1x1 conv ``U``), convolved by the
    core ``G`` (a dense ``D x D`` conv ``R1 -> R2`` carrying the strides, padding and
    dilation), then mapped to ``T`` channels (1x1 conv ``V^T``).

    Args:
      in_features: input channels S.
      out_features: output channels T.
      kernel_size: ``D`` or ``(kh, kw)``.
      tucker_ranks: ``(R1, R2)``, ``R1 <= S`` and ``R2 <= T``.
      strides, padding, dilation: as in ``nnx.Conv``.
      use_bias: add a ``(T,)`` bias.
      dtype, param_dtype, precision, kernel_init, bias_init, rngs: as in ``nnx.Conv``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size,
        tucker_ranks: tuple[int, int],
        *,
        strides=1,
        padding: PaddingLike = "SAME",
        dilation=1,
        use_bias: bool = True,
        dtype=None,
        param_dtype=jnp.float32,
        precision=None,
        kernel_init=default_kernel_init,
        bias_init=default_bias_init,
        rngs: nnx.Rngs,
    ):
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        if not isinstance(tucker_ranks, tuple | list) or len(tucker_ranks) != 2:
            raise ValueError(f"tucker_ranks must be a pair (R1, R2), got {tucker_ranks!r}")
        r1 = check_positive_int(tucker_ranks[0], "tucker_ranks[0]", upper=self.in_features)
        r2 = check_positive_int(tucker_ranks[1], "tucker_ranks[1]", upper=self.out_features)
        self.tucker_ranks = (r1, r2)
        self.geometry = make_geometry(kernel_size, strides, padding, dilation)
        self.dtype = dtype
        self.precision = precision
        kh, kw = self.geometry.kernel_size
        self.in_proj = new_param(kernel_init, rngs, (self.in_features, r1), param_dtype)
        self.core = new_param(kernel_init, rngs, (kh, kw, r1, r2), param_dtype)
        self.out_proj = new_param(kernel_init, rngs, (r2, self.out_features), param_dtype)
        self.bias = new_param(bias_init, rngs, (self.out_features,), param_dtype) if use_bias else None

    @classmethod
    def from_factors(
        cls,
        core,
        U,
        V,
        *,
        kernel_size,
        strides=1,
        padding: PaddingLike = "SAME",
        dilation=1,
        bias=None,
        dtype=None,
        param_dtype=None,
        precision=None,
    ) -> Tucker2Conv:
        """Builds the block from a Tucker-2 model of a kernel tensor (``jaxcpd.tucker2``).

        Args:
          core: ``(kh*kw, R1, R2)`` core tensor G.
          U: ``(S, R1)`` input-channel factor.
          V: ``(T, R2)`` output-channel factor.
          kernel_size, strides, padding, dilation: those of the replaced conv
            (``**jaxcpd.nn.conv_config(conv)``).
          bias: optional ``(T,)`` bias.
          dtype, precision: as in the constructor.
          param_dtype: parameter dtype (default: the factors' dtype).

        Returns:
          A :class:`Tucker2Conv` whose :meth:`dense_kernel` is ``G x_2 U x_3 V`` in HWIO.
        """
        core = as_float_array(core, "core", ndim=3)
        u = as_float_array(U, "U", ndim=2)
        v = as_float_array(V, "V", ndim=2)
        kh, kw = as_pair(kernel_size, "kernel_size")
        if core.shape != (kh * kw, u.shape[1], v.shape[1]):
            raise ValueError(
                f"core must have shape (kh*kw, R1, R2) = {(kh * kw, u.shape[1], v.shape[1])} for "
                f"kernel_size {(kh, kw)}, U {u.shape} and V {v.shape}; got {core.shape}"
            )
        bias = check_bias(bias, v.shape[0])
        param_dtype = factor_dtype(param_dtype, core, u, v, bias)
        return build_with_params(
            cls,
            (u.shape[0], v.shape[0], (kh, kw), (u.shape[1], v.shape[1])),
            dict(
                strides=strides,
                padding=padding,
                dilation=dilation,
                use_bias=bias is not None,
                dtype=dtype,
                param_dtype=param_dtype,
                precision=precision,
            ),
            param_dtype,
            in_proj=u,
            core=core.reshape(kh, kw, u.shape[1], v.shape[1]),
            out_proj=v.T,
            bias=bias,
        )

    def __call__(self, x):
        """Applies the block to ``x (..., H, W, S)``; returns ``(..., H_out, W_out, T)``."""
        x = check_input(x, self.in_features, 3)
        bias = None if self.bias is None else self.bias[...]
        x, u, core, vt, bias = promote(
            self.dtype, x, self.in_proj[...], self.core[...], self.out_proj[...], bias
        )
        batch, (h, w) = x.shape[:-3], x.shape[-3:-1]
        y = pointwise(x, u, self.precision).reshape(-1, h, w, u.shape[1])
        g = self.geometry
        y = lax.conv_general_dilated(
            y,
            core,
            window_strides=g.strides,
            padding=g.pads((h, w)),
            rhs_dilation=g.dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        y = pointwise(y.reshape(*batch, *y.shape[1:]), vt, self.precision)
        return y if bias is None else y + bias

    def dense_kernel(self):
        """The equivalent dense HWIO kernel ``(kh, kw, S, T)``."""
        return jnp.einsum(
            "hwrs,ir,st->hwit",
            self.core[...],
            self.in_proj[...],
            self.out_proj[...],
            precision=lax.Precision.HIGHEST,
        )

    def num_params(self) -> int:
        """``S R1 + kh kw R1 R2 + R2 T`` (+ T for the bias)."""
        params = [self.in_proj, self.core, self.out_proj] + ([self.bias] if self.bias is not None else [])
        return sum(math.prod(p.shape) for p in params)

    def flops(self, input_hw) -> int:
        """Multiply-adds for one image: ``H W S R1 + H_out W_out (kh kw R1 R2 + R2 T)``."""
        h, w = as_pair(tuple(input_hw), "input_hw")
        ho, wo = self.geometry.output_hw((h, w))
        kh, kw = self.geometry.kernel_size
        r1, r2 = self.tucker_ranks
        return h * w * self.in_features * r1 + ho * wo * (kh * kw * r1 * r2 + r2 * self.out_features)
