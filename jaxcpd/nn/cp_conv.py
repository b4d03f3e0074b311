"""The CPD block: a conv whose kernel is a rank-R CP model (paper section 3, Fig. 3a)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ._common import (
    build_with_params,
    check_bias,
    check_cp_factors,
    default_bias_init,
    default_kernel_init,
    factor_dtype,
)
from ._geometry import PaddingLike
from ._separable import SeparableConv
from .depthwise import DepthwiseImpl


class CPConv(SeparableConv):
    """Convolution with kernel tensor ``K = [[A, B, C]]`` of CP rank ``R``.

    Three stages (paper section 3, "CPD Block", Fig. 3a):

    1. 1x1 conv ``S -> R`` with weight ``B`` (``in_proj``, shape ``(S, R)``);
    2. depthwise ``D x D`` conv on ``R`` channels with ``A`` (``depthwise``, shape
       ``(kh, kw, 1, R)``), carrying the strides, padding and dilation of the conv;
    3. 1x1 conv ``R -> T`` with ``C^T`` (``out_proj``, shape ``(R, T)``), plus bias.

    Since ``K[p, s, t] = sum_r A[p, r] B[s, r] C[t, r]`` (eq. 2, ``p = h*kw + w``), the
    block equals ``lax.conv_general_dilated`` with :meth:`dense_kernel`. It holds
    ``R (D² + S + T)`` weights instead of ``D² S T`` (section 1.1).

    Fresh parameters use ``kernel_init`` on every factor with its own fan-in (the
    default LeCun normal gives the equivalent kernel the variance ``1/(D² S)`` of a
    LeCun-initialised dense conv).

    Args:
      in_features: input channels ``S``.
      out_features: output channels ``T``.
      kernel_size: ``D`` or ``(kh, kw)``.
      rank: CP rank ``R`` (any positive int, may exceed ``S`` and ``T``).
      strides: int or pair.
      padding: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, int, pair, or ``((lo, hi), (lo, hi))``.
      dilation: kernel dilation, int or pair.
      use_bias: whether to add a bias of length ``T``.
      depthwise_impl: ``'auto'``, ``'shift'`` or ``'xla'``; see :func:`jaxcpd.nn.depthwise_conv`.
      dtype: computation dtype (default: promoted from input and parameters).
      param_dtype: parameter dtype.
      precision: matmul/conv precision.
      kernel_init: initializer applied to each factor.
      bias_init: bias initializer.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size,
        rank: int,
        *,
        strides=1,
        padding: PaddingLike = "SAME",
        dilation=1,
        use_bias: bool = True,
        depthwise_impl: DepthwiseImpl = "auto",
        dtype=None,
        param_dtype=jnp.float32,
        precision=None,
        kernel_init=default_kernel_init,
        bias_init=default_bias_init,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_features, out_features, kernel_size, rank,
            in_proj_features=in_features, out_proj_features=out_features,
            strides=strides, padding=padding, dilation=dilation, use_bias=use_bias,
            depthwise_impl=depthwise_impl, dtype=dtype, param_dtype=param_dtype, precision=precision,
            kernel_init=kernel_init, bias_init=bias_init, rngs=rngs,
        )

    @classmethod
    def from_factors(
        cls,
        factors,
        *,
        kernel_size,
        strides=1,
        padding: PaddingLike = "SAME",
        dilation=1,
        bias=None,
        depthwise_impl: DepthwiseImpl = "auto",
        dtype=None,
        param_dtype=None,
        precision=None,
    ) -> CPConv:
        """Builds the block from CP factors of a kernel tensor (section 3, step 3).

        Args:
          factors: ``(A, B, C)`` with ``A (kh*kw, R)``, ``B (S, R)``, ``C (T, R)``, e.g.
            ``cp_als(kernel_to_tensor(kernel), R).factors``.
          kernel_size: ``D`` or ``(kh, kw)`` of the decomposed conv.
          strides, padding, dilation: those of the decomposed conv
            (``**jaxcpd.nn.conv_config(conv)`` supplies all four).
          bias: optional ``(T,)`` bias of the decomposed conv.
          depthwise_impl, dtype, precision: as in the constructor.
          param_dtype: parameter dtype (default: the factors' dtype).

        Returns:
          A :class:`CPConv` whose :meth:`dense_kernel` is ``tensor_to_kernel(cp_reconstruct(factors))``.
        """
        (a, b, c), (kh, kw) = check_cp_factors(factors, "factors", kernel_size)
        bias = check_bias(bias, c.shape[0])
        param_dtype = factor_dtype(param_dtype, a, b, c, bias)
        return build_with_params(
            cls, (b.shape[0], c.shape[0], (kh, kw), a.shape[1]),
            dict(strides=strides, padding=padding, dilation=dilation, use_bias=bias is not None,
                 depthwise_impl=depthwise_impl, dtype=dtype, param_dtype=param_dtype, precision=precision),
            param_dtype, in_proj=b, depthwise=a.reshape(kh, kw, 1, -1), out_proj=c.T, bias=bias,
        )
