"""Common base of the CP and TKD-CPD blocks: 1x1 convs, one depthwise conv, 1x1 convs.

Both blocks compute ``y = P_out(depthwise_A(P_in(x))) + bias`` where ``P_in`` is a chain of
1x1 convs from ``S`` to ``R`` channels, run at the input resolution, ``depthwise_A`` is
the ``D x D`` depthwise conv that carries the strides, padding and dilation of the
replaced conv, and ``P_out`` is a chain of 1x1 convs from ``R`` to ``T`` channels at
the output resolution (paper section 3, Fig. 3a and 3c). Only the 1x1 chains differ.

On CPU a large batch is run in chunks (``lax.map``) so that the block's intermediates
stay below :data:`CPU_CHUNK_BYTES` per chunk. XLA allocates a jitted call's temporaries
afresh on every call; beyond glibc's mmap threshold (at most 32 MiB) that memory is
mapped and page-faulted anew each time, which on the test machines cost more than
the block's arithmetic at 56x56 resolution (see ``scripts/bench_blocks.py``). Small
chunks also keep the chain's working set in cache.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxcpd.decomp import tensor_to_kernel
from jaxcpd.decomp._checks import check_positive_int
from jaxcpd.decomp.kruskal import reconstruct

from ._common import chain, check_input, new_param, pointwise, promote
from ._geometry import as_pair, make_geometry
from .depthwise import check_depthwise_impl, depthwise_conv

CPU_CHUNK_BYTES = 8 * 2**20
"""On CPU, batch chunk size is chosen so a chunk's intermediates take at most this many bytes."""


