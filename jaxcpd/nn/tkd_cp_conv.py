"""The TKD-CPD block: Tucker-2 projections around a CP core (paper section 3, Fig. 3c)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxcpd.decomp._checks import as_float_array, check_positive_int

from ._common import (
    build_with_params,
    check_bias,
    check_cp_factors,
    default_bias_init,
    default_kernel_init,
    factor_dtype,
    new_param,
)
from ._geometry import PaddingLike
from ._separable import SeparableConv
from .depthwise import DepthwiseImpl


def merge_plan(in_features: int, out_features: int, rank: int, tucker_ranks, merge: bool | None):
    """Which adjacent 1x1 convs of a TKD-CPD block to merge.

    Section 3: when ``R < R1`` and ``R < R2`` the two 1x1 convs on each side can be
    merged into one, turning the block into a CP block. With ``merge=None`` each side
    is merged exactly when that does not increase its weights (hence its multiply-adds,
    which run at a fixed resolution): the input side when ``S R <= R1 (S + R)``, the
    output side when ``R T <= R2 (R + T)``. This includes the paper's case and also
    merges a side where ``R >= R1`` but one ``S x R`` conv is still the cheaper one.

    Args:
      in_features, out_features: ``S`` and ``T``.
      rank: CP rank ``R`` of the core.
      tucker_ranks: ``(R1, R2)``.
      merge: ``None`` (rule above), ``True`` (merge both sides) or ``False`` (keep all
        five convs).

    Returns:
      ``(merge_input_side, merge_output_side)``.
    """
    if merge is not None:
        if not isinstance(merge, bool):
            raise ValueError(f"merge must be None, True or False, got {merge!r}")
        return merge, merge
    r1, r2 = tucker_ranks
    return (in_features * rank <= r1 * (in_features + rank),
            rank * out_features <= r2 * (rank + out_features))


def _check_tucker_ranks(tucker_ranks, in_features: int, out_features: int) -> tuple[int, int]:
    if not isinstance(tucker_ranks, tuple | list) or len(tucker_ranks) != 2:
        raise ValueError(f"tucker_ranks must be a pair (R1, R2), got {tucker_ranks!r}")
    return (check_positive_int(tucker_ranks[0], "tucker_ranks[0] (R1)", upper=in_features),
            check_positive_int(tucker_ranks[1], "tucker_ranks[1] (R2)", upper=out_features))


class TKDCPConv(SeparableConv):
    """Convolution with a Tucker-2 kernel whose core is a rank-``R`` CP model.

    ``K = G x_2 U x_3 V`` with ``U (S, R1)``, ``V (T, R2)`` and core
    ``G = [[A, B, C]] (D², R1, R2)`` (eq. 14-18, section 3 "TKD-CPD Block", Fig. 3c).
    Five stages: 1x1 ``S -> R1`` (``tucker_in = U``), 1x1 ``R1 -> R`` (``in_proj = B``),
    depthwise ``D x D`` on ``R`` channels (``depthwise = A``, with the conv's strides,
    padding and dilation), 1x1 ``R -> R2`` (``out_proj = C^T``), 1x1 ``R2 -> T``
    (``tucker_out = V^T``), plus bias.

    When merging pays (see :func:`merge_plan`; always when ``R < R1`` and ``R < R2``),
    ``U B`` becomes one ``S -> R`` conv and/or ``(V C)^T`` one ``R -> T`` conv; the
    merged side's ``tucker_in``/``tucker_out`` is then ``None`` and :attr:`merged`
    says which sides were merged. Either way ``K = [[A, U B, V C]]``, so the block
    equals ``lax.conv_general_dilated`` with :meth:`dense_kernel`.

    Args:
      in_features: input channels ``S``.
      out_features: output channels ``T``.
      kernel_size: ``D`` or ``(kh, kw)``.
      rank: CP rank ``R`` of the core.
      tucker_ranks: ``(R1, R2)``, ``1 <= R1 <= S``, ``1 <= R2 <= T``.
      merge: ``None`` (automatic), ``True`` or ``False``; see :func:`merge_plan`.
      strides, padding, dilation, use_bias, depthwise_impl, dtype, param_dtype,
        precision, kernel_init, bias_init, rngs: as in :class:`jaxcpd.nn.CPConv`.

    Attributes:
      merged: ``(input_side, output_side)`` booleans.
      tucker_ranks: ``(R1, R2)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size,
        rank: int,
        tucker_ranks: tuple[int, int],
        *,
        merge: bool | None = None,
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
        s = check_positive_int(in_features, "in_features")
        t = check_positive_int(out_features, "out_features")
        r = check_positive_int(rank, "rank")
        r1, r2 = _check_tucker_ranks(tucker_ranks, s, t)
        merged_in, merged_out = merge_plan(s, t, r, (r1, r2), merge)
        super().__init__(
            s, t, kernel_size, r,
            in_proj_features=s if merged_in else r1, out_proj_features=t if merged_out else r2,
            strides=strides, padding=padding, dilation=dilation, use_bias=use_bias,
            depthwise_impl=depthwise_impl, dtype=dtype, param_dtype=param_dtype, precision=precision,
            kernel_init=kernel_init, bias_init=bias_init, rngs=rngs,
        )
        self.tucker_ranks = (r1, r2)
        self.merged = (merged_in, merged_out)
        self.tucker_in = None if merged_in else new_param(kernel_init, rngs, (s, r1), param_dtype)
        self.tucker_out = None if merged_out else new_param(kernel_init, rngs, (r2, t), param_dtype)

    def _input_maps(self) -> tuple[nnx.Param, ...]:
        maps = super()._input_maps()
        return maps if self.tucker_in is None else (self.tucker_in, *maps)

    def _output_maps(self) -> tuple[nnx.Param, ...]:
        maps = super()._output_maps()
        return maps if self.tucker_out is None else (*maps, self.tucker_out)

    @classmethod
    def from_factors(
        cls,
        U,
        V,
        cp_factors,
        *,
        kernel_size,
        strides=1,
        padding: PaddingLike = "SAME",
        dilation=1,
        bias=None,
        merge: bool | None = None,
        depthwise_impl: DepthwiseImpl = "auto",
        dtype=None,
        param_dtype=None,
        precision=None,
    ) -> TKDCPConv:
        """Builds the block from a Tucker-2 model whose core is in CP format (section 3).

        Args:
          U: ``(S, R1)`` input-channel factor of the Tucker-2 model.
          V: ``(T, R2)`` output-channel factor.
          cp_factors: ``(A, B, C)`` of the core ``G (kh*kw, R1, R2)``: ``A (kh*kw, R)``,
            ``B (R1, R)``, ``C (R2, R)``.
          kernel_size: ``D`` or ``(kh, kw)`` of the decomposed conv.
          strides, padding, dilation: those of the decomposed conv
            (``**jaxcpd.nn.conv_config(conv)`` supplies all four).
          bias: optional ``(T,)`` bias.
          merge: ``None`` (automatic), ``True`` or ``False``; see :func:`merge_plan`.
          depthwise_impl, dtype, precision: as in :class:`jaxcpd.nn.CPConv`.
          param_dtype: parameter dtype (default: the factors' dtype).

        Returns:
          A :class:`TKDCPConv` with ``dense_kernel()`` equal to ``[[A, U B, V C]]`` as HWIO.
        """
        u = as_float_array(U, "U", ndim=2)
        v = as_float_array(V, "V", ndim=2)
        (a, b, c), (kh, kw) = check_cp_factors(cp_factors, "cp_factors", kernel_size)
        if b.shape[0] != u.shape[1] or c.shape[0] != v.shape[1]:
            raise ValueError(
                f"cp_factors B {b.shape} and C {c.shape} must have R1={u.shape[1]} and R2={v.shape[1]} "
                f"rows to match U {u.shape} and V {v.shape}"
            )
        bias = check_bias(bias, v.shape[0])
        param_dtype = factor_dtype(param_dtype, u, v, a, b, c, bias)
        s, t, r1, r2 = u.shape[0], v.shape[0], u.shape[1], v.shape[1]
        merged_in, merged_out = merge_plan(s, t, a.shape[1], (r1, r2), merge)
        return build_with_params(
            cls, (s, t, (kh, kw), a.shape[1], (r1, r2)),
            dict(merge=merge, strides=strides, padding=padding, dilation=dilation, use_bias=bias is not None,
                 depthwise_impl=depthwise_impl, dtype=dtype, param_dtype=param_dtype, precision=precision),
            param_dtype,
            tucker_in=None if merged_in else u,
            in_proj=jnp.matmul(u, b, precision="highest") if merged_in else b,
            depthwise=a.reshape(kh, kw, 1, -1),
            out_proj=jnp.matmul(v, c, precision="highest").T if merged_out else c.T,
            tucker_out=None if merged_out else v.T,
            bias=bias,
        )
