"""Spatial options of a 2-D convolution: kernel size, strides, padding, dilation.

Every block keeps one :class:`ConvGeometry` and hands it to its spatial stage (the
depthwise conv of a CP/TKD-CPD block, the subsampling of an SVD block). Padding
follows Flax's rules: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, an int ``p``
(``((p, p), (p, p))``), a pair ``(ph, pw)`` or explicit ``((lo, hi), (lo, hi))``
pairs as torchvision ports use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from flax import nnx
from jax import lax

from jaxcpd.decomp._checks import check_positive_int

Pads = tuple[tuple[int, int], tuple[int, int]]
PaddingLike = str | int | Sequence[int | tuple[int, int]]

_PADDING_MODES = ("SAME", "SAME_LOWER", "VALID")


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def as_pair(value, name: str) -> tuple[int, int]:
    """Returns ``value`` (an int or a pair of ints, all >= 1) as a pair."""
    if _is_int(value):
        value = check_positive_int(value, name)
        return value, value
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return check_positive_int(value[0], f"{name}[0]"), check_positive_int(value[1], f"{name}[1]")


def _non_negative(value, name: str) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def canonical_padding(padding: PaddingLike) -> str | Pads:
    """Normalises ``padding`` to a mode string or to explicit ``((lo, hi), (lo, hi))``.

    Args:
      padding: a mode (``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, any case), an int,
        a pair of ints (per spatial axis) or a pair of ``(lo, hi)`` pairs.

    Returns:
      The upper-case mode string, or a tuple of two ``(lo, hi)`` tuples of ints.
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in _PADDING_MODES:
            raise ValueError(f"padding must be one of {_PADDING_MODES} or explicit pairs, got {padding!r}")
        return mode
    if _is_int(padding):
        p = _non_negative(padding, "padding")
        return (p, p), (p, p)
    if not isinstance(padding, Sequence) or len(padding) != 2:
        raise ValueError(f"padding must have one entry per spatial axis (2), got {padding!r}")
    pads = []
    for axis, entry in enumerate(padding):
        if _is_int(entry):
            p = _non_negative(entry, f"padding[{axis}]")
            pads.append((p, p))
        elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
            pads.append(tuple(_non_negative(e, f"padding[{axis}]") for e in entry))
        else:
            raise ValueError(f"padding[{axis}] must be an int or a (lo, hi) pair, got {entry!r}")
    return tuple(pads)


class ConvGeometry(NamedTuple):
    """Kernel size, strides, padding and dilation of a 2-D convolution.

    Build it with :func:`make_geometry`, which validates and normalises the values.
    """

    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str | Pads
    dilation: tuple[int, int]

    def dilated_kernel(self) -> tuple[int, int]:
        """Spatial extent ``(k - 1) * d + 1`` of the dilated kernel."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True))

    def pads(self, input_hw) -> Pads:
        """Explicit ``((lo, hi), (lo, hi))`` padding for an input of size ``input_hw``."""
        if isinstance(self.padding, str):
            pads = lax.padtype_to_pads(tuple(input_hw), self.dilated_kernel(), self.strides, self.padding)
            return tuple((int(lo), int(hi)) for lo, hi in pads)
        return self.padding

    def output_hw(self, input_hw) -> tuple[int, int]:
        """Spatial output size, as ``lax.conv_general_dilated`` computes it.

        Raises:
          ValueError: if the (padded) input is smaller than the dilated kernel.
        """
        input_hw = as_pair(tuple(input_hw), "input_hw")
        out = []
        for n, (lo, hi), k, s in zip(input_hw, self.pads(input_hw), self.dilated_kernel(), self.strides,
                                     strict=True):
            if n + lo + hi < k:
                raise ValueError(
                    f"input of spatial size {input_hw} with padding {self.padding} is smaller than the "
                    f"dilated kernel {self.dilated_kernel()}"
                )
            out.append((n + lo + hi - k) // s + 1)
        return tuple(out)


def make_geometry(kernel_size, strides=1, padding: PaddingLike = "SAME", dilation=1) -> ConvGeometry:
    """Validates conv options and returns them as a :class:`ConvGeometry`.

    Args:
      kernel_size: ``D`` or ``(kh, kw)``.
      strides: int or pair, >= 1.
      padding: see :func:`canonical_padding`.
      dilation: kernel dilation, int or pair, >= 1.

    Returns:
      The normalised geometry.
    """
    return ConvGeometry(
        kernel_size=as_pair(kernel_size, "kernel_size"),
        strides=as_pair(strides, "strides"),
        padding=canonical_padding(padding),
        dilation=as_pair(dilation, "dilation"),
    )


def conv_config(conv: nnx.Conv) -> dict:
    """Spatial options of an ``nnx.Conv``, ready to pass to a block's ``from_factors``.

    ``CPConv.from_factors(factors, **conv_config(conv), bias=...)`` builds a block that
    applies the same strides, padding and dilation as ``conv``.

    Args:
      conv: a 2-D ``flax.nnx.Conv``.

    Returns:
      ``dict(kernel_size=(kh, kw), strides=(sh, sw), padding=..., dilation=(dh, dw))``.

    Raises:
      ValueError: for convolutions a low-rank block cannot represent: grouped
        (``feature_group_count != 1``), input-dilated (transposed), masked, not 2-D,
        or with circular/reflect/causal padding.
    """
    if not isinstance(conv, nnx.Conv):
        raise ValueError(f"conv must be a flax.nnx.Conv, got {type(conv).__name__}")
    kernel_size = tuple(conv.kernel_size)
    if len(kernel_size) != 2:
        raise ValueError(f"conv must be 2-D, got kernel_size {kernel_size}")
    if conv.feature_group_count != 1:
        raise ValueError(
            f"conv.feature_group_count must be 1, got {conv.feature_group_count} "
            f"(grouped conv {conv.in_features}->{conv.out_features}); grouped convs cannot be decomposed"
        )
    if as_pair(conv.input_dilation or 1, "conv.input_dilation") != (1, 1):
        raise ValueError(f"conv.input_dilation must be 1, got {conv.input_dilation}")
    if conv.mask is not None:
        raise ValueError(f"conv must not be masked, got a mask of shape {conv.mask.shape}")
    geometry = make_geometry(kernel_size, conv.strides or 1, conv.padding, conv.kernel_dilation or 1)
    return geometry._asdict()
