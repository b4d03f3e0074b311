"""Torch-convention building blocks shared by the ResNet and VGG ports.

Every layer here reproduces the PyTorch layer it stands for, so that a model
assembled from them computes what torchvision computes once the weights are
imported:

- convolutions use explicit symmetric paddings (``((p, p), (p, p))``), never
  ``'SAME'``, so the output size matches at any input size, odd ones included;
- batch norm uses torch's ``eps=1e-5`` and momentum ``0.1``, which is Flax's
  ``momentum=0.9`` (Flax weights the *old* running value);
- max pooling pads with ``-inf`` exactly like ``torch.nn.MaxPool2d``;
- adaptive average pooling uses torch's bin edges
  ``[floor(i*H/out), ceil((i+1)*H/out))``.

Initialisers follow torchvision: Kaiming-normal (fan-out, ReLU gain) for conv
kernels, ones/zeros for batch norm, and torch's default ``nn.Linear`` init
(uniform in ``+-1/sqrt(fan_in)``) unless a model overrides it. They are
``jaxcpd.nn._init.variance_scaling``: bitwise JAX's initialisers, but drawn from flat
power-of-two blocks, so parameter shapes share compiled draws (ResNet-18 built in a fresh
process in 6.0-6.4 s instead of 10.7 s, ResNet-50 after it in 2.9-3.2 s instead of 8.0 s).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcpd.nn._init import variance_scaling

_KAIMING_FAN_OUT = variance_scaling(2.0, "fan_out", "normal")
_TORCH_BN_MOMENTUM = 0.9  # torch momentum 0.1: new = 0.9 * old + 0.1 * batch
_TORCH_BN_EPS = 1e-5


def check_positive_int(value, name: str) -> int:
    """Returns ``value`` if it is a positive ``int`` (not a bool), else raises ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_nhwc(x, in_channels: int, min_size: int = 1) -> None:
    """Raises ``ValueError`` unless ``x`` is an NHWC batch with ``in_channels`` channels.

    Args:
      x: the model input.
      in_channels: channels the model was built for.
      min_size: smallest spatial size the architecture can reduce without
        reaching zero.
    """
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4 or shape[-1] != in_channels:
        raise ValueError(
            f"expected an NHWC batch (N, H, W, {in_channels}), got shape {shape}; "
            "torch-style NCHW inputs must be transposed with x.transpose(0, 2, 3, 1)"
        )
    if min(shape[1:3]) < min_size:
        raise ValueError(f"input height and width must be >= {min_size}, got {shape[1:3]}")


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = False,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """An ``nnx.Conv`` equal to ``torch.nn.Conv2d`` with square kernel, stride and padding.

    Args:
      in_channels: input channels ``S``.
      out_channels: output channels ``T``.
      kernel_size: ``D`` of the ``D x D`` kernel (stored HWIO).
      stride: spatial stride.
      padding: zero padding on every side.
      use_bias: whether the conv has a bias (initialised to zero).
      rngs: random streams for the Kaiming-normal (fan-out) kernel init.

    Returns:
      The conv module.
    """
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        strides=stride,
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        kernel_init=_KAIMING_FAN_OUT,
        rngs=rngs,
    )


def batch_norm(num_features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """An ``nnx.BatchNorm`` with torch's defaults (eps ``1e-5``, torch momentum ``0.1``).

    One difference remains in training mode: torch updates ``running_var`` with the
    unbiased batch variance (factor ``n/(n-1)``, ``n = N*H*W``), Flax with the biased
    one. Normalisation itself uses the biased variance in both.

    Args:
      num_features: channels (last axis).
      rngs: random streams (batch norm has no random init; required by NNX).

    Returns:
      The batch-norm module, in training mode until ``model.eval()``.
    """
    return nnx.BatchNorm(num_features, momentum=_TORCH_BN_MOMENTUM, epsilon=_TORCH_BN_EPS, rngs=rngs)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, kernel_init=None) -> nnx.Linear:
    """An ``nnx.Linear`` with torch's default ``nn.Linear`` initialisation.

    Args:
      in_features: input size.
      out_features: output size.
      rngs: random streams.
      kernel_init: overrides the kernel init; the bias is then zero-initialised
        (torchvision's VGG scheme).

    Returns:
      The linear module with kernel ``(in, out)``.
    """
    if kernel_init is not None:
        return nnx.Linear(in_features, out_features, kernel_init=kernel_init, rngs=rngs)
    bound = 1.0 / math.sqrt(in_features)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=bias_init,
        rngs=rngs,
    )


class Sequential(nnx.List):
    """An indexable, callable list of layers: the counterpart of ``torch.nn.Sequential``.

    Unlike ``nnx.Sequential`` (which keeps its layers under ``.layers``), the layers
    are the list's own items, so ``features[28]`` has the state path
    ``features.28``, exactly torchvision's key prefix.
    """

    def __call__(self, x):
        for layer in self:
            x = layer(x)
        return x


class ReLU(nnx.Module):
    """``torch.nn.ReLU`` as a stateless module (keeps torchvision's layer indices)."""

    def __call__(self, x):
        return jax.nn.relu(x)


class MaxPool2d(nnx.Module):
    """``torch.nn.MaxPool2d`` on NHWC inputs (``-inf`` padding, floor mode).

    Args:
      kernel_size: square window size.
      stride: window stride.
      padding: implicit ``-inf`` padding on every side.
    """

    def __init__(self, kernel_size: int, stride: int, padding: int = 0):
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

    def __call__(self, x):
        p = self.padding
        return nnx.max_pool(
            x,
            (self.kernel_size, self.kernel_size),
            strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
        )


def _adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` averaging matrix with torch's adaptive bin edges."""
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil((i + 1) * in_size / out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d(x, output_size: tuple[int, int]):
    """``torch.nn.functional.adaptive_avg_pool2d`` for NHWC inputs.

    Bins are ``[floor(i*H/out), ceil((i+1)*H/out))`` along each spatial axis, so
    an input smaller than the output repeats values, as in torch. Implemented as two
    small averaging matmuls (static shapes), exact for any size.

    Args:
      x: ``(N, H, W, C)`` array.
      output_size: ``(out_h, out_w)``.

    Returns:
      ``(N, out_h, out_w, C)`` array.
    """
    _, h, w, _ = x.shape
    out_h, out_w = output_size
    if (h, w) == (out_h, out_w):
        return x
    pool_h = jnp.asarray(_adaptive_pool_matrix(h, out_h), x.dtype)
    pool_w = jnp.asarray(_adaptive_pool_matrix(w, out_w), x.dtype)
    x = jnp.einsum("ih,nhwc->niwc", pool_h, x)
    return jnp.einsum("jw,niwc->nijc", pool_w, x)
