"""Flax NNX blocks for low-rank convolutions (paper section 3, Fig. 3), and FLOP/parameter counts.

- :class:`CPConv`: 1x1 conv, depthwise ``D x D`` conv, 1x1 conv (CPD block).
- :class:`TKDCPConv`: Tucker-2 1x1 convs around a CP core (TKD-CPD block).
- :class:`Tucker2Conv`: 1x1 conv, dense ``D x D`` core conv, 1x1 conv (Tucker-2 block).
- :class:`SVDConv` / :class:`SVDDense`: two rank-``R`` factors of a 1x1 conv / dense layer.
- :func:`depthwise_conv`: depthwise conv, shifted multiply-adds on CPU, grouped conv elsewhere.
- :func:`count_flops` / :func:`count_params`: multiply-adds and parameters of whole models.
- :func:`conv_config`: strides/padding/dilation of an ``nnx.Conv`` for ``from_factors``.
"""

from ._geometry import ConvGeometry, conv_config
from .counting import count_flops, count_params, layer_flops
from .cp_conv import CPConv
from .depthwise import depthwise_conv, resolve_depthwise_impl
from .svd import SVDConv, SVDDense
from .tkd_cp_conv import TKDCPConv, merge_plan
from .tucker2_conv import Tucker2Conv

__all__ = [
    "CPConv",
    "ConvGeometry",
    "SVDConv",
    "SVDDense",
    "TKDCPConv",
    "Tucker2Conv",
    "conv_config",
    "count_flops",
    "count_params",
    "depthwise_conv",
    "layer_flops",
    "merge_plan",
    "resolve_depthwise_impl",
]