class SeparableConv(nnx.Module):
    """1x1 conv chain -> depthwise ``D x D`` conv -> 1x1 conv chain (+ bias).

    Subclasses add parameters and override :meth:`_input_maps` / :meth:`_output_maps`
    when their 1x1 chains have more than one conv.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size,
        rank: int,
        *,
        in_proj_features: int,
        out_proj_features: int,
        strides,
        padding,
        dilation,
        use_bias: bool,
        depthwise_impl: str,
        dtype,
        param_dtype,
        precision,
        kernel_init,
        bias_init,
        rngs: nnx.Rngs,
    ):
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.rank = check_positive_int(rank, "rank")
        self.geometry = make_geometry(kernel_size, strides, padding, dilation)
        self.depthwise_impl = check_depthwise_impl(depthwise_impl)
        self.dtype = dtype
        self.precision = precision
        kh, kw = self.geometry.kernel_size
        self.in_proj = new_param(kernel_init, rngs, (in_proj_features, self.rank), param_dtype)
        self.depthwise = new_param(kernel_init, rngs, (kh, kw, 1, self.rank), param_dtype)
        self.out_proj = new_param(kernel_init, rngs, (self.rank, out_proj_features), param_dtype)
        self.bias = new_param(bias_init, rngs, (self.out_features,), param_dtype) if use_bias else None

    def _input_maps(self) -> tuple[nnx.Param, ...]:
        """The 1x1 conv weights ``(in, out)`` from ``S`` to ``R`` channels, in order."""
        return (self.in_proj,)

    def _output_maps(self) -> tuple[nnx.Param, ...]:
        """The 1x1 conv weights ``(in, out)`` from ``R`` to ``T`` channels, in order."""
        return (self.out_proj,)

    def __call__(self, x):
        """Applies the block.

        Args:
          x: ``(..., H, W, S)`` input (NHWC, any number of batch dims).

        Returns:
          ``(..., H_out, W_out, T)``, equal to ``lax.conv_general_dilated`` with
          :meth:`dense_kernel` and the block's strides, padding and dilation.
        """
        x = check_input(x, self.in_features, 3)
        in_maps = [p[...] for p in self._input_maps()]
        out_maps = [p[...] for p in self._output_maps()]
        bias = None if self.bias is None else self.bias[...]
        x, depthwise, bias, *maps = promote(self.dtype, x, self.depthwise[...], bias, *in_maps, *out_maps)
        g = self.geometry

        def apply(x):
            for w in maps[:len(in_maps)]:
                x = pointwise(x, w, self.precision)
            x = depthwise_conv(x, depthwise, strides=g.strides, padding=g.padding, dilation=g.dilation,
                               impl=self.depthwise_impl, precision=self.precision)
            for w in maps[len(in_maps):]:
                x = pointwise(x, w, self.precision)
            return x if bias is None else x + bias

        batch_shape, image_shape = x.shape[:-3], x.shape[-3:]
        chunk = self._cpu_chunk(image_shape[:2], x.dtype)
        if chunk >= math.prod(batch_shape):
            return apply(x)
        y = lax.map(jax.checkpoint(apply), x.reshape(-1, *image_shape), batch_size=chunk)
        return y.reshape(batch_shape + y.shape[1:])

    def _cpu_chunk(self, input_hw, dtype) -> int | float:
        """Images per chunk on CPU (see :data:`CPU_CHUNK_BYTES`); ``inf`` (no chunking) elsewhere.

        The largest power of two (at least 1) whose intermediates fit the budget: it divides
        the usual batch sizes, and odd chunks split unevenly over XLA's threads.
        """
        if jax.default_backend() != "cpu":
            return math.inf
        (h, w), (ho, wo) = input_hw, self.geometry.output_hw(input_hw)
        (lo_h, hi_h), (lo_w, hi_w) = self.geometry.pads(input_hw)
        head = sum(p.shape[1] for p in self._input_maps())
        tail = sum(p.shape[1] for p in self._output_maps())
        padded = (h + lo_h + hi_h) * (w + lo_w + hi_w)
        per_image = h * w * head + padded * self.rank + ho * wo * (self.rank + tail)
        fits = CPU_CHUNK_BYTES // (per_image * jnp.dtype(dtype).itemsize)
        return 1 << max(fits.bit_length() - 1, 0)

    def factors(self):
        """CP factors ``(A, B, C)`` of the block's kernel tensor ``K (D², S, T)`` (eq. 2).

        For a TKD-CPD block, ``B = U B_core`` and ``C = V C_core``: the same kernel as a
        rank-``R`` CP model.

        Returns:
          ``A (kh*kw, R)``, ``B (S, R)``, ``C (T, R)``.
        """
        kh, kw = self.geometry.kernel_size
        a = self.depthwise[...].reshape(kh * kw, self.rank)
        b = chain([p[...] for p in self._input_maps()], "highest")
        c = chain([p[...] for p in self._output_maps()], "highest").T
        return a, b, c

    def dense_kernel(self):
        """The equivalent dense HWIO kernel ``(kh, kw, S, T)``."""
        return tensor_to_kernel(reconstruct(self.factors()), self.geometry.kernel_size)

    def num_params(self) -> int:
        """Number of trainable parameters, bias included.

        For a CP block ``R (D² + S + T)`` (+ ``T``), paper section 1.1.
        """
        params = [*self._input_maps(), self.depthwise, *self._output_maps()]
        if self.bias is not None:
            params.append(self.bias)
        return sum(math.prod(p.shape) for p in params)

    def flops(self, input_hw) -> int:
        """Multiply-adds for one ``(H, W, S)`` image, counted like a dense conv.

        Each stage is counted as ``output pixels x kernel taps x input channels x output
        channels``: the input 1x1 chain at the input resolution, the depthwise conv and
        the output 1x1 chain at the output resolution. Bias additions are not counted
        (same rule as :func:`jaxcpd.nn.count_flops` applies to ``nnx.Conv``).

        Args:
          input_hw: ``(H, W)`` spatial size of the input.

        Returns:
          ``H W sum(in maps) + H_out W_out (kh kw R + sum(out maps))``; for a CP block
          ``R (H W S + H_out W_out (D² + T))``.
        """
        h, w = as_pair(tuple(input_hw), "input_hw")
        ho, wo = self.geometry.output_hw((h, w))
        kh, kw = self.geometry.kernel_size
        head = sum(math.prod(m.shape) for m in self._input_maps())
        tail = sum(math.prod(m.shape) for m in self._output_maps())
        return h * w * head + ho * wo * (kh * kw * self.rank + tail)
