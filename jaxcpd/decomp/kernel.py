"""Conversion between Flax HWIO conv kernels and the paper's order-3 tensors.

The paper (section 2.1, eq. 1-2) treats a kernel of size ``D x D x S x T`` as an
order-3 tensor ``K`` of size ``D^2 x S x T``. Flax stores conv kernels as HWIO
``(D, D, S, T)``, so the conversion is a reshape of the two spatial axes.
"""

from __future__ import annotations

from ._checks import as_float_array, check_positive_int


def _kernel_hw(kernel_size) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        size = check_positive_int(kernel_size, "kernel_size")
        return size, size
    if not isinstance(kernel_size, tuple | list) or len(kernel_size) != 2:
        raise ValueError(f"kernel_size must be an int or a pair, got {kernel_size!r}")
    h, w = kernel_size
    return check_positive_int(h, "kernel_size[0]"), check_positive_int(w, "kernel_size[1]")


def kernel_to_tensor(kernel):
    """Reshapes an HWIO kernel ``(D, D, S, T)`` to the tensor ``K`` of shape ``(D*D, S, T)``.

    Args:
      kernel: 4-D conv kernel in Flax's HWIO layout (height, width, in, out).

    Returns:
      The order-3 tensor of eq. 2, spatial positions in row-major (h, w) order.
    """
    kernel = as_float_array(kernel, "kernel", ndim=4)
    kh, kw, s, t = kernel.shape
    return kernel.reshape(kh * kw, s, t)


def tensor_to_kernel(tensor, kernel_size):
    """Inverse of :func:`kernel_to_tensor`.

    Args:
      tensor: ``(D*D, S, T)`` tensor.
      kernel_size: ``D`` or ``(kh, kw)``.

    Returns:
      HWIO kernel ``(kh, kw, S, T)``.
    """
    tensor = as_float_array(tensor, "tensor", ndim=3)
    kh, kw = _kernel_hw(kernel_size)
    if tensor.shape[0] != kh * kw:
        raise ValueError(
            f"tensor has {tensor.shape[0]} spatial positions, kernel_size {(kh, kw)} needs {kh * kw}"
        )
    return tensor.reshape(kh, kw, tensor.shape[1], tensor.shape[2])
